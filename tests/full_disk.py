"""Run the bas CLI on a disk that fills at a chosen write call (ENOSPC injected where bas writes).

    python tests/full_disk.py ROOT KIND:N -- <bas arguments>

From the N-th write call of KIND to a file under ROOT on, every write under ROOT fails as it
does on a full disk: KIND `open` (Python's open(): JSON, PNG, logs) raises OSError ENOSPC at
write(); `torch.save` (bas's resume state) leaves a few bytes and raises torch's RuntimeError
from inline_container.cc; `save_file` (safetensors: tokens, weights) leaves a few bytes and
raises its SafetensorError. The patches are made before bas is imported, so the names bas
imports (`from safetensors.torch import save_file`) are the patched ones; the Prefect flows of
`bas run` run in this process and write through them.
"""

from __future__ import annotations

import builtins
import errno
import os
import sys
from pathlib import Path

ROOT = Path(sys.argv[1]).resolve()
KIND, NTH = sys.argv[2].split(":")
ARGS = sys.argv[sys.argv.index("--") + 1:]
state = {"calls": 0, "full": False}
_open = builtins.open


def _under_root(path) -> bool:
    if not isinstance(path, (str, os.PathLike)):
        return False
    return ROOT == Path(os.path.abspath(path)) or ROOT in Path(os.path.abspath(path)).parents


def _full_now(kind: str) -> bool:
    """Counts a write call of `kind` under ROOT; whether the disk is full from this call on."""
    if kind == KIND:
        state["calls"] += 1
        state["full"] = state["full"] or state["calls"] >= int(NTH)
    return state["full"]


class _FullFile:
    """A file opened for writing on the full disk: open works, write does not (as with ENOSPC)."""

    def __init__(self, handle):
        self._handle = handle

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()

    def __getattr__(self, name):
        return getattr(self._handle, name)


def _patched_open(file, mode="r", *args, **kwargs):
    handle = _open(file, mode, *args, **kwargs)
    if any(m in mode for m in "wax+") and _under_root(file) and _full_now("open"):
        return _FullFile(handle)
    return handle


def _half_written(path) -> None:
    with _open(path, "wb") as handle:
        handle.write(b"\x00half")


import safetensors.torch  # noqa: E402
import torch  # noqa: E402
from safetensors import SafetensorError  # noqa: E402

_save_file, _torch_save = safetensors.torch.save_file, torch.save


def _patched_save_file(tensors, filename, metadata=None):
    if _under_root(filename) and _full_now("save_file"):
        _half_written(filename)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    return _save_file(tensors, filename, metadata=metadata)


def _patched_torch_save(obj, f, *args, **kwargs):
    if _under_root(f) and _full_now("torch.save"):
        _half_written(f)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    return _torch_save(obj, f, *args, **kwargs)


builtins.open = _patched_open
safetensors.torch.save_file = _patched_save_file
torch.save = _patched_torch_save

if __name__ == "__main__":
    from bas.cli import main

    sys.exit(main(ARGS))
