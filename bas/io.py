"""Atomic file output, a full disk as one clear error, and content hashing.

Every output of `bas` is written to a temporary sibling and renamed into place, so a
killed run never leaves a half-written file that looks finished. Directories that are
built in several steps use `atomic_dir`. A write that fails for want of space (ENOSPC,
EDQUOT, or torch's / safetensors' failed write, which hide the errno) removes its temporary
file and raises `StorageFullError` naming the output and its filesystem's free space;
`writing(stage)` adds the stage that was writing.

A finished stage records its outputs (`record_files`: size, mtime, SHA-256, as DVC's lock
file does); `changed_files` says which are gone or different: sizes and mtimes always
(cheap), the content when an mtime moved or when asked to re-hash.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np

from bas.errors import StorageFullError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_sibling(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


# --------------------------------------------------------------------------- a full disk

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_SAFETENSORS_OS_ERRORS = {f"os error {n}": n for n in DISK_FULL_ERRNOS}


def disk_full_reason(err: BaseException) -> Optional[str]:
    """Why `err` is a write that failed for want of space, in words; None when it is not one.

    ENOSPC / EDQUOT; safetensors' SafetensorError carrying either (its Rust I/O error names the
    errno only in its text); torch.save's RuntimeError from inline_container.cc, which drops
    the errno (a failed write of a file just opened for writing: a full disk or quota).
    """
    if isinstance(err, StorageFullError):
        return err.reason
    if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
        return os.strerror(err.errno).lower()
    text = str(err)
    if type(err).__name__ == "SafetensorError":
        for mark, number in _SAFETENSORS_OS_ERRORS.items():
            if mark in text:
                return f"{os.strerror(number).lower()} (safetensors: {text})"
        return None
    if isinstance(err, RuntimeError) and "inline_container" in text and (
            "unexpected pos" in text or "failed writing" in text or "write failed" in text):
        return f"no space left on device or over quota (torch.save: {text.strip()})"
    return None


def free_space(path: str | os.PathLike) -> tuple[Optional[int], Optional[int]]:
    """(free, total) bytes of the filesystem `path` is (or would be) on; (None, None) if unknown."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        usage = shutil.disk_usage(probe)
    except OSError:
        return None, None
    return usage.free, usage.total


def storage_full_error(err: BaseException, path: str | os.PathLike, reason: Optional[str] = None,
                       stage: Optional[str] = None, output: Optional[str] = None) -> StorageFullError:
    free, total = free_space(path)
    return StorageFullError(Path(path), reason or disk_full_reason(err) or str(err), free, total, stage, output)


@contextlib.contextmanager
def _full_as_error(path: Path, tmp_dir: Optional[Path] = None) -> Iterator[None]:
    """A failed write for want of space inside the body: StorageFullError naming `path` (a
    file written inside `tmp_dir`, the directory being built for `path`, is named under `path`)."""
    try:
        yield
    except StorageFullError as err:
        if tmp_dir is not None and (err.path == tmp_dir or tmp_dir in err.path.parents):
            raise err.at(path=path / err.path.relative_to(tmp_dir)) from err.__cause__
        raise
    except Exception as err:
        reason = disk_full_reason(err)
        if reason is None:
            raise
        raise storage_full_error(err, path, reason) from err


@contextlib.contextmanager
def writing(stage: str, describe: Optional[Callable[[Path], Optional[str]]] = None,
            where: Optional[str | os.PathLike] = None) -> Iterator[None]:
    """Within: a failed write for want of space is one StorageFullError saying that `stage` wrote
    it and (`describe(path)`) what the file is. A write outside the atomic writers (a lease, a
    library's own file) that names no file is named by `where`."""
    try:
        yield
    except StorageFullError as err:
        if err.stage:
            raise
        raise err.at(stage=stage, output=describe(err.path) if describe else None) from err.__cause__
    except Exception as err:
        reason = disk_full_reason(err)
        if reason is None:
            raise
        path = Path(err.filename) if isinstance(err, OSError) and err.filename else Path(where or ".")
        raise storage_full_error(err, path, reason, stage, describe(path) if describe else None) from err


# --------------------------------------------------------------------------- atomic writers


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is renamed onto `path`.

    On any failure the temporary file is removed; one for want of space is a StorageFullError.
    """
    path = Path(path)
    with _full_as_error(path):
        tmp = _tmp_sibling(path)
        try:
            yield tmp
            # mkstemp makes owner-only files; outputs get the usual mode, as open() would give.
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_save_image(path: str | os.PathLike, image: Any) -> None:
    """Save a PIL image; the format follows the suffix of `path`."""
    path = Path(path)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), "PNG")
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt)


def atomic_write_parquet(path: str | os.PathLike, frame: Any) -> None:
    """Write a pandas DataFrame as Parquet, atomically."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory in a temporary sibling and rename it onto `path` when done.

    An existing `path` is replaced only after the new one is complete.
    """
    path = Path(path)
    with _full_as_error(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    with _full_as_error(path, tmp):
        try:
            yield tmp
            os.chmod(tmp, 0o777 & ~_umask())
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- hashing and output records


def sha256_bytes(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(len(chunk).to_bytes(8, "little"))
        h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_record(path: str | os.PathLike, known: Optional[dict] = None) -> dict:
    """{size, mtime_ns, sha256} of a file; `known` (its earlier record) spares the hash while
    its size and mtime are unchanged."""
    st = Path(path).stat()
    if known and known.get("size") == st.st_size and known.get("mtime_ns") == st.st_mtime_ns and known.get("sha256"):
        sha = known["sha256"]
    else:
        sha = sha256_file(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}


def record_files(base: str | os.PathLike, names: Iterable[str], known: Optional[dict] = None) -> dict[str, dict]:
    """{name: file_record} of the files `names` (POSIX paths relative to `base`)."""
    base, known = Path(base), known or {}
    return {name: file_record(base / name, known.get(name)) for name in sorted(names)}


@dataclass(frozen=True)
class Change:
    """A recorded output that is gone or no longer what was recorded."""

    name: str        # relative to the directory its record is about
    why: str

    def __str__(self) -> str:
        return f"{self.name} {self.why}"


def changed_files(base: str | os.PathLike, recorded: dict[str, dict], rehash: bool = False) -> list[Change]:
    """The files of `recorded` (a `record_files` result) that are missing or differ under `base`.

    Sizes always; the content (SHA-256) of a file whose mtime moved, or of every file with `rehash`.
    """
    base, changes = Path(base), []
    for name, rec in sorted(recorded.items()):
        path = base / name
        try:
            st = path.stat()
        except FileNotFoundError:
            changes.append(Change(name, "is missing"))
            continue
        except OSError as err:
            changes.append(Change(name, f"is unreadable ({err.strerror})"))
            continue
        if st.st_size != rec.get("size"):
            changes.append(Change(name, f"is {st.st_size} bytes, {rec.get('size')} when it was made"))
        elif rehash or st.st_mtime_ns != rec.get("mtime_ns"):
            try:
                same = sha256_file(path) == rec.get("sha256")
            except OSError as err:
                changes.append(Change(name, f"is unreadable ({err.strerror})"))
                continue
            if not same:
                changes.append(Change(name, "differs from the SHA-256 recorded when it was made"))
    return changes
