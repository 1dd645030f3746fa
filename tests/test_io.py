import os
import stat

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
