"""How a step is computed (`training.cache_latents`, `training.attention_capture`) changes
speed, never what is learned; `Trainer.enter_phase` runs single steps of a named phase."""

import pytest
import torch

from bas.errors import BasError
from bas.models import load_diffusion
from bas.tokens import TOKENS_FILE, load_tokens
from bas.training import Trainer, get_recipe, train_scene
from bas.attention import AttentionStore
from bas.training.engine import run_key

OFFICIAL = {"training.cache_latents": False, "training.attention_capture": "every_layer"}


def test_the_official_way_learns_the_same_tokens(make_cfg, coco_scene, tiny_models_cfg, tmp_path):
    tokens, keys = [], []
    for name, overrides in (("ours", {}), ("official", OFFICIAL)):
        cfg = make_cfg((2, 1), **overrides)
        result = train_scene(cfg, "bas", coco_scene, run_dir=tmp_path / name, parts=load_diffusion(tiny_models_cfg))
        tokens.append(load_tokens(result.train_dir / TOKENS_FILE)[0])
        keys.append(run_key(cfg, "bas", get_recipe(cfg, "bas"), coco_scene))
        assert result.summary["training"]["cache_latents"] is (name == "ours")
    assert keys[0] == keys[1]          # a finished run is reused whichever way it was computed
    for name in tokens[0]:
        assert torch.allclose(tokens[0][name], tokens[1][name], atol=1e-5), name


def _counting_encodes(vae):
    calls = []
    original = vae.encode

    def encode(images, *args, **kwargs):
        calls.append(images.shape[0])
        return original(images, *args, **kwargs)

    vae.encode = encode
    return calls


@pytest.mark.parametrize("cache", [True, False])
def test_cache_latents_decides_whether_a_step_runs_the_vae(make_cfg, coco_scene, tiny_models_cfg, cache):
    cfg = make_cfg((2, 2), **{"training.cache_latents": cache})
    parts = load_diffusion(tiny_models_cfg)
    calls = _counting_encodes(parts.vae)
    trainer = Trainer(cfg, "bas", get_recipe(cfg, "bas"), coco_scene, parts=parts)
    trainer.setup()
    at_setup = list(calls)
    trainer.enter_phase("phase1")
    for _ in range(3):
        trainer.step()
    trainer.cleanup()
    per_step = calls[len(at_setup):]
    if cache:
        assert sum(at_setup) == 2 + 2 and per_step == []      # image + mirror, two class images; once
    else:
        assert at_setup == [] and per_step == [1, 1] * 3       # the class image and the scene, every step


def test_every_layer_capture_records_self_and_cross_attention(make_cfg, coco_scene, tiny_models_cfg):
    cfg = make_cfg((2, 2), **{"training.attention_capture": "every_layer"})
    parts = load_diffusion(tiny_models_cfg)
    trainer = Trainer(cfg, "bas", get_recipe(cfg, "bas"), coco_scene, parts=parts)
    trainer.setup()
    trainer.enter_phase("phase2")
    assert sorted(trainer.recording_processors) == sorted(parts.unet.attn_processors)
    loss, terms, _ = trainer.compute_losses()
    recorded = set(trainer.store.maps)
    assert {n.rsplit(".", 1)[1] for n in recorded} == {"attn1", "attn2"}
    assert len(recorded) == len(parts.unet.attn_processors)
    assert torch.isfinite(terms["attention"])                 # the loss read its cross-attention maps only
    trainer.cleanup()
    assert not any(type(p).__name__ == "RecordingAttnProcessor" for p in parts.unet.attn_processors.values())


def test_mean_map_reads_cross_attention_only():
    store = AttentionStore()
    store.record("up_blocks.1.attentions.0.transformer_blocks.0.attn1", torch.rand(1, 2, 64, 64))  # (B, heads, HW, HW)
    store.record("up_blocks.1.attentions.0.transformer_blocks.0.attn2", torch.ones(1, 2, 64, 77))  # (B, heads, HW, T)
    assert store.mean_map(["up_blocks.1.attentions.0"]).shape == (1, 64, 77)
    assert torch.equal(store.mean_map(), torch.ones(1, 64, 77))


def test_enter_phase_names_the_phases(make_cfg, coco_scene, tiny_models_cfg):
    cfg = make_cfg((1, 1))
    trainer = Trainer(cfg, "bas", get_recipe(cfg, "bas"), coco_scene, parts=load_diffusion(tiny_models_cfg))
    trainer.setup()
    with pytest.raises(BasError, match=r"no phase 'phase3'.*phase1, phase2"):
        trainer.enter_phase("phase3")
    state = trainer.enter_phase("phase2")
    record = trainer.step()
    assert state.name == record["phase"] == "phase2" and set(record["terms"]) == {"diffusion", "prior", "attention"}
    trainer.cleanup()
