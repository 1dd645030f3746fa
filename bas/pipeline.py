"""The evaluation's stages as library calls: what Prefect tasks and DVC stages run.

    stage(cfg)                                  # scenes: COCO (or the demo) -> <root>/scenes/
    write_recipes(cfg)                          # each method's resolved recipe -> <root>/recipes/
    train_generate(cfg, method, scene_id)       # train (unless finished), then the image grid
    score(cfg, method, scene_id)                # -> <root>/scores/<method>/<scene_id>.parquet
    report(cfg)                                 # -> reports/

Each is a thin composition of the library (`bas.scenes`, `bas.training`, `bas.generation`,
`bas.scoring`, `bas.report`); nothing here knows about Prefect or DVC. `train_generate` is
one call on purpose: the fine-tuned weights stay in memory between training and the grid,
so they never travel between machines (on sd21 they are ~2.6 GB a scene).

Every scene stage is idempotent and content-keyed. Its *fingerprint* hashes what its
outputs depend on (the scene's content hash, the method's resolved recipe, the settings
that decide pixels or scores, and the version of the code that makes them); a finished
stage leaves a small marker holding its fingerprint, written last, and is skipped (without
loading a model) while the fingerprint matches. Prefect's cache keys are these fingerprints.
`bas.done` computes them and says whether a (method, scene) is done, and why not.
Each execution leaves an attempt record (`bas.attempts`) with its summary.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Optional, Sequence

from bas import attempts, paths
from bas.config import Config, to_dict
# Whether a (method, scene) is done and why not, its fingerprints and each stage's code live in
# bas.done; the names are re-exported here for the Prefect tasks' cache keys and the benches.
from bas.done import (STAGE_CODE, Status, code_version, done_record, grid_complete,  # noqa: F401
                      read_json as _read_json, scene_content_hash, score_done, score_fingerprint,
                      score_marker as _score_marker, score_record, score_status, train_generate_done,
                      train_generate_fingerprint, train_generate_status, weights_identity)
from bas.errors import ConfigError, DataError
from bas.io import atomic_write_json, atomic_write_parquet, writing
from bas.kinds import REFERENCES
from bas.paths import DONE_FILE, TRAINED_WEIGHTS_FILE, TRAIN_DIR

log = logging.getLogger(__name__)

# The stage functions import the library packages they run (scenes, training, generation,
# scoring, report) when called: the flows, the Prefect tasks and commands such as `bas stage`
# and `bas recipes` import this module and should not pay for torch to start.


# --------------------------------------------------------------------------- stages


def _writing(cfg: Config, stage_name: str, method: Optional[str] = None, scene_id: Optional[str] = None,
             where: Optional[Path] = None):
    """A full disk while `stage_name` writes: one StorageFullError naming the stage, the file,
    what it is and the free space (`bas.io.writing`); the task is not retried."""
    name = f"{stage_name} {method}/{scene_id}" if method else stage_name
    return writing(name, functools.partial(paths.describe, cfg), where=where or paths.storage_root(cfg))


def stage(cfg: Config) -> dict:
    """Stage the COCO scenes of `cfg.scenes` into `<root>/scenes/` (idempotent)."""
    from bas import lease
    from bas.scenes import stage_coco

    # two runs on one root: one stages, one waits
    with _writing(cfg, "scenes"), lease.hold(cfg, "stage", "scenes", "all"):
        report = stage_coco(cfg.scenes, paths.scenes_dir(cfg))
    return {"selected": report.selected, "written": report.written, "unchanged": report.unchanged,
            "dropped": report.dropped, "skipped": [str(s) for s in report.skipped],
            "index_written": report.index_written}


def scene_ids(cfg: Config) -> list[str]:
    """The scenes of the current selection, in index order."""
    from bas.scenes.index import read_index

    index_path = paths.scene_index(cfg)
    if not index_path.exists():
        raise DataError(f"no scene index at {index_path}: stage the scenes first (`bas stage`)")
    return list(dict.fromkeys(read_index(index_path)["scene_id"].tolist()))


def write_recipes(cfg: Config) -> dict:
    """Write `<root>/recipes/<method>.json`, the resolved recipe (includes merged) of each method.

    dvc.yaml makes each method's train stage depend on its file, so a change to a recipe
    a method includes reruns that method, and a change to another method does not.
    Unchanged files are not rewritten.
    """
    from bas.training.methods import get_recipe

    written = []
    for method in cfg.orchestration.methods:
        path = paths.recipe_path(cfg, method)
        content = ({"method": method, "reference": "ground-truth renders of the sandbox world (bas.sandbox.reference)"}
                   if method in REFERENCES
                   else {"method": method, "recipe": to_dict(get_recipe(cfg, method))})
        if _read_json(path) != content:
            with _writing(cfg, "recipes"):
                atomic_write_json(path, content)
            written.append(method)
    return {"methods": list(cfg.orchestration.methods), "written": written}


def _image_stats(images_dir: Path) -> dict[str, tuple[int, int]]:
    if not images_dir.is_dir():
        return {}
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in images_dir.glob("*.png")}


def train_generate(cfg: Config, method: str, scene_id: str, run_id: Optional[str] = None) -> dict:
    """`_train_generate` under the (method, scene) lease (`bas.lease`): when another run
    holds it, wait; when that run finished the work meanwhile, take its result."""
    from bas import lease

    with _writing(cfg, "train_generate", method, scene_id), \
            lease.hold(cfg, "train_generate", method, scene_id, run_id) as waited:
        status = train_generate_status(cfg, method, scene_id)   # the stage's one question: done?
        if waited and status.done:
            return {"stage": "train_generate", "method": method, "scene_id": scene_id, "trained": False,
                    "fingerprint": status.fingerprint,
                    "images": _count_manifest(paths.manifest_path(paths.run_dir(cfg, method, scene_id))),
                    "images_generated": 0, "done_by_another_run": True}
        return _train_generate(cfg, method, scene_id, run_id, status)


def _train_generate(cfg: Config, method: str, scene_id: str, run_id: Optional[str] = None,
                    status: Optional[Status] = None) -> dict:
    """Train `method` on the scene (unless finished), then make the missing images of its grid.

    The grid is made with the model still in memory after training. When training had
    finished but the grid had not (a lost worker), the trained tokens and weights are loaded
    from the run directory; if the weights were not kept (`training.keep_weights`) the
    method is trained again. Outputs recorded as finished that are gone or changed
    (`status.changed`) are made again with what depends on them (`_drop_changed`).
    `status`: the stage's `train_generate_status`, asked once. Returns a summary (also in
    the attempt record).
    """
    from bas.generation.run import generate_grid, generate_run
    from bas.models import load_diffusion, pick_device
    from bas.scenes import load_scene
    from bas.training.engine import is_complete, run_key, train_scene, trains_weights
    from bas.training.methods import get_recipe

    rendered = method in REFERENCES   # how the run is produced: trained, or rendered (a ground-truth reference)
    if rendered and cfg.models.profile != "sandbox":
        # Checked before the finished-run test: a reference's fingerprint names no model.
        raise ConfigError(f"orchestration.methods: {method!r} is a ground-truth reference of the sandbox "
                          f"world and needs models.profile: sandbox (not {cfg.models.profile!r})")
    run = paths.run_dir(cfg, method, scene_id)
    status = status or train_generate_status(cfg, method, scene_id)
    fingerprint = status.fingerprint
    record_dir = paths.attempts_dir(cfg, "train_generate", method, scene_id)
    with attempts.attempt(record_dir, "train_generate", method, scene_id,
                          cfg.orchestration.heartbeat_seconds, run_id) as record:
        summary = {"stage": "train_generate", "method": method, "scene_id": scene_id, "fingerprint": fingerprint,
                   "trained": False, "images": 0, "images_generated": 0, "train_seconds": 0.0,
                   "generate_seconds": 0.0, "device": str(pick_device())}
        if status.done:
            log.info("%s/%s: training and grid already finished", method, scene_id)
            summary["images"] = _count_manifest(paths.manifest_path(run))
        elif rendered:
            log.info("%s/%s: rendering: %s", method, scene_id, "; ".join(status.reasons))
            summary["images"] = _render_reference(cfg, method, scene_id, run)
            atomic_write_json(run / DONE_FILE, done_record(cfg, method, scene_id, status, summary["images"]))
        else:
            log.info("%s/%s: to do: %s", method, scene_id, "; ".join(status.reasons))
            _drop_changed(run, status.changed)
            scene = load_scene(paths.scenes_dir(cfg) / scene_id)
            before = _image_stats(paths.images_dir(run))
            started = time.perf_counter()
            recipe = get_recipe(cfg, method)
            train_dir = run / TRAIN_DIR
            trained = is_complete(train_dir, run_key(cfg, method, recipe, scene), recipe, cfg.training.keep_weights)
            if (trained and trains_weights(recipe) and not (train_dir / TRAINED_WEIGHTS_FILE).exists()
                    and not grid_complete(cfg, method, scene, run)):
                # The fine-tuned weights were not kept (training.keep_weights), so the model that
                # made the grid is gone: train again rather than finish the grid with another
                # model. Images the new model makes differently are stale and made again.
                log.info("%s/%s: grid unfinished and the trained weights were not kept: training again",
                         method, scene_id)
                shutil.rmtree(train_dir)
                trained = False
            if trained:
                manifest = generate_run(cfg, method, scene_id, run)
                summary["generate_seconds"] = time.perf_counter() - started
            else:
                device = pick_device()
                parts = load_diffusion(cfg.models)
                result = train_scene(cfg, method, scene, run, parts=parts, device=device)
                summary["trained"] = not result.skipped
                trained_at = time.perf_counter()
                summary["train_seconds"] = trained_at - started
                tokens = result.summary["placeholders"]
                manifest = generate_grid(parts, tokens, scene, method, cfg, run)
                summary["generate_seconds"] = time.perf_counter() - trained_at
            after = _image_stats(paths.images_dir(run))
            summary["images"] = len(manifest)
            summary["images_generated"] = sum(1 for name, stat in after.items() if before.get(name) != stat)
            atomic_write_json(run / DONE_FILE, done_record(cfg, method, scene_id, status, len(manifest)))
        record.data["summary"] = summary
    return summary


def _drop_changed(run: Path, changed: Sequence) -> None:
    """Remove what depends on finished outputs that are gone or changed, so that the stage
    makes it again: a training output (tokens, kept weights, log) -> the training (its grid is
    then checked against the new tokens: images they make differently are made again); an
    image -> that image; the grid's settings or manifest -> those (rewritten)."""
    if not changed:
        return
    names = [change.name for change in changed]
    retrain = any(name.split("/")[0] == TRAIN_DIR for name in names)
    log.warning("made again, with what depends on it: %s", "; ".join(f"{run / c.name} {c.why}" for c in changed))
    (run / DONE_FILE).unlink(missing_ok=True)   # no marker while its outputs change
    if retrain:
        shutil.rmtree(run / TRAIN_DIR, ignore_errors=True)
    if retrain and paths.GENERATION_JSON in names:
        # The settings the images were made with are gone and the tokens are trained again:
        # which images the new tokens would make differently cannot be told; all are made again.
        shutil.rmtree(paths.images_dir(run), ignore_errors=True)
    for name in names:
        if name.split("/")[0] != TRAIN_DIR:
            (run / name).unlink(missing_ok=True)


