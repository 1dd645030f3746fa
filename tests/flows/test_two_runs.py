"""Two `bas run`s at once on one storage root (a cron run overlapping a manual one).

Each (stage, method, scene) has a cross-run lease (bas.lease): the run that finds it held
waits and takes the other's result. Tiny profile, 2 methods x 2 scenes, both runs in this
process's machine, each on its own ephemeral Prefect API.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bas import attempts, config, paths
from orchestration_helpers import REPO, set_args, tiny_overrides
from prefect_harness import prefect_env

pytestmark = pytest.mark.slow

METHODS = ("bas", "ti_m")


def test_two_runs_on_one_root_do_every_scene_once_and_both_finish(tmp_path, coco_root):
    overrides = {**tiny_overrides(tmp_path / "storage", coco_root, METHODS), "orchestration.heartbeat_seconds": 1,
                 "orchestration.stale_after_seconds": 15}
    cfg = config.load(REPO / "params.yaml", overrides)
    runs = []
    for name in ("cron", "manual"):
        env = {**prefect_env(tmp_path / f"prefect-{name}"), "BAS_WORKER_NAME": name}
        runs.append(subprocess.Popen([sys.executable, "-m", "bas.cli", *set_args(overrides), "run"], cwd=REPO,
                                     env=env, stdout=open(tmp_path / f"{name}.log", "w"), stderr=subprocess.STDOUT))
    codes = [run.wait(timeout=1200) for run in runs]
    logs = "\n".join((tmp_path / f"{name}.log").read_text()[-4000:] for name in ("cron", "manual"))
    assert codes == [0, 0], logs

    summaries = [json.loads(p.read_text()) for p in sorted(paths.run_summaries_dir(cfg).glob("*-full_eval-*.json"))]
    assert len(summaries) == 2 and all(s["failures"] == [] for s in summaries), logs
    waited = 0
    for stage in ("train_generate", "score"):
        for method in METHODS:
            scene_dirs = sorted((paths.records_dir(cfg) / "attempts" / stage / method).glob("*"))
            assert len(scene_dirs) == 2
            for directory in scene_dirs:
                records = attempts.read_attempts(directory)
                # Done once: a completed attempt that did nothing (it found the work done) may follow.
                worked = [r for r in records if r["status"] == attempts.COMPLETED
                          and (r["summary"].get("trained") or r["summary"].get("scored"))]
                assert len(worked) == 1, (stage, method, directory.name, records)
                # The other run either waited for the lease or found the result cached.
                assert {r["status"] for r in records} <= {attempts.COMPLETED, attempts.WAITED}
                waited += sum(r["status"] == attempts.WAITED for r in records)
            # Both runs report every (method, scene) done: completed by one, taken by the other.
            for summary in summaries:
                statuses = [o["status"] for o in summary["outcomes"] if (o["stage"], o["method"]) == (stage, method)]
                assert set(statuses) <= {"cached", "completed"} and len(statuses) == 2
    assert waited >= 1, "the runs never overlapped on a (method, scene): the lease went untested"
    for method in METHODS:
        for scene_id in (d.name for d in (paths.records_dir(cfg) / "attempts" / "score" / method).glob("*")):
            assert paths.manifest_path(paths.run_dir(cfg, method, scene_id)).exists()
    assert (paths.reports_dir(cfg) / "report.html").exists()
    assert not list((paths.records_dir(cfg) / "leases").rglob("*.json"))  # every lease released
