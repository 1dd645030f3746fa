"""Prefect flows of `bas`: they hold no logic and no numbers; tasks/ wraps the library."""

# Before any module here imports Prefect: `import bas` sets the environment it reads (bas.environment).
import bas  # noqa: F401
