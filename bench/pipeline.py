#!/usr/bin/env python
"""Pipeline overhead: Prefect per task and per flow run, and a no-change `dvc repro`.

    python bench/pipeline.py [--quick] [--only project,prefect,dvc]

Prefect always runs against its ephemeral API with a temporary PREFECT_HOME (nothing of
the user's Prefect setup is read or written).

project: the real pipeline. A copy of this checkout (bas/, flows/, tasks/, dvc.yaml) in a
temporary git + DVC repository, params.yaml with tiny overrides (one demo scene, `bas`,
2 + 2 steps, a 3-image grid of 2 steps): `dvc repro` is run once (timed: the whole tiny
pipeline), then timed again with nothing changed (a new process each time, as a user runs
it). Then the real scene tasks (`tasks.stages.train_generate` and `score`, configured as the
flows call them) are timed on the finished (method, scene), against the library calls they
wrap (`bas.pipeline.train_generate` / `score`, which skip finished work by themselves): the
cost of a scene task when `bas run` is run again.

prefect: the task machinery on a cheap library call (`bas.scenes.load_scene` of a staged
demo scene): the overhead per task is, within one flow run, (N calls as tasks - the same N
calls made directly) / N, over several flow runs. Three kinds of task: `plain` (Prefect's
defaults, nothing persisted), `persisted` (result persisted, cached on inputs + task source,
a cache miss: new inputs each run), `cache_hit` (the same inputs again: the result is read
back instead of computed). Also the first flow run of a process (starts the ephemeral API)
and an empty flow run.

dvc: a one-stage pipeline in a temporary repository, `dvc repro` with nothing changed: DVC's
own floor, for comparison with the real pipeline's.
"""

from __future__ import annotations

import argparse
import os
import re
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

SECTIONS = ("project", "prefect", "dvc")
QUICK_SECTIONS = ("prefect", "dvc")    # the real project runs a whole (tiny) pipeline first: ~2 minutes
SIZES = {False: dict(tasks=40, flow_runs=5, dvc_repeats=5, scene_tasks=10, scene_flow_runs=3),
         True: dict(tasks=4, flow_runs=2, dvc_repeats=2, scene_tasks=2, scene_flow_runs=1)}


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
    import dataclasses

    from bas import config
    from bas.scenes import stage_coco

    scenes = dataclasses.replace(config.load(REPO / "params.yaml").scenes, coco_root="demo", num_scenes=3,
                                 resolution=128)
    report = stage_coco(scenes, root)
    return [root / scene_id for scene_id in report.selected]


def bench_prefect(sizes: dict, device, record, work: Path) -> list[dict]:
    scene_dirs = stage_demo_scenes(work / "scenes")
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


def _run(command: list[str], cwd: Path, env: dict) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stdout[-2000:]}"
                           f"{done.stderr[-3000:]}")
    return done.stdout


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


# --------------------------------------------------------------------------- the real project


# The tiny pipeline the real project runs (params keys as `bas run -S` takes them).
PROJECT_OVERRIDES = {
    "models.profile": "tiny", "models.cache_dir": str(REPO / ".cache" / "bas" / "models"),
    "scenes.coco_root": "demo", "scenes.num_scenes": 1, "scenes.resolution": 128,
    "training.progress_bar": False, "training.prior_images.num_images": 2,
    "training.prior_images.sampling_steps": 2, "training.prior_images.batch_size": 2,
    "methods.bas.phases.phase1.steps": 2, "methods.bas.phases.phase2.steps": 2,
    "generation.templates": ["a photo of {tokens} at the beach"], "generation.seeds": 1, "generation.steps": 2,
    "orchestration.methods": ["bas"],
}
PROJECT_FILES = ("bas", "flows", "tasks", "dvc.yaml", ".gitignore", ".dvcignore")


def make_project(root: Path) -> dict:
    """A copy of this checkout with the tiny params, as a git + DVC repository; its environment."""
    import shutil

    import yaml

    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif source.exists():
            shutil.copy(source, root / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for dotted, value in PROJECT_OVERRIDES.items():
        node = params
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(root), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost",
           # The stages' own ephemeral Prefect, apart from this process's (one SQLite file each).
           **prefect_settings(root.parent / "project-prefect-home")}
    (root.parent / "project-prefect-home").mkdir()
    _run(["git", "init", "-q"], root, env)
    _run([sys.executable, "-m", "dvc", "init", "-q"], root, env)
    _run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], root, env)
    return env


