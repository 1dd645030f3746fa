"""Prefect tasks of `bas`: each one a library call of `bas.pipeline` (see tasks/stages.py)."""

# Before any module here imports Prefect: `import bas` sets the environment it reads (bas.environment).
import bas  # noqa: F401
