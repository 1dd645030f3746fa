"""Prefect tasks of `bas`: each one a library call of `bas.pipeline` (see tasks/stages.py)."""
