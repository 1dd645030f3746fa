"""Errors that reach the user.

Every error a user can cause (bad params, a broken COCO file, a missing weight) is a
`BasError`: the CLI prints its message alone, without a traceback, and exits non-zero.
Messages name the file, key or item at fault, so the user knows what to fix.
"""

from __future__ import annotations

import logging


class BasError(Exception):
    """An error caused by input the user can fix; its message says what and where."""


class ConfigError(BasError):
    """A params.yaml key is unknown, missing, of the wrong type or out of range."""


class DataError(BasError):
    """An input file (annotations, image, mask) is missing, unreadable or inconsistent."""


class ModelNotAvailableError(BasError):
    """Pretrained weights are not on this machine and cannot be downloaded."""


class StorageFullError(BasError):
    """An output could not be written: its filesystem is full (ENOSPC) or over quota (EDQUOT).

    `path` is the output bas was writing, `free` / `total` the bytes free and in all on its
    filesystem, `reason` what failed (the OS's words, or torch's / safetensors' failed write),
    `stage` the stage and (method, scene) that wrote it, `output` what the file is.
    Not transient: a retry fails the same way until space is freed (no task retry).
    """

    def __init__(self, path, reason: str, free=None, total=None, stage=None, output=None):
        self.path, self.reason, self.free, self.total = path, reason, free, total
        self.stage, self.output = stage, output
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.stage}: " if self.stage else ""
        what = f" ({self.output})" if self.output else ""
        room = (f"; {human_bytes(self.free)} free of {human_bytes(self.total)} on its filesystem"
                if self.free is not None and self.total is not None else "")
        return (f"{where}{self.reason} writing {self.path}{what}{room}. Free some space (or point "
                "paths.storage_root elsewhere) and run again: finished work is kept")

    def at(self, **changes) -> "StorageFullError":
        """The same error with `changes` (path, stage, output) made."""
        fields = {"path": self.path, "reason": self.reason, "free": self.free, "total": self.total,
                  "stage": self.stage, "output": self.output, **changes}
        return type(self)(**fields)

    def __reduce__(self):   # Prefect and multiprocessing pickle errors: keep every field
        return (type(self), (self.path, self.reason, self.free, self.total, self.stage, self.output))


# A run's outcomes carry their errors as text (Prefect's state messages name the error's type
# before its message): `storage_full_in` finds a StorageFullError's message in it.
STORAGE_FULL_MARK = "StorageFullError: "


def storage_full_in(text: str | None) -> str | None:
    """The StorageFullError message inside a failure's text (a Prefect state message), or None."""
    if not text or STORAGE_FULL_MARK not in text:
        return None
    return text.split(STORAGE_FULL_MARK, 1)[1].strip()


def human_bytes(n) -> str:
    """A byte count as people write it (612.4 KB): one way for every message of bas."""
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class UserErrorTracebacks(logging.Filter):
    """A log handler's filter: a logged BasError keeps its message but
    loses its traceback; the message says what to fix. The CLI installs it unless `-v`.

    Prefect logs a failed task or flow with its traceback (`logger.exception`); a user's error
    (bad input, a full disk) needs one line, not the frames of Prefect's engine.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and is_user_error(record.exc_info[1]):
            record.exc_info, record.exc_text = None, None
        return True


def is_user_error(err: BaseException | None) -> bool:
    """Whether `err` is a BasError (an error raised while handling one is not: it may be a bug)."""
    return isinstance(err, BasError)


def hide_user_error_tracebacks() -> None:
    """Install `UserErrorTracebacks` on the root logger's handlers (where Prefect's logs end)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, UserErrorTracebacks) for f in handler.filters):
            handler.addFilter(UserErrorTracebacks())
