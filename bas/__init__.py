"""bas: reproduce and compare multi-concept personalization methods on one protocol."""

__version__ = "0.1.0"
