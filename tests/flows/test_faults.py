"""The faults of docs/RELIABILITY.md, each made for real on a tiny `bas run` (no server: the
ephemeral API), then the same run again: a full disk (a small tmpfs where the machine lets the
test mount one, and ENOSPC injected at bas's write calls, which always runs), a truncated
tokens file, a truncated and a deleted image, a deleted scores file.

Each asserts the one line that names the fault, the exit status, that nothing else was made
again, and that the report is complete after the rerun.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bas import config, paths
from orchestration_helpers import REPO, set_args, tiny_overrides
from prefect_harness import prefect_env

pytestmark = pytest.mark.slow

FULL_DISK_LINE = re.compile(r"^bas: error: train_generate (\S+)/(\S+): (no space left on device.*) writing "
                            r"(\S+) \((.+)\); .+ free of .+ on its filesystem\. Free some space")


def _bas(tmp_path: Path, overrides: dict, *args: str, wrapper: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = prefect_env(tmp_path / "prefect-home")  # no PREFECT_API_URL: the ephemeral API
    command = [sys.executable, *wrapper, *(["--"] if wrapper else []), *set_args(overrides), *args]
    if not wrapper:
        command[1:1] = ["-m", "bas.cli"]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def _output(done: subprocess.CompletedProcess) -> str:
    return done.stdout[-4000:] + done.stderr[-6000:]


def _latest_summary(cfg) -> dict:
    return json.loads(sorted(paths.run_summaries_dir(cfg).glob("*-full_eval-*.json"))[-1].read_text())


def _outcomes(summary: dict) -> dict[tuple[str, str, str], dict]:
    return {(o["stage"], o["method"], o["scene_id"]): o for o in summary["outcomes"]}


def _report_is_complete(cfg, methods, images_each: int) -> None:
    metrics = json.loads((paths.reports_dir(cfg) / "metrics.json").read_text())
    assert sorted(metrics) == sorted(methods), metrics
    assert all(metrics[m]["n_images"] == images_each for m in methods), metrics


def _left_behind(root: Path) -> list[Path]:
    """Temporary files or folders, or empty leases, a failed write could have left."""
    hidden = [p for p in root.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]
    leases = list((root / "records" / "leases").rglob("*.json")) if (root / "records" / "leases").exists() else []
    return hidden + leases


# --------------------------------------------------------------------------- a full disk


def _completed_attempts(cfg) -> set[tuple[str, str, str]]:
    from bas import attempts

    return {(r["stage"], r["method"], r["scene_id"])
            for directory in (paths.records_dir(cfg) / "attempts").glob("*/*/*")
            for r in attempts.read_attempts(directory) if r["status"] == attempts.COMPLETED}


def _mount_small_disk(directory: Path, size: str) -> str | None:
    """Mount a tmpfs of `size` on `directory`; None when mounted, else why it could not be."""
    if os.geteuid() != 0:
        return "not root"
    if not shutil.which("mount"):
        return "no mount command"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                          capture_output=True, text=True)
    return None if done.returncode == 0 else (done.stderr.strip() or f"mount exited {done.returncode}")


@pytest.fixture
def small_disk(tmp_path):
    storage = tmp_path / "storage"
    storage.mkdir()
    why = _mount_small_disk(storage, "400k")
    if why:
        pytest.skip(f"cannot mount a small tmpfs here ({why}); "
                    "test_enospc_injected_at_the_writes_is_one_line_then_resumed covers the same fault")
    try:
        yield storage
    finally:
        subprocess.run(["umount", "-l", str(storage)], capture_output=True)


def _assert_one_full_disk_line(done: subprocess.CompletedProcess, root: Path) -> re.Match:
    out = _output(done)
    assert done.returncode == 2, out
    assert "Traceback" not in done.stdout + done.stderr, out
    assert "Retry 1/" not in done.stderr, out   # a full disk is not retried
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("bas: error:")]
    assert len(errors) == 1, out   # one line says it
    line = FULL_DISK_LINE.match(errors[0])
    assert line, errors[0]
    assert Path(line.group(4)).is_relative_to(root), errors[0]
    assert "the storage is full; the run stopped here" in done.stdout, out
    assert not _left_behind(root), _left_behind(root)
    return line


def test_a_really_full_disk_is_one_line_then_the_enlarged_disk_resumes(tmp_path, coco_root, small_disk):
    overrides = tiny_overrides(small_disk, coco_root, ("bas", "ti_m"), num_scenes=1)
    cfg = config.load(REPO / "params.yaml", overrides)

    full = _bas(tmp_path, overrides, "run")
    # The estimate says it before anything is written: 400 KB is less than the run writes.
    assert "bas: warning: the run will write about" in full.stderr and "free some space" in full.stderr
    line = _assert_one_full_disk_line(full, small_disk)
    finished = _completed_attempts(cfg)   # the run summary may not have fitted on the disk
    assert ("train_generate", "bas", line.group(2)) in finished, finished   # BaS finished before the disk filled
    assert line.group(1) == "ti_m"

    subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)
    again = _bas(tmp_path, overrides, "run")
    assert again.returncode == 0, _output(again)
    summary = _latest_summary(cfg)
    assert summary["failures"] == [] and summary.get("stopped") is None
    outcomes = _outcomes(summary)
    assert all(outcomes[key]["status"] == "cached" for key in finished), outcomes   # nothing finished made again
    assert outcomes[("train_generate", line.group(1), line.group(2))]["status"] == "completed"
    _report_is_complete(cfg, ("bas", "ti_m"), 3)


def test_enospc_injected_at_the_writes_is_one_line_then_resumed(tmp_path, coco_root):
    # ti_m first: it finishes; then BaS's first torch.save (its state after phase 1) finds the
    # disk full, and every write after it too (its attempt record, the run summary).
    storage = tmp_path / "storage"
    overrides = tiny_overrides(storage, coco_root, ("ti_m", "bas"), num_scenes=1)
    cfg = config.load(REPO / "params.yaml", overrides)

    full = _bas(tmp_path, overrides, "run", wrapper=(str(REPO / "tests" / "full_disk.py"), str(storage), "torch.save:1"))
    line = _assert_one_full_disk_line(full, storage)
    assert line.group(1) == "bas" and "torch.save: [enforce fail at inline_container.cc" in line.group(3)
    assert line.group(5) == "the training's state after a phase, to resume from"
    scene_id = line.group(2)
    assert not paths.run_summaries_dir(cfg).exists() or not list(paths.run_summaries_dir(cfg).glob("*.json"))
    assert (paths.run_dir(cfg, "ti_m", scene_id) / "done.json").exists()
    assert not (paths.run_dir(cfg, "bas", scene_id) / "done.json").exists()

    again = _bas(tmp_path, overrides, "run")
    assert again.returncode == 0, _output(again)
    outcomes = _outcomes(_latest_summary(cfg))
    assert outcomes[("train_generate", "ti_m", scene_id)]["status"] == "cached"   # finished: not made again
    assert outcomes[("train_generate", "bas", scene_id)]["status"] == "completed"
    assert outcomes[("train_generate", "bas", scene_id)]["summary"]["trained"]
    _report_is_complete(cfg, ("ti_m", "bas"), 3)


# --------------------------------------------------------------------------- damaged outputs of a finished run
# One finished tiny run of ti_m (tokens only: an image is made again from its saved tokens) on
# two scenes; each test damages it, checks that `bas verify` names the damage, reruns, and
# leaves it finished for the next.

METHODS = ("ti_m",)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, coco_root):
    tmp_path = tmp_path_factory.mktemp("damaged")
    overrides = tiny_overrides(tmp_path / "storage", coco_root, METHODS, num_scenes=2)
    done = _bas(tmp_path, overrides, "run")
    assert done.returncode == 0, _output(done)
    cfg = config.load(REPO / "params.yaml", overrides)
    return tmp_path, overrides, cfg, sorted(_latest_summary(cfg)["scenes"])


def _verify(tmp_path, overrides, *flags) -> subprocess.CompletedProcess:
    return _bas(tmp_path, overrides, "verify", *flags)


def _rerun(finished) -> tuple[subprocess.CompletedProcess, dict]:
    tmp_path, overrides, cfg, _ = finished
    done = _bas(tmp_path, overrides, "run")
    assert done.returncode == 0, _output(done)
    assert "Traceback" not in done.stdout + done.stderr
    verified = _verify(tmp_path, overrides, "--hash")
    assert verified.returncode == 0, _output(verified)
    _report_is_complete(cfg, METHODS, 6)
    return done, _outcomes(_latest_summary(cfg))


def _truncate(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


def test_a_truncated_tokens_file_is_named_and_only_its_training_is_redone(finished):
    tmp_path, overrides, cfg, (a, b) = finished
    tokens = paths.train_dir(paths.run_dir(cfg, "ti_m", a)) / "tokens.safetensors"
    _truncate(tokens, 5)

    found = _verify(tmp_path, overrides)
    assert found.returncode == 1 and f"{tokens} is 5 bytes" in found.stdout, _output(found)
    done, outcomes = _rerun(finished)
    assert re.search(rf"WARNING bas\.pipeline: made again, with what depends on it: {re.escape(str(tokens))} is 5 bytes",
                     done.stderr), _output(done)
    redone = outcomes[("train_generate", "ti_m", a)]
    assert redone["status"] == "completed" and redone["summary"]["trained"]
    # The same tokens again (CPU training is seeded): the grid stands, and so do its scores.
    assert redone["summary"]["images_generated"] == 0
    assert outcomes[("train_generate", "ti_m", b)]["status"] == "cached"
    assert outcomes[("score", "ti_m", b)]["status"] == "cached"


def test_a_truncated_and_a_deleted_image_are_named_and_made_again_alone(finished):
    tmp_path, overrides, cfg, (a, b) = finished
    truncated = sorted(paths.images_dir(paths.run_dir(cfg, "ti_m", b)).glob("*.png"))[0]
    deleted = sorted(paths.images_dir(paths.run_dir(cfg, "ti_m", a)).glob("*.png"))[-1]
    _truncate(truncated, 100)
    deleted.unlink()

    found = _verify(tmp_path, overrides)
    assert found.returncode == 1, _output(found)
    assert f"{truncated} is 100 bytes" in found.stdout and f"{deleted} is missing" in found.stdout
    done, outcomes = _rerun(finished)
    assert f"{truncated} is 100 bytes" in done.stderr and f"{deleted} is missing" in done.stderr
    for scene_id in (a, b):
        redone = outcomes[("train_generate", "ti_m", scene_id)]
        assert redone["status"] == "completed", redone
        assert not redone["summary"]["trained"] and redone["summary"]["images_generated"] == 1
    assert truncated.stat().st_size > 100 and deleted.exists()


def test_a_deleted_scores_file_is_named_and_only_it_is_scored_again(finished):
    tmp_path, overrides, cfg, (a, b) = finished
    scores = paths.scene_scores_path(cfg, "ti_m", a)
    scores.unlink()

    found = _verify(tmp_path, overrides)
    assert found.returncode == 1 and f"{scores} is missing" in found.stdout, _output(found)
    done, outcomes = _rerun(finished)
    assert f"scored again: {scores} is missing" in done.stderr, _output(done)
    assert outcomes[("score", "ti_m", a)]["status"] == "completed"
    assert outcomes[("score", "ti_m", b)]["status"] == "cached"
    assert {outcomes[("train_generate", "ti_m", s)]["status"] for s in (a, b)} == {"cached"}
