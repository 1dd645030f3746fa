#!/usr/bin/env python
"""Pipeline overhead: Prefect per task and per flow run, and a no-change `dvc repro`.

    python bench/pipeline.py [--quick] [--only prefect,dvc]

Prefect runs against its ephemeral API with a temporary PREFECT_HOME (nothing of the
user's Prefect setup is read or written). Each task wraps one library call
(`bas.scenes.load_scene` of a staged demo scene); the overhead per task is, within one flow
run, (N calls as tasks - the same N calls made directly) / N, over several flow runs. Three kinds of task:
`plain` (Prefect's defaults, nothing persisted), `persisted` (result persisted, cached on
inputs + task source, a cache miss: new inputs each run), `cache_hit` (the same inputs again:
the result is read back instead of computed).

DVC: a temporary git + DVC repository with a one-stage pipeline; after one real run,
`dvc repro` with nothing changed is timed as a user runs it (a new process each time).

Interim: the project's own flows (`flows/`) and `dvc.yaml` land on main later; these two
measurements should then be re-pointed at them (a scene task of the real flow, and a
no-change `dvc repro` of the real pipeline).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SECTIONS = ("prefect", "dvc")
SIZES = {False: dict(tasks=40, flow_runs=5, dvc_repeats=5), True: dict(tasks=4, flow_runs=2, dvc_repeats=2)}


def log(message: str) -> None:
    print(f"[bench/pipeline] {message}", file=sys.stderr, flush=True)


def _stats(values: list[float]) -> dict:
    return {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values), "repeats": len(values)}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------- prefect


def prefect_settings(home: Path) -> dict[str, str]:
    """Environment for an isolated, ephemeral Prefect (must be set before prefect is imported)."""
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
    }


def stage_demo_scenes(root: Path) -> list[Path]:
    from bas.config import ScenesConfig
    from bas.scenes import stage_coco

    report = stage_coco(ScenesConfig(coco_root="demo", num_scenes=3, resolution=128), root)
    return [root / scene_id for scene_id in report.selected]


def bench_prefect(sizes: dict, device, record) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="bas-bench-prefect-") as tmp:
        home = Path(tmp) / "prefect-home"
        home.mkdir()
        os.environ.pop("PREFECT_API_URL", None)        # never a configured server: the ephemeral API
        os.environ.update(prefect_settings(home))
        scene_dirs = stage_demo_scenes(Path(tmp) / "scenes")
        return _prefect_measurements(scene_dirs, sizes, device, record)


def _prefect_measurements(scene_dirs: list[Path], sizes: dict, device, record) -> list[dict]:
    from prefect import flow, task
    from prefect.cache_policies import INPUTS, TASK_SOURCE

    from bas.scenes import load_scene

    def load(scene_dir: str, nonce: int = 0) -> str:
        return load_scene(scene_dir).content_hash

    tasks = {
        "plain": task(load, name="load_scene"),
        "persisted": task(load, name="load_scene_persisted", persist_result=True, cache_policy=INPUTS + TASK_SOURCE),
    }

    @flow(name="bench-empty")
    def empty_flow() -> None:
        return None

    @flow(name="bench-scene-tasks")
    def scene_flow(kind: str, work: list[str], nonce: int) -> tuple[float, float]:
        """(seconds of the N calls made directly, seconds of the same N calls as tasks)."""
        started = time.perf_counter()
        for path in work:
            load(path, nonce)
        direct = time.perf_counter() - started
        started = time.perf_counter()
        for path in work:
            tasks[kind](path, nonce)
        return direct, time.perf_counter() - started

    n = sizes["tasks"]
    work = [str(scene_dirs[i % len(scene_dirs)]) for i in range(n)]
    sizes_out = {"tasks_per_flow_run": n, "flow_runs": sizes["flow_runs"],
                 "library_call": "bas.scenes.load_scene (128 px demo scene)"}
    out = []
    log("prefect: starting the ephemeral API (first flow run)")
    started = time.perf_counter()
    empty_flow()
    start_s = time.perf_counter() - started
    out.append(record("pipeline.prefect_first_flow_run", device, "none", {"note": "includes ephemeral API start"},
                      {**_stats([start_s]), "peak_rss_mb": _peak_mb()}))
    runs = []
    for _ in range(sizes["flow_runs"]):
        started = time.perf_counter()
        empty_flow()
        runs.append(time.perf_counter() - started)
    out.append(record("pipeline.prefect_flow_run_overhead", device, "none", {"tasks": 0},
                      {**_stats(runs), "peak_rss_mb": _peak_mb()}))
    started = time.perf_counter()
    for path in work:
        load(path)
    library_call_s = (time.perf_counter() - started) / n
    # Within one flow run, the direct calls first, then the tasks: a flow run's own fixed costs
    # (about a second, see above) stay out, and background work of this run's tasks cannot slow the
    # direct calls. Work Prefect does after the last task returns is not counted.
    for kind, nonce_of in (("plain", lambda r: 0), ("persisted", lambda r: r + 1), ("cache_hit", lambda r: 1)):
        per_task = []
        for r in range(sizes["flow_runs"]):
            direct, with_tasks = scene_flow("persisted" if kind == "cache_hit" else kind, work, nonce_of(r))
            per_task.append((with_tasks - direct) / n)
        log(f"prefect: {kind} task overhead {statistics.median(per_task) * 1000:.1f} ms")
        out.append(record("pipeline.prefect_task_overhead", device, "none", sizes_out,
                          {**_stats(per_task), "peak_rss_mb": _peak_mb()}, variant=kind,
                          library_call_s=library_call_s,
                          meaning="seconds a task adds to the library call it wraps: (N task calls - "
                                  "N direct calls) / N within one flow run"))
    return out


# --------------------------------------------------------------------------- dvc


def _run(command: list[str], cwd: Path, env: dict) -> None:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")


def bench_dvc(sizes: dict, device, record) -> list[dict]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}
    dvc = [sys.executable, "-m", "dvc"]
    with tempfile.TemporaryDirectory(prefix="bas-bench-dvc-") as tmp:
        repo = Path(tmp)
        _run(["git", "init", "-q"], repo, env)
        _run(dvc + ["init", "-q"], repo, env)
        _run(dvc + ["config", "core.analytics", "false"], repo, env)
        (repo / "in.txt").write_text("bench\n")
        (repo / "dvc.yaml").write_text(
            "stages:\n  copy:\n"
            f"    cmd: {sys.executable} -c \"import shutil; shutil.copy('in.txt', 'out.txt')\"\n"
            "    deps: [in.txt]\n    outs: [out.txt]\n")
        _run(dvc + ["repro", "-q"], repo, env)            # the one real run: writes dvc.lock
        times = []
        for _ in range(sizes["dvc_repeats"]):
            started = time.perf_counter()
            _run(dvc + ["repro", "-q"], repo, env)
            times.append(time.perf_counter() - started)
        if not (repo / "dvc.lock").exists():
            raise RuntimeError("dvc repro wrote no dvc.lock")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    log(f"dvc: no-change repro {statistics.median(times):.2f} s")
    return [record("pipeline.dvc_repro_no_change", device, "none", {"stages": 1, "note": "temporary repository"},
                   {**_stats(times), "peak_rss_mb": peak},
                   meaning="wall seconds of `dvc repro` (new process) when nothing changed")]


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repeats: a smoke run")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated: {','.join(SECTIONS)}")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if set(only) - set(SECTIONS):
        parser.error(f"unknown section(s); choose from {', '.join(SECTIONS)}")
    import torch

    from bench.common import record

    device = torch.device("cpu")
    sizes = SIZES[args.quick]
    out = []
    if "dvc" in only:
        out += bench_dvc(sizes, device, record)
    if "prefect" in only:
        out += bench_prefect(sizes, device, record)
    return out


if __name__ == "__main__":
    main()
