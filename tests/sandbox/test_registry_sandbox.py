"""The `sandbox` model profile: weights from one directory, fp16 on disk, fp32 in use."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bas
from bas.errors import ModelNotAvailableError
from bas.models import registry
from bas.sandbox import embedders, world
from tests import params_defaults

from tests.sandbox.test_embedders import small_cfg


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """CLIP and DINO trained for a few steps into a weights directory of their own (once a session)."""
    tmp = tmp_path_factory.getbasetemp() / "sandbox-embedders"
    cfg = small_cfg(tmp)
    root = Path(cfg.models.sandbox_weights)
    if (root / "dino" / "training_record.json").exists():   # another test module trained them
        return cfg
    patch = pytest.MonkeyPatch()
    for name, value in (("CLIP_POOL_IMAGES", 64), ("CLIP_HELDOUT_IMAGES", 12), ("DINO_POOL_VIEWS", 2),
                        ("DINO_HELDOUT_VIEWS", 2)):
        patch.setattr(embedders, name, value)
    try:
        embedders.train_clip(cfg, tmp / "work", root / "clip")
        embedders.train_dino(cfg, tmp / "work", root / "dino")
    finally:
        patch.undo()
    return cfg


def test_weights_dir_is_the_bundled_one_unless_set(tmp_path):
    from bas.sandbox.stages import weights_dir

    bundled = Path(bas.__file__).parent / "data" / "sandbox"
    assert registry.sandbox_weights_dir(params_defaults.models(profile="sandbox")) == bundled
    assert registry.resolve_sources(params_defaults.models(profile="sandbox")).diffusion == str(bundled / "diffusion")
    cfg = small_cfg(tmp_path)
    assert registry.sandbox_weights_dir(cfg.models) == weights_dir(cfg) == tmp_path / "weights"


def test_fp16_weights_load_as_fp32(weights):
    from safetensors.torch import load_file

    root = Path(weights.models.sandbox_weights)
    scorers = registry.load_scorers(weights.models)
    assert scorers.profile == "sandbox" and scorers.maskformer is None
    for model, file in ((scorers.clip_model, root / "clip" / registry.SANDBOX_CLIP_WEIGHTS),
                        (scorers.dino_model, root / "dino" / registry.SANDBOX_DINO_WEIGHTS)):
        saved = load_file(file)
        assert {t.dtype for t in saved.values()} == {torch.float16}
        state = model.state_dict()
        assert {state[k].dtype for k in saved} == {torch.float32}
        assert all(torch.equal(state[k], v.float()) for k, v in saved.items())
        assert not model.training


def test_segmenter_is_none_until_trained(weights, caplog):
    with caplog.at_level(logging.WARNING, logger="bas.models.registry"):
        scorers = registry.load_scorers(weights.models)
    assert scorers.segmenter is None
    assert "bas sandbox train --only segmenter" in caplog.text


def test_scoring_runs_on_the_sandbox_scorers(weights):
    from bas.scenes.masking import masked_concept
    from bas.scoring.clip_scores import ClipEmbedder
    from bas.scoring.dino_scores import DinoEmbedder

    scorers = registry.load_scorers(weights.models)
    scene = world_scene()
    image = Image.fromarray(scene.image)
    concept = masked_concept(image, scene.masks[0])
    clip = ClipEmbedder(scorers, torch.device("cpu"))
    dino = DinoEmbedder(scorers, torch.device("cpu"), weights.scoring.dino_crop_pct)

    prompt = clip.texts(["a photo of a circle and a square at the beach", "a photo of a star in the snow"])
    prompt_similarity = clip.images([image]) @ prompt.T                                   # (1, 2)
    identity = dino.images([concept, image])                                               # (2, D)
    assert prompt.shape == (2, embedders.CLIP_CONFIG["embed_dim"]) and torch.isfinite(prompt_similarity).all()
    assert (prompt_similarity.abs() <= 1 + 1e-5).all()
    assert identity.shape == (2, embedders.DINO_KWARGS["embed_dim"])
    assert float(identity[0] @ identity[0]) == pytest.approx(1.0, abs=1e-5)
    assert float(identity[0] @ identity[1]) < 1 - 1e-4   # the concept alone is not the whole image


def world_scene() -> world.WorldImage:
    objects = [world.Identity("circle", "red", "striped"), world.Identity("square", "blue", "plain")]
    return world.compose("beach", objects, [(2, 2, 30), (30, 30, 30)], np.random.default_rng(0))


def test_missing_weights_say_where_and_how_to_train(tmp_path):
    cfg = params_defaults.models(profile="sandbox", sandbox_weights=str(tmp_path / "empty"))
    with pytest.raises(ModelNotAvailableError) as err:
        registry.load_scorers(cfg)
    message = str(err.value)
    assert str(tmp_path / "empty" / "clip") in message and "bas sandbox train --only clip" in message
    assert "models.sandbox_weights" in message
    with pytest.raises(ModelNotAvailableError, match=r"bas sandbox train --only vae,base"):
        registry.load_diffusion(cfg)


def test_missing_dino_alone_is_named(weights, tmp_path):
    import shutil

    root = tmp_path / "weights"
    shutil.copytree(Path(weights.models.sandbox_weights) / "clip", root / "clip")
    with pytest.raises(ModelNotAvailableError, match=r"(?s)sandbox dino weights not found: .*--only dino"):
        registry.load_scorers(dataclasses.replace(weights.models, sandbox_weights=str(root)))


def test_fp16_diffusion_loads_as_fp32(tmp_path):
    from bas.sandbox import base_model
    from bas.sandbox.train_diffusion import save_diffusion

    torch.manual_seed(0)
    vae, unet, text = base_model.build_vae(), base_model.build_unet(), base_model.build_text_encoder()
    save_diffusion(tmp_path / "diffusion", vae, unet, text, {"seed": 0})
    parts = registry.load_diffusion(params_defaults.models(profile="sandbox", sandbox_weights=str(tmp_path)))
    assert parts.profile == "sandbox" and parts.resolution == 64
    for saved, loaded in ((unet, parts.unet), (vae, parts.vae), (text, parts.text_encoder)):
        assert {p.dtype for p in loaded.parameters()} == {torch.float32}
        name, value = next(iter(saved.state_dict().items()))
        assert torch.equal(loaded.state_dict()[name], value.half().float())
