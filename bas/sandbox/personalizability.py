"""Personalizability: how much of a scene's objects a long fine-tune can put into the base model.

Every method learns a scene into the base model; none can learn more than a long fine-tune of
all of it (UNet, text encoder and the new tokens) on the scene's own image with the masked
loss. That run is the recipe `full_finetune` (kind `reference`, params.yaml), scored like a
method over the grid and over the training prompt alone ("a photo of <asset0> and <asset1>"):

- identity over the grid says whether the model can draw the learned objects in a context;
- identity on the training prompt says whether it can redraw them at all (memorization).

A base model on which the first is near 0 cannot separate methods by identity, whatever they
do. The figures go into the diffusion model's training record under `personalizability`
(`bas sandbox personalizability`; docs/SANDBOX.md).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from bas.config import Config

if TYPE_CHECKING:
    import pandas as pd

METHOD = "full_finetune"
RECORD_KEY = "personalizability"
TRAINING_TEMPLATE = "a photo of {tokens}"   # the recipe's data.prompt_template: the training prompt
SUBDIR = "personalizability"                # its runs and scores, apart from the main job's


def measuring_config(cfg: Config) -> Config:
    """`cfg` for the reference's runs: the grid's templates plus the training prompt, its runs and
    scores in `<storage root>/personalizability/` so the main job's grid is never touched."""
    templates = tuple(cfg.generation.templates)
    if TRAINING_TEMPLATE not in templates:
        templates = templates + (TRAINING_TEMPLATE,)
    return dataclasses.replace(
        cfg,
        generation=dataclasses.replace(cfg.generation, templates=templates),
        paths=dataclasses.replace(cfg.paths, runs=f"{SUBDIR}/{cfg.paths.runs}", scores=f"{SUBDIR}/{cfg.paths.scores}"),
        orchestration=dataclasses.replace(cfg.orchestration, methods=(METHOD,)),
    )


def summarize(scores: "pd.DataFrame") -> dict:
    """Per scene and over scenes (the mean of the scenes' means): identity similarity on the
    grid's context templates and on the training prompt, and how often a concept was detected.
    Identity is over the detected concepts (NaN rows skipped), as the report's is."""
    def figures(rows: "pd.DataFrame") -> dict:
        identity = rows["identity_similarity"].mean()
        return {"identity": None if identity != identity else round(float(identity), 4),
                "detected": round(float(rows["detected"].astype(float).mean()), 4), "rows": int(len(rows))}

    training = scores["template"] == TRAINING_TEMPLATE
    per_scene = {}
    for scene_id, rows in scores.groupby("scene_id", sort=True):
        on_training = training.loc[rows.index]
        per_scene[str(scene_id)] = {"grid": figures(rows[~on_training]), "training_prompt": figures(rows[on_training])}

    def mean_of(part: str, key: str):
        values = [s[part][key] for s in per_scene.values() if s[part][key] is not None]
        return round(sum(values) / len(values), 4) if values else None

    return {"scenes": per_scene,
            "mean": {part: {key: mean_of(part, key) for key in ("identity", "detected")}
                     for part in ("grid", "training_prompt")}}
