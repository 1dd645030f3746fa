"""Errors that reach the user.

Every error a user can cause (bad params, a broken COCO file, a missing weight) is a
`BasError`: the CLI prints its message alone, without a traceback, and exits non-zero.
Messages name the file, key or item at fault, so the user knows what to fix.
"""


class BasError(Exception):
    """An error caused by input the user can fix; its message says what and where."""


class ConfigError(BasError):
    """A params.yaml key is unknown, missing, of the wrong type or out of range."""


class DataError(BasError):
    """An input file (annotations, image, mask) is missing, unreadable or inconsistent."""


class ModelNotAvailableError(BasError):
    """Pretrained weights are not on this machine and cannot be downloaded."""
