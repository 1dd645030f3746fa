"""Prefect flows of `bas`: they hold no logic and no numbers; tasks/ wraps the library."""
