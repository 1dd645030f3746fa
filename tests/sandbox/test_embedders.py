"""The sandbox CLIP and DINO: their loss, their inputs, and reproducible, resumable training."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bas.config import Config, SandboxStage
from bas.sandbox import embedders, world
from bas.sandbox.train_diffusion import world_batch
from tests import params_defaults


def test_aligned_embeddings_give_the_known_loss():
    # Orthonormal, perfectly aligned pairs: each row's logits are s on the diagonal and 0
    # elsewhere, so the loss in either direction is log(1 + (B - 1) e^-s).
    emb, scale = torch.eye(5, dtype=torch.float64), 3.0
    expected = math.log(1 + 4 * math.exp(-scale))
    assert embedders.contrastive_loss(emb, emb, scale).item() == pytest.approx(expected, rel=1e-6)


def test_loss_is_symmetric_and_rewards_alignment():
    gen = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(6, 8, generator=gen), dim=-1)
    b = F.normalize(torch.randn(6, 8, generator=gen), dim=-1)
    assert embedders.contrastive_loss(a, b, 5.0).item() == pytest.approx(embedders.contrastive_loss(b, a, 5.0).item())
    assert embedders.contrastive_loss(a, a, 5.0) < embedders.contrastive_loss(a, b, 5.0)


def test_a_caption_twice_in_a_batch_is_as_if_marked_positive():
    # Images 0 and 1 share a caption, so their text embeddings are identical. Treating the
    # pair as positives (each row's target uniform over its duplicates) would change nothing:
    # same loss, same gradient as the plain one-hot targets.
    gen = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(4, 3, generator=gen, dtype=torch.float64), dim=-1).requires_grad_(True)
    texts = F.normalize(torch.randn(4, 3, generator=gen, dtype=torch.float64), dim=-1)
    texts = torch.cat([texts[:1], texts[:1], texts[2:]])
    positives = torch.eye(4, dtype=torch.float64)
    positives[0, 1] = positives[1, 0] = 1
    target = positives / positives.sum(1, keepdim=True)
    logits = 3.0 * images @ texts.T
    marked = (-(target * logits.log_softmax(1)).sum(1).mean() - (target * logits.T.log_softmax(1)).sum(1).mean()) / 2
    (marked_grad,) = torch.autograd.grad(marked, images)
    plain = embedders.contrastive_loss(images, texts, 3.0)
    (plain_grad,) = torch.autograd.grad(plain, images)
    assert plain.item() == pytest.approx(marked.item(), rel=1e-12)
    assert torch.allclose(plain_grad, marked_grad, atol=1e-12)


def test_training_inputs_are_what_scoring_shows(tmp_path):
    import timm

    images = np.stack([w.image for w in world_batch(0, "test", 0, 4, identities=world.ALL_IDENTITIES)])
    _, clip_preprocess = embedders.build_clip(tmp_path, 0)
    dino, dino_transform = embedders.build_dino(0, crop_pct=1.0)
    embedders.Normalizer(clip_preprocess).check(images)
    embedders.Normalizer(dino_transform).check(images)
    # timm's default centre crop would cut the border off: no longer a pure normalisation.
    cropping = timm.data.create_transform(**timm.data.resolve_data_config({"crop_pct": 0.875}, model=dino))
    with pytest.raises(RuntimeError, match="not a normalisation"):
        embedders.Normalizer(cropping).check(images)


def test_dino_views_are_the_object_alone_on_black():
    identity = world.Identity("star", "green", "striped")
    view = embedders.render_view(np.random.default_rng(0), identity, [world.Identity("circle", "red", "plain")])
    lit = view.any(-1)
    assert 0 < lit.mean() < 0.7
    colours = {tuple(c) for c in view[lit]}
    assert world.COLOURS["green"] in colours


def test_class_prompt_is_the_scoring_prompt():
    from bas.generation.grid import class_phrase

    template = "a photo of {tokens} at the beach"
    assert embedders.class_prompt(["circle", "square"], "beach") == template.format(
        tokens=class_phrase(["circle", "square"]))


def test_pair_auc():
    emb = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), dim=-1)
    assert embedders.pair_auc(emb, [0, 0, 1, 1]) == 1.0
    # Positives (0, 2) at cos 0 and (1, 3) at 0.22 against negatives at 0.99, 0.11, 0.11, 0.99:
    # 0 + 2 wins of 8 comparisons.
    assert embedders.pair_auc(emb, [0, 1, 0, 1]) == pytest.approx(0.25)
    # Only negatives of one kind: (0, 3) and (1, 2), both at 0.11.
    only = np.array([[False, False, False, True], [False, False, True, False],
                     [False, True, False, False], [True, False, False, False]])
    assert embedders.pair_auc(emb, [0, 1, 0, 1], only) == pytest.approx(0.5)


# --------------------------------------------------------------------------- training


@pytest.fixture
def small(monkeypatch):
    """Pools and held-out sets of a few images, so a training run takes seconds."""
    monkeypatch.setattr(embedders, "CLIP_POOL_IMAGES", 64)
    monkeypatch.setattr(embedders, "CLIP_HELDOUT_IMAGES", 12)
    monkeypatch.setattr(embedders, "DINO_POOL_VIEWS", 2)
    monkeypatch.setattr(embedders, "DINO_HELDOUT_VIEWS", 2)


def small_cfg(tmp_path, seed: int = 0) -> Config:
    cfg = params_defaults.params()
    stage = SandboxStage(steps=4, batch_size=4, lr=1e-3, warmup_steps=1)
    return dataclasses.replace(
        cfg, sandbox=dataclasses.replace(cfg.sandbox, seed=seed, clip=stage, dino=stage),
        models=dataclasses.replace(cfg.models, profile="sandbox", sandbox_weights=str(tmp_path / "weights")))


TRAINERS = {"clip": (embedders.train_clip, "clip_batch"), "dino": (embedders.train_dino, "dino_batch")}


def final_state(work_dir, stage):
    return torch.load(work_dir / f"{stage}.pt", weights_only=False)["model"]


@pytest.mark.parametrize("stage", ["clip", "dino"])
def test_training_is_reproducible_and_resumes_exactly(stage, tmp_path, monkeypatch, small):
    train, batch_fn = TRAINERS[stage]
    cfg = small_cfg(tmp_path)
    whole = train(cfg, tmp_path / "whole", tmp_path / "out-whole", checkpoint_every=1)

    # The same run, killed after step 2 and started again: it resumes from its checkpoint.
    real = getattr(embedders, batch_fn)

    def dies_at_step_2(*args):
        if args[2] == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(embedders, batch_fn, dies_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed", tmp_path / "out-killed", checkpoint_every=1)
    assert not (tmp_path / "out-killed").exists()
    monkeypatch.setattr(embedders, batch_fn, real)
    resumed = train(cfg, tmp_path / "killed", tmp_path / "out-killed", checkpoint_every=1)

    assert (whole["resumed_at"], resumed["resumed_at"]) == (0, 2)
    a, b = final_state(tmp_path / "whole", stage), final_state(tmp_path / "killed", stage)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert whole["validity"] == resumed["validity"]
    assert (tmp_path / "out-whole" / "training_record.json").exists()

    other = train(small_cfg(tmp_path, seed=1), tmp_path / "other", tmp_path / "out-other")
    c = final_state(tmp_path / "other", stage)
    assert other["seed"] == 1 and not all(torch.equal(a[k], c[k]) for k in a)


def test_record_says_how_the_model_was_made(tmp_path, small):
    record = embedders.train_clip(small_cfg(tmp_path), tmp_path / "work", tmp_path / "clip")
    assert record["seed"] == 0 and record["steps"] == 4
    assert record["params"]["clip"] == {"steps": 4, "batch_size": 4, "lr": 1e-3, "warmup_steps": 1}
    assert record["device"]["device"] == "cpu" and record["wall_time_s"] > 0
    validity = record["validity"]
    assert 0 <= validity["caption_top1"] <= 1 and 0 <= validity["class_prompt_top1"] <= 1
    # a class prompt is right only when its context and its shapes are: each half at least as often
    assert validity["class_prompt_context_top1"] >= validity["class_prompt_top1"]
    assert validity["class_prompt_shapes_top1"] >= validity["class_prompt_top1"]
    assert validity["heldout_images"] == 12
    # Re-measuring the saved weights gives the recorded figures.
    assert embedders.measure_clip(tmp_path / "clip", small_cfg(tmp_path)) == validity
