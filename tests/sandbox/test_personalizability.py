"""The personalizability reference: its config keeps the main job's grid apart, its summary splits the grid
from the training prompt."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bas.sandbox import personalizability as P
from bas.training import get_recipe, method_kind
from tests import params_defaults


def _rows(scene, template, identities, detected=None):
    detected = detected or [not math.isnan(v) for v in identities]
    return [{"scene_id": scene, "template": template, "identity_similarity": v, "detected": d}
            for v, d in zip(identities, detected)]


def test_summary_splits_the_grid_from_the_training_prompt_per_scene_and_averages_scenes():
    beach = "a photo of {tokens} at the beach"
    frame = pd.DataFrame(_rows("s1", beach, [0.2, float("nan"), 0.4]) + _rows("s1", P.TRAINING_TEMPLATE, [0.9, 0.7])
                         + _rows("s2", beach, [0.6]) + _rows("s2", P.TRAINING_TEMPLATE, [float("nan")]))
    summary = P.summarize(frame)
    s1, s2 = summary["scenes"]["s1"], summary["scenes"]["s2"]
    assert s1["grid"] == {"identity": pytest.approx(0.3), "detected": pytest.approx(2 / 3, abs=1e-4), "rows": 3}
    assert s1["training_prompt"] == {"identity": pytest.approx(0.8), "detected": 1.0, "rows": 2}
    assert s2["training_prompt"] == {"identity": None, "detected": 0.0, "rows": 1}
    assert summary["mean"]["grid"]["identity"] == pytest.approx(0.45)          # (0.3 + 0.6) / 2: scenes weigh alike
    assert summary["mean"]["training_prompt"]["identity"] == pytest.approx(0.8)  # a scene with nothing detected is left out
    assert summary["mean"]["training_prompt"]["detected"] == pytest.approx(0.5)


def test_measuring_config_adds_the_training_prompt_and_keeps_the_main_jobs_runs_apart():
    cfg = params_defaults.params()
    measuring = P.measuring_config(cfg)
    assert measuring.generation.templates == tuple(cfg.generation.templates) + (P.TRAINING_TEMPLATE,)
    assert P.measuring_config(measuring).generation.templates == measuring.generation.templates
    assert measuring.orchestration.methods == (P.METHOD,)
    assert measuring.paths.runs != cfg.paths.runs and measuring.paths.scores != cfg.paths.scores
    assert measuring.paths.storage_root == cfg.paths.storage_root     # the staged scenes are shared


def test_the_reference_recipe_trains_everything_on_the_scene_with_the_masked_loss():
    cfg = params_defaults.params()
    recipe = get_recipe(cfg, P.METHOD)
    assert method_kind(cfg, P.METHOD) == "reference"
    trained = [p for p in recipe.phases.values() if p.steps]
    assert len(trained) == 1 and set(trained[0].trainable) == {"tokens", "unet", "text_encoder"}
    assert recipe.data.source == "scene" and recipe.diffusion_loss.masked and not recipe.prior_preservation
    assert recipe.data.prompt_template.format(tokens="<asset0>") == P.TRAINING_TEMPLATE.format(tokens="<asset0>")
    assert trained[0].steps >= 4 * 800 and all(w == 0 for w in trained[0].term_weights.values())
