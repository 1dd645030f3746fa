"""The committed sandbox models through the whole protocol: stage the bundled world, train a
method, make its grid, score it. Also: the committed weights still measure what their
training records say (the scorers' held-out figures are deterministic)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bas import config, pipeline
from bas.models.registry import sandbox_weights_dir
from orchestration_helpers import FIRST_TEMPLATE, REPO

WEIGHTS = sandbox_weights_dir(config.load(REPO / "params.yaml").models)
pytestmark = pytest.mark.skipif(not (WEIGHTS / "diffusion" / "training_record.json").exists(),
                                reason=f"no committed sandbox weights in {WEIGHTS} (bas sandbox train)")


@pytest.fixture(scope="module")
def sandbox_cfg(tmp_path_factory):
    return config.load(REPO / "params.yaml", {
        "models.profile": "sandbox",
        "paths.storage_root": str(tmp_path_factory.mktemp("sandbox-storage")),
        "scenes.num_scenes": 1,
        "training.progress_bar": False,
        # BaS's prior preservation samples its class images first: 100 x 50 DDIM steps by
        # default, nine tenths of this test's time; two images exercise the same code.
        "training.prior_images.num_images": 2,
        "training.prior_images.sampling_steps": 10,
        "methods.bas.phases.phase1.steps": 32,
        "methods.bas.phases.phase2.steps": 32,
        "generation.templates": [FIRST_TEMPLATE],
        "generation.steps": 10,
        "orchestration.methods": ["bas"],
    })


def test_the_sandbox_profile_runs_the_protocol_on_its_own_world(sandbox_cfg):
    cfg = sandbox_cfg
    assert cfg.scenes.resolution == 64 and cfg.scenes.split == "sandbox"   # the profile's overlay
    # the profile's step_scale (0.25) rescales every recipe, -S overrides included
    assert cfg.methods["bas"].phases["phase1"].steps == 8
    scene_id = pipeline.stage(cfg)["selected"][0]
    pipeline.train_generate(cfg, "bas", scene_id)
    pipeline.score(cfg, "bas", scene_id)
    scores = pd.read_parquet(pipeline.paths.scene_scores_path(cfg, "bas", scene_id))
    scene = json.loads((pipeline.paths.scenes_dir(cfg) / scene_id / "scene.json").read_text())
    n = len(scene["concepts"])
    # one row per (image, concept of its prompt): 2^n - 1 subsets, 1 template, 1 seed
    assert scores.groupby("path").ngroups == 2 ** n - 1
    assert (scores["profile"] == "sandbox").all()
    assert scores["prompt_similarity"].between(-1, 1).all()
    assert set(scores["class_name"]) <= {"circle", "square", "triangle", "star", "cross"}
    found = scores["identity_similarity"].dropna()
    assert found.between(-1, 1).all()


@pytest.mark.parametrize("part", ["clip", "dino", "segmenter", "judge"])
def test_committed_scorers_measure_what_their_records_say(part):
    from bas.sandbox import check

    record = json.loads((WEIGHTS / part / "training_record.json").read_text())
    figures = check._measurers()[part](WEIGHTS / part, config.load(REPO / "params.yaml"))
    flat_record, flat_now = check.flatten(record["validity"]), check.flatten(figures)
    for key, value in flat_record.items():
        if isinstance(value, float):
            assert flat_now[key] == pytest.approx(value, abs=0.01), key


def test_committed_vae_keeps_what_the_judge_reads_as_its_record_says():
    # The ceiling the VAE puts on the base model's text following, re-measured from the files.
    from bas.sandbox import check

    record = json.loads((WEIGHTS / "diffusion" / "training_record.json").read_text())["validity"]["vae_judged"]
    measured = check.measure_vae_judged(WEIGHTS, config.load(REPO / "params.yaml"))
    assert measured["images"] == record["images"] == 400
    for head, accuracy in record["accuracy"].items():
        assert measured["accuracy"][head] == pytest.approx(accuracy, abs=0.01), head


def test_committed_vae_is_near_deterministic_as_its_record_says():
    # In every latent channel the posterior's std is at most 5% of the spread of its mean over
    # held-out renders: a sampled training latent is the image's latent, not noise.
    from diffusers import AutoencoderKL

    from bas.sandbox import train_diffusion as td

    record = json.loads((WEIGHTS / "diffusion" / "training_record.json").read_text())["validity"]["vae_posterior"]
    vae = AutoencoderKL.from_pretrained(WEIGHTS / "diffusion" / "vae").float().eval()
    measured = td.posterior_spread(vae, config.load(REPO / "params.yaml").sandbox)
    assert all(ratio <= 0.05 for ratio in measured["ratio"]) and measured["max_ratio"] <= 0.05
    assert measured["max_ratio"] == pytest.approx(record["max_ratio"], abs=0.01)
    assert measured["mean_std"] == pytest.approx(record["mean_std"], abs=0.01)
