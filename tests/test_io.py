import errno
import logging
import os
import pickle
import stat
import sys

import pytest

from bas import io
from bas.errors import StorageFullError, UserErrorTracebacks
from bas.io import atomic_dir, atomic_write_text


def test_atomic_outputs_are_readable_by_others_like_normal_files(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_dir(tmp_path / "d") as d:
            (d / "f").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
    assert (tmp_path / "a.txt").read_text() == "x" and (tmp_path / "d" / "f").read_text() == "y"


def test_atomic_dir_failure_keeps_the_previous_directory(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as d:
        (d / "done").write_text("1")
    try:
        with atomic_dir(target) as d:
            (d / "half").write_text("2")
            raise RuntimeError("killed")
    except RuntimeError:
        pass
    assert sorted(p.name for p in target.iterdir()) == ["done"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- a full disk

TORCH_FULL = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"
SAFETENSORS_FULL = "Error while serializing: I/O error: No space left on device (os error 28)"


class _HalfWritten:
    """An image whose save writes a few bytes, then finds the disk full."""

    def save(self, path, format=None):
        with open(path, "wb") as f:
            f.write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_one_error_naming_the_output_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "images" / "a.png"
    with pytest.raises(StorageFullError) as caught:
        io.atomic_save_image(target, _HalfWritten())
    err = caught.value
    assert err.path == target and err.reason == "no space left on device"
    assert err.free is not None and err.total is not None and "free of" in str(err) and str(target) in str(err)
    assert not target.exists() and list(target.parent.iterdir()) == []   # no half file, no temporary


@pytest.mark.parametrize("error", [RuntimeError(TORCH_FULL), OSError(errno.EDQUOT, "Disk quota exceeded")])
def test_a_failed_save_inside_a_directory_being_built_keeps_the_old_one(tmp_path, error):
    target = tmp_path / "train"
    with io.atomic_dir(target) as d:
        (d / "tokens.safetensors").write_bytes(b"finished")
    with pytest.raises(StorageFullError) as caught:
        with io.atomic_dir(target) as d:
            (d / "state.pt").write_bytes(b"half")
            raise error
    assert caught.value.path == target and ("torch.save" in caught.value.reason or "quota" in caught.value.reason)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]
    assert [p.name for p in target.iterdir()] == ["tokens.safetensors"]


def test_a_file_that_fails_inside_a_directory_is_named_where_it_would_have_been(tmp_path):
    from safetensors import SafetensorError

    def save_file(path):
        with io.atomic_path(path) as tmp:
            tmp.write_bytes(b"x")
            raise SafetensorError(SAFETENSORS_FULL)

    with pytest.raises(StorageFullError) as caught:
        with io.writing("train_generate ti_m/s1", describe=lambda p: "the training's outputs"):
            with io.atomic_dir(tmp_path / "train") as d:
                save_file(d / "tokens.safetensors")
    err = caught.value
    assert err.path == tmp_path / "train" / "tokens.safetensors" and "safetensors" in err.reason
    assert str(err).startswith("train_generate ti_m/s1: no space left on device")
    assert "(the training's outputs)" in str(err) and "\n" not in str(err)
    assert list(tmp_path.iterdir()) == []


def test_writing_names_a_raw_write_and_leaves_other_errors_alone(tmp_path):
    with pytest.raises(StorageFullError) as caught:
        with io.writing("score bas/s1", where=tmp_path):
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "lease.json"))
    assert caught.value.path == tmp_path / "lease.json" and caught.value.stage == "score bas/s1"
    with pytest.raises(OSError, match="Permission denied"):
        with io.writing("score bas/s1"):
            raise OSError(errno.EACCES, "Permission denied")
    from safetensors import SafetensorError

    assert io.disk_full_reason(SafetensorError("Error while serializing: I/O error: Permission denied (os error 13)")) is None
    assert io.disk_full_reason(RuntimeError("CUDA error: out of memory")) is None
    assert io.disk_full_reason(RuntimeError(TORCH_FULL))


def test_the_error_survives_pickling_and_a_logged_one_loses_its_traceback():
    err = StorageFullError("/x/a.png", "no space left on device", 0, 1000, "score bas/s1", "scores")
    assert str(pickle.loads(pickle.dumps(err))) == str(err)
    try:
        raise err
    except StorageFullError:
        record = logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert UserErrorTracebacks().filter(record) and record.exc_info is None
    try:
        raise ValueError("a bug")
    except ValueError:
        bug = logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert UserErrorTracebacks().filter(bug) and bug.exc_info is not None


# --------------------------------------------------------------------------- output records


def test_changed_files_sees_sizes_always_and_content_when_the_mtime_moved(tmp_path):
    for name, data in (("a.png", b"aaaa"), ("b.png", b"bbbb"), ("c.png", b"cccc"), ("d.png", b"dddd")):
        (tmp_path / name).write_bytes(data)
    recorded = io.record_files(tmp_path, ["a.png", "b.png", "c.png", "d.png"])
    assert io.changed_files(tmp_path, recorded) == []
    (tmp_path / "a.png").write_bytes(b"a")                   # truncated
    (tmp_path / "b.png").unlink()                            # deleted
    (tmp_path / "c.png").write_bytes(b"CCCC")                # same size, new mtime: re-hashed
    os.utime(tmp_path / "c.png", ns=(recorded["c.png"]["mtime_ns"] + 10**9,) * 2)
    st = (tmp_path / "d.png").stat()
    (tmp_path / "d.png").write_bytes(b"DDDD")
    os.utime(tmp_path / "d.png", ns=(st.st_atime_ns, st.st_mtime_ns))   # same size and mtime: only --hash sees it
    assert [str(c) for c in io.changed_files(tmp_path, recorded)] == [
        "a.png is 1 bytes, 4 when it was made", "b.png is missing",
        "c.png differs from the SHA-256 recorded when it was made"]
    assert [c.name for c in io.changed_files(tmp_path, recorded, rehash=True)] == ["a.png", "b.png", "c.png", "d.png"]
    again = io.record_files(tmp_path, ["c.png"], known=recorded)
    assert again["c.png"]["sha256"] != recorded["c.png"]["sha256"]