def _render_reference(cfg: Config, reference: str, scene_id: str, run: Path) -> int:
    # Imported here: the sandbox world is needed by references only, not by every stage's CLI.
    from bas.sandbox.reference import render_reference
    from bas.scenes import load_scene

    if run.exists():
        shutil.rmtree(run)   # renders of other settings: made again, they take seconds
    return len(render_reference(cfg, load_scene(paths.scenes_dir(cfg) / scene_id), reference, run))


def _count_manifest(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows if path.exists() else 0


@functools.lru_cache(maxsize=1)
def _scorer(models_cfg, scoring_cfg):
    """One scorer a process: the scoring models load once for all the scenes it scores."""
    from bas.scoring.score import make_scorer

    return make_scorer(SimpleNamespace(models=models_cfg, scoring=scoring_cfg))


def score(cfg: Config, method: str, scene_id: str, run_id: Optional[str] = None) -> dict:
    """`_score` under the (method, scene) score lease, as `train_generate`."""
    from bas import lease

    with _writing(cfg, "score", method, scene_id), lease.hold(cfg, "score", method, scene_id, run_id) as waited:
        status = score_status(cfg, method, scene_id, grid=True)   # the stage's one question: done?
        if waited and status.done:
            return {"stage": "score", "method": method, "scene_id": scene_id, "scored": False,
                    "fingerprint": status.fingerprint,
                    "rows": _count_manifest(paths.scene_scores_path(cfg, method, scene_id)),
                    "done_by_another_run": True}
        return _score(cfg, method, scene_id, run_id, status)


def _score(cfg: Config, method: str, scene_id: str, run_id: Optional[str] = None,
           status: Optional[Status] = None) -> dict:
    """Score the (method, scene) grid into `<root>/scores/<method>/<scene_id>.parquet`.

    `status`: the stage's `score_status(..., grid=True)`, asked once."""
    import pandas as pd

    from bas.scoring.score import SceneCache, score_manifest, summary as score_summary
    from bas.training.methods import method_kind

    run = paths.run_dir(cfg, method, scene_id)
    out = paths.scene_scores_path(cfg, method, scene_id)
    record_dir = paths.attempts_dir(cfg, "score", method, scene_id)
    with attempts.attempt(record_dir, "score", method, scene_id, cfg.orchestration.heartbeat_seconds,
                          run_id) as record:
        status = status or score_status(cfg, method, scene_id, grid=True)
        fingerprint = status.fingerprint
        summary = {"stage": "score", "method": method, "scene_id": scene_id, "fingerprint": fingerprint,
                   "scored": False, "rows": 0, "score_seconds": 0.0}
        if status.done:
            log.info("%s/%s: already scored", method, scene_id)
            summary["rows"] = _count_manifest(out)
        else:
            if status.changed:
                log.warning("scored again: %s", "; ".join(f"{out.parent / c.name} {c.why}" for c in status.changed))
            manifest_file = paths.manifest_path(run)
            if status.grid is not None and not status.grid.done:
                raise DataError(f"{method}/{scene_id}: no finished grid in {run} for the current params "
                                f"({'; '.join(status.grid.reasons)}): run train_generate first")
            started = time.perf_counter()
            scorer = _scorer(cfg.models, cfg.scoring)
            scores = score_manifest(pd.read_parquet(manifest_file), run, SceneCache(paths.scenes_dir(cfg)),
                                    scorer, kind=method_kind(cfg, method), progress=False)
            atomic_write_parquet(out, scores)
            summary.update(scored=True, rows=len(scores), score_seconds=time.perf_counter() - started,
                           device=str(scorer.device), means=_finite(score_summary(scores)))
            atomic_write_json(_score_marker(cfg, method, scene_id),
                              score_record(cfg, method, scene_id, fingerprint, len(scores)))
        record.data["summary"] = summary
    return summary


def _finite(values: dict) -> dict:
    """NaN (a metric no image had, e.g. identity with no detection) as None, for JSON."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in values.items()}


def report(cfg: Config) -> dict:
    """Write the comparison report of every scored method into `reports/`."""
    from bas import lease
    from bas.report import build_report

    # two runs finishing together write it in turn
    with _writing(cfg, "report", where=paths.reports_dir(cfg)), lease.hold(cfg, "report", "all", "all"):
        outputs = build_report(results_dir=paths.storage_root(cfg), out_dir=paths.reports_dir(cfg),
                               cfg=cfg.report, scenes_dir=paths.scenes_dir(cfg))
    return {"html": str(outputs.html), "out_dir": str(paths.reports_dir(cfg))}


def score_references(cfg: Config, scene_ids: Sequence[str], out: Path,
                     references: Sequence[str] = REFERENCES) -> "pd.DataFrame":
    """Render and score every reference on every staged scene, as the pipeline does for a method.

    Renders and scores go where `bas run` puts them (`runs/<reference>/`, `scores/<reference>/`)
    through the pipeline's own stages, so they are redone exactly when their fingerprints
    change (other generation settings, retrained scorers) and shared with the main job.
    Returns the method summary (mean, bootstrap CI, n per reference and metric), also written
    to `<out>/reference_means.csv`.
    """
    # Imported here: pandas and the report's statistics are not needed to start other stages.
    import pandas as pd

    from bas.io import atomic_write_text
    from bas.report.results import per_image
    from bas.report.stats import method_summary
    from bas.sandbox.reference import require_reference
    from bas.schema import METRICS

    frames = []
    for reference in references:
        require_reference(reference)
        for scene_id in scene_ids:
            train_generate(cfg, reference, scene_id)
            score(cfg, reference, scene_id)
            frames.append(pd.read_parquet(paths.scene_scores_path(cfg, reference, scene_id)))
    images = per_image(pd.concat(frames, ignore_index=True))
    means = method_summary(images, METRICS, cfg.report.bootstrap_samples, cfg.report.confidence,
                           cfg.report.bootstrap_seed)
    atomic_write_text(Path(out) / "reference_means.csv", means.to_csv(index=False))
    return means


def measure_personalizability(cfg: Config, scene_ids: Sequence[str]) -> dict:
    """Train, generate and score the personalizability reference (`bas.sandbox.personalizability`)
    on each scene through the pipeline's own stages, in its own runs and scores directories (so a
    rerun reuses finished work); returns its per-scene and mean identity figures."""
    import pandas as pd

    from bas.sandbox import personalizability

    measuring = personalizability.measuring_config(cfg)
    frames = []
    for scene_id in scene_ids:
        train_generate(measuring, personalizability.METHOD, scene_id)
        score(measuring, personalizability.METHOD, scene_id)
        frames.append(pd.read_parquet(paths.scene_scores_path(measuring, personalizability.METHOD, scene_id)))
    return personalizability.summarize(pd.concat(frames, ignore_index=True))


# --------------------------------------------------------------------------- run summary


@dataclass
class Outcome:
    """How one (stage, method, scene) ended in an orchestrated run."""

    stage: str
    method: str
    scene_id: str
    status: str                       # "completed", "cached" (nothing executed) or "failed"
    run_ids: list[str] = field(default_factory=list)  # the runs submitted for it, in order
    error: Optional[str] = None
    summary: Optional[dict] = None    # the attempt's summary when it executed

    @property
    def ok(self) -> bool:
        return self.status in ("completed", "cached")


def executed_summary(cfg: Config, stage_name: str, method: str, scene_id: str, run_id: Optional[str]) -> Optional[dict]:
    """The summary of the attempt run `run_id` completed, or None when it executed nothing (cached)."""
    records = attempts.read_attempts(paths.attempts_dir(cfg, stage_name, method, scene_id))
    done = [r for r in records if r.get("run_id") == run_id and r.get("status") == attempts.COMPLETED]
    return done[-1].get("summary") if done else None


def run_summary(cfg: Config, outcomes: Sequence[Outcome], wall_seconds: float, flow: str = "full_eval",
                stage_errors: Optional[dict[str, str]] = None) -> dict:
    """Scenes, images, failures, wall time and device time per stage of one orchestrated run.

    `stage_errors`: whole-run stages (the report) that failed, by name, with their error.
    """
    scenes = sorted({o.scene_id for o in outcomes})
    device_seconds = {"train": 0.0, "generate": 0.0, "score": 0.0}
    devices, hosts = set(), set()
    images = generated = 0
    for o in outcomes:
        s = o.summary or {}
        device_seconds["train"] += s.get("train_seconds", 0.0)
        device_seconds["generate"] += s.get("generate_seconds", 0.0)
        device_seconds["score"] += s.get("score_seconds", 0.0)
        if s.get("device"):
            devices.add(s["device"])
        if o.stage == "train_generate" and o.ok:
            images += _count_manifest(paths.manifest_path(paths.run_dir(cfg, o.method, o.scene_id)))
            generated += s.get("images_generated", 0)
    for o in outcomes:
        for record in attempts.read_attempts(paths.attempts_dir(cfg, o.stage, o.method, o.scene_id)):
            if record.get("run_id") in o.run_ids:
                hosts.add(record.get("worker"))
    failures = [{"stage": o.stage, "method": o.method, "scene_id": o.scene_id, "error": o.error}
                for o in outcomes if not o.ok]
    failures += [{"stage": stage, "method": None, "scene_id": None, "error": error}
                 for stage, error in (stage_errors or {}).items()]
    counts: dict[str, dict[str, int]] = {}
    for o in outcomes:
        counts.setdefault(o.stage, {}).setdefault(o.status, 0)
        counts[o.stage][o.status] += 1
    return {
        "flow": flow, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "methods": sorted({o.method for o in outcomes}), "scenes": scenes, "num_scenes": len(scenes),
        "images": images, "images_generated": generated, "stages": counts, "failures": failures,
        "wall_seconds": round(wall_seconds, 2),
        "device_seconds": {k: round(v, 2) for k, v in device_seconds.items()},
        "devices": sorted(devices), "workers": sorted(h for h in hosts if h),
        "outcomes": [asdict(o) for o in outcomes],
    }


def format_summary(summary: dict) -> str:
    """The run summary as the lines printed at the end of a run."""
    device = ", ".join(summary["devices"]) or "-"
    per_stage = ", ".join(f"{stage} {secs:.1f}s" for stage, secs in summary["device_seconds"].items())
    stages = "; ".join(f"{stage}: " + ", ".join(f"{n} {status}" for status, n in sorted(c.items()))
                       for stage, c in summary["stages"].items())
    lines = [
        f"{summary['flow']}: {summary['num_scenes']} scenes x {len(summary['methods'])} methods "
        f"({', '.join(summary['methods'])})",
    ]
    if "train_generate" in summary["stages"]:
        lines.append(f"  images: {summary['images']} in the grids, {summary['images_generated']} made in this run")
    lines += [
        f"  stages: {stages or '-'}",
        f"  wall time: {summary['wall_seconds']:.1f}s; device time ({device}): {per_stage}",
        f"  workers: {', '.join(summary['workers']) or '-'}",
        f"  failures: {len(summary['failures'])}",
    ]
    stopped = summary.get("stopped")
    for f in summary["failures"]:
        # A full disk's one line is the run's error (printed after the summary): named once.
        error = "the storage is full; the run stopped here (the error follows)" \
            if stopped and stopped in (f["error"] or "") else f["error"]
        lines.append(f"    {f['stage']}" + (f" {f['method']}/{f['scene_id']}" if f["method"] else "") + f": {error}")
    return "\n".join(lines)


def write_run_summary(cfg: Config, summary: dict) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    path = paths.run_summaries_dir(cfg) / f"{stamp}-{summary['flow']}-{os.getpid()}.json"
    with _writing(cfg, "the run summary"):
        atomic_write_json(path, summary)
    return path