def bench_project(sizes: dict, device, record, work: Path) -> list[dict]:
    root = work / "project"
    root.mkdir()
    env = make_project(root)
    dvc = [sys.executable, "-m", "dvc", "repro"]
    log("project: dvc repro of the tiny pipeline (every stage runs)")
    started = time.perf_counter()
    first = _run(dvc, root, env)
    first_s = time.perf_counter() - started
    ran = sorted(set(re.findall(r"Running stage '([^']+)'", first)))
    out = [record("pipeline.project_dvc_repro_first", device, "tiny",
                  {"stages": ran, **{k: PROJECT_OVERRIDES[k] for k in ("scenes.num_scenes", "orchestration.methods")}},
                  {**_stats([first_s]), "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0},
                  meaning="the whole tiny pipeline from nothing: stage, recipes, train + generate, score, report")]
    times = []
    for _ in range(sizes["dvc_repeats"]):
        started = time.perf_counter()
        again = _run(dvc, root, env)
        times.append(time.perf_counter() - started)
        if "Running stage" in again:
            raise RuntimeError(f"dvc repro reran stages with nothing changed:\n{again[-2000:]}")
    log(f"project: no-change dvc repro {statistics.median(times):.2f} s")
    out.append(record("pipeline.project_dvc_repro_no_change", device, "tiny", {"stages": ran},
                      {**_stats(times), "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0},
                      meaning="wall seconds of `dvc repro` of the project's dvc.yaml (new process) when nothing changed"))
    out += _scene_task_measurements(root, sizes, device, record)
    return out


def _scene_task_measurements(root: Path, sizes: dict, device, record) -> list[dict]:
    from prefect import flow

    from bas import config, pipeline
    from tasks import stages
    from tasks.stages import configured

    cfg = config.load(root / "params.yaml", {"paths.storage_root": str(root / "data")})
    method = cfg.orchestration.methods[0]
    scene_id = pipeline.scene_ids(cfg)[0]
    library = {"train_generate": pipeline.train_generate, "score": pipeline.score}
    task_of = {"train_generate": stages.train_generate, "score": stages.score}

    @flow(name="bench-scene-task-rerun")
    def rerun(stage: str, n: int) -> tuple[float, float]:
        """(seconds of N library calls, seconds of N task calls) on finished work."""
        scene_task = configured(task_of[stage], cfg)
        started = time.perf_counter()
        for _ in range(n):
            library[stage](cfg, method, scene_id)
        direct = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(n):
            scene_task(cfg, method, scene_id)
        return direct, time.perf_counter() - started

    out = []
    n = sizes["scene_tasks"]
    for stage in ("train_generate", "score"):
        if not {"train_generate": pipeline.train_generate_done, "score": pipeline.score_done}[stage](
                cfg, method, scene_id):
            raise RuntimeError(f"{stage} {method}/{scene_id} is not finished after dvc repro")
        rerun(stage, 1)                                  # warm-up: imports, first cache record
        per_task, direct_s = [], []
        for _ in range(sizes["scene_flow_runs"]):
            direct, with_tasks = rerun(stage, n)
            per_task.append((with_tasks - direct) / n)
            direct_s.append(direct / n)
        log(f"project: {stage} scene task on finished work, overhead {statistics.median(per_task) * 1000:.1f} ms")
        out.append(record("pipeline.prefect_scene_task_overhead", device, "tiny",
                          {"tasks_per_flow_run": n, "flow_runs": sizes["scene_flow_runs"], "stage": stage,
                           "method": method},
                          {**_stats(per_task), "peak_rss_mb": _peak_mb()}, variant="finished_work",
                          library_call_s=statistics.median(direct_s),
                          meaning="seconds the real scene task (cache key, cache hit, result read) adds to the "
                                  "library call that skips the finished (method, scene) by itself"))
    return out


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repeats, no real project: a smoke run")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated: {','.join(SECTIONS)} (default all; --quick: {','.join(QUICK_SECTIONS)})")
    args = parser.parse_args(argv)
    only = [s.strip() for s in (args.only or ",".join(QUICK_SECTIONS if args.quick else SECTIONS)).split(",")
            if s.strip()]
    if set(only) - set(SECTIONS):
        parser.error(f"unknown section(s); choose from {', '.join(SECTIONS)}")
    import torch

    from bench.common import record

    device = torch.device("cpu")
    sizes = SIZES[args.quick]
    out = []
    with tempfile.TemporaryDirectory(prefix="bas-bench-pipeline-") as tmp:
        work = Path(tmp)
        # Before prefect is imported, here and in every child process (dvc's stages).
        os.environ.pop("PREFECT_API_URL", None)        # never a configured server: the ephemeral API
        (work / "prefect-home").mkdir()
        os.environ.update(prefect_settings(work / "prefect-home"))
        if "dvc" in only:
            out += bench_dvc(sizes, device, record)
        if "prefect" in only:   # first: its first flow run is the one that starts the ephemeral API
            out += bench_prefect(sizes, device, record, work)
        if "project" in only:
            out += bench_project(sizes, device, record, work)
    return out


if __name__ == "__main__":
    main()
