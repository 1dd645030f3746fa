"""Batches that shrink on out-of-memory.

Generation and scoring both run models over many inputs in batches sized by params; when a
batch does not fit on the device the batch is halved and retried, down to one input, so a
`batch_size` tuned on a large GPU still runs on a small one.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterator, Sequence, TypeVar

from bas.errors import BasError

# torch is imported in the two functions that need it: bas.generation.run imports this module and
# stays free of torch (bas.done plans a grid with it; CLI start-up).

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class OutOfMemoryError(BasError):
    """One input alone does not fit in the device's memory."""


def is_out_of_memory(err: BaseException) -> bool:
    import torch

    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def _free_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def batched(fn: Callable[[Sequence[T]], R], items: Sequence[T], batch_size: int,
            what: str = "batch") -> Iterator[tuple[Sequence[T], R]]:
    """Yield (batch, fn(batch)) over consecutive batches of `items`, in order.

    On out-of-memory the failed batch is retried at half the size, and the smaller size is
    kept for the rest; a single input that does not fit raises `OutOfMemoryError`.
    """
    size = max(1, int(batch_size))
    start = 0
    while start < len(items):
        batch = items[start : start + size]
        try:
            result = fn(batch)
        except Exception as err:  # noqa: BLE001: only out-of-memory is handled, the rest re-raised
            if not is_out_of_memory(err):
                raise
            _free_cache()
            if size == 1:
                raise OutOfMemoryError(f"{what}: out of memory with a batch of one; free device memory "
                                       f"or use a larger device ({str(err).splitlines()[0][:200]})") from err
            size = max(1, size // 2)
            log.warning("%s: out of memory, retrying with batch size %d", what, size)
            continue
        yield batch, result
        start += len(batch)
