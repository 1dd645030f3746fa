"""bas: reproduce and compare multi-concept personalization methods on one protocol."""

# First of all: the environment bas runs in (Prefect, Hugging Face, DVC settings), set before
# any of them is imported, by every entry point (the `bas` command, `python -m`, flows, tasks).
from bas import environment as _environment  # noqa: F401

__version__ = "0.1.0"
