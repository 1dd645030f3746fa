"""`full_eval`: the whole evaluation, scenes to report, and the per-method flows DVC runs.

    full_eval             stage scenes -> train + generate every (method, scene) -> score -> report
    train_generate_method train + generate one method on the staged scenes (dvc.yaml stage)
    score_method          score one method's grids (dvc.yaml stage)

Each (method, scene) is a scene flow run (flows/scene.py), here or on the GPU work pool
(flows/dispatch.py). Every flow ends with a run summary: scenes, images, failures, wall
time and device time per stage. A full disk stops full_eval after the stage it hit: no
scoring or report is tried on it (the summary's `stopped` says why).
"""

from __future__ import annotations

import time
from typing import Optional

from prefect import flow

from bas.config import load
from flows import dispatch
from tasks import stages
from tasks.stages import configured


@flow(name="full-eval", log_prints=True)
def full_eval(params_file: str = "params.yaml", overrides: Optional[dict] = None) -> dict:
    started = time.perf_counter()
    cfg = load(params_file, overrides)
    configured(stages.stage_scenes, cfg)(cfg)
    scene_ids = configured(stages.list_scenes, cfg)(cfg)
    trained = dispatch.run_scene_jobs(cfg, "train_generate",
                                      [(m, s) for m in cfg.orchestration.methods for s in scene_ids])
    if dispatch.storage_full(trained):
        return dispatch.finish(cfg, "full_eval", trained, started)
    scored = dispatch.run_scene_jobs(cfg, "score", [(o.method, o.scene_id) for o in trained if o.ok])
    if dispatch.storage_full(scored):
        return dispatch.finish(cfg, "full_eval", trained + scored, started)
    report = configured(stages.report, cfg)(cfg, return_state=True)
    return dispatch.finish(cfg, "full_eval", trained + scored, started,
                           stage_errors=None if report.is_completed() else {"report": report.message})


@flow(name="train-generate-method", log_prints=True)
def train_generate_method(method: str, params_file: str = "params.yaml", overrides: Optional[dict] = None,
                          scene_ids: Optional[list[str]] = None) -> dict:
    started = time.perf_counter()
    cfg = load(params_file, overrides)
    scene_ids = scene_ids or configured(stages.list_scenes, cfg)(cfg)
    outcomes = dispatch.run_scene_jobs(cfg, "train_generate", [(method, s) for s in scene_ids])
    return dispatch.finish(cfg, "train_generate", outcomes, started)


@flow(name="score-method", log_prints=True)
def score_method(method: str, params_file: str = "params.yaml", overrides: Optional[dict] = None,
                 scene_ids: Optional[list[str]] = None) -> dict:
    started = time.perf_counter()
    cfg = load(params_file, overrides)
    scene_ids = scene_ids or configured(stages.list_scenes, cfg)(cfg)
    outcomes = dispatch.run_scene_jobs(cfg, "score", [(method, s) for s in scene_ids])
    return dispatch.finish(cfg, "score", outcomes, started)
