"""The sandbox base-model trainer: reproducible from its seed, and a killed run resumes exactly."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import random

import pytest
import torch
from transformers import CLIPTokenizer

from bas.config import SandboxStage
from bas.models.tokenizer import write_clip_tokenizer
from bas.sandbox import train_diffusion as td
from tests import params_defaults

TINY = params_defaults.sandbox(vae=SandboxStage(3, 2, 1e-3, 1), base=SandboxStage(4, 2, 5e-4, 1), base_restart=None,
                               text_pretrain=SandboxStage(3, 8, 2e-3, 1))


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    write_clip_tokenizer(path)
    return CLIPTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
    model, metrics = td.train_vae(TINY, tmp_path_factory.mktemp("vae"), metric_batches=1)
    assert metrics["scaling_factor"] > 0 and metrics["psnr_db"] > 0
    assert model.config.scaling_factor == pytest.approx(metrics["scaling_factor"])
    return model


def _random_vae():
    from bas.sandbox import base_model

    torch.manual_seed(3)
    vae = base_model.build_vae().eval()
    with torch.no_grad():   # a trained encoder's log-variance is far from a fresh one's 0
        vae.quant_conv.bias[4:] += torch.tensor([-1.0, -2.0, -3.0, 0.5])
    return vae


@pytest.mark.parametrize("mode", ["deterministic", "deterministic_per_channel"])
def test_calibrated_vae_decodes_its_mean_as_before_with_no_posterior_noise(mode):
    vae = _random_vae()
    pixels = td.to_pixels(td.world_batch(0, "vae-heldout", 0, 4))
    with torch.no_grad():
        before_mean = vae.encode(pixels).latent_dist.mean
        before = vae.decode(before_mean).sample
    assert td.posterior_spread(vae, TINY, batches=1, batch_size=4)["max_ratio"] > 0.05
    calibration = td.calibrate_vae(vae, TINY, mode, batches=2)
    with torch.no_grad():
        dist = vae.encode(pixels).latent_dist
        after = vae.decode(dist.sample()).sample
    assert torch.allclose(after, before, atol=1e-3)   # the residual posterior noise, 4.5e-5
    assert float(dist.std.max()) < 1e-4
    spread = td.posterior_spread(vae, TINY, batches=1, batch_size=4)
    assert spread["max_ratio"] < 0.05
    if mode == "deterministic":
        assert torch.allclose(dist.mean, before_mean, atol=1e-6)
        assert calibration["scale"] == [1.0] * 4 and calibration["shift"] == [0.0] * 4
    else:
        # centred and unit per channel on the calibration renders; held-out ones come close
        shift, scale = torch.tensor(calibration["shift"]), torch.tensor(calibration["scale"])
        assert torch.allclose(dist.mean, (before_mean - shift.view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1), atol=1e-4)
        assert all(0.7 < s < 1.3 for s in spread["mean_std"])


def test_uncalibrated_vae_is_left_as_trained():
    vae = _random_vae()
    state = _state(vae)
    assert td.calibrate_vae(vae, TINY, "none") == {"mode": "none"}
    _assert_same(state, _state(vae))


def test_lr_schedule_warms_up_then_decays_to_a_tenth():
    stage = SandboxStage(steps=110, batch_size=1, lr=1.0, warmup_steps=10)
    assert td.lr_at(stage, 0) == pytest.approx(0.1)
    assert td.lr_at(stage, 9) == pytest.approx(1.0)
    assert td.lr_at(stage, 10) == pytest.approx(1.0)
    assert td.lr_at(stage, 60) == pytest.approx(0.55)
    assert td.lr_at(stage, 110) == pytest.approx(0.1)


def test_warm_restart_phase_follows_the_base_phase_with_its_own_cycle():
    cfg = dataclasses.replace(TINY, base=SandboxStage(100, 1, 1.0, 10), base_restart=SandboxStage(50, 1, 0.5, 5))
    phases = td.base_phases(cfg)
    assert td.phase_at(phases, 99) == (cfg.base, 99)
    assert td.phase_at(phases, 100) == (cfg.base_restart, 0)
    assert td.phase_at(phases, 149) == (cfg.base_restart, 49)
    assert td.lr_at(*td.phase_at(phases, 99)) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert td.lr_at(*td.phase_at(phases, 104)) == pytest.approx(0.5)       # re-warmed to the new peak
    assert td.lr_at(*td.phase_at(phases, 150)) == pytest.approx(0.05)      # and decayed to its tenth
    assert td.base_phases(TINY) == [TINY.base]


def test_world_batches_are_a_function_of_seed_stage_and_step():
    a = td.to_pixels(td.world_batch(0, "base", 5, 3))
    assert torch.equal(a, td.to_pixels(td.world_batch(0, "base", 5, 3)))
    assert not torch.equal(a, td.to_pixels(td.world_batch(0, "base", 6, 3)))
    assert not torch.equal(a, td.to_pixels(td.world_batch(1, "base", 5, 3)))
    assert a.shape == (3, 3, 64, 64) and a.min() >= -1 and a.max() <= 1


def test_vae_training_is_reproducible(tmp_path, vae):
    again, _ = td.train_vae(TINY, tmp_path, metric_batches=1)
    _assert_same(_state(vae), _state(again))


def test_base_training_is_reproducible_and_resumes_exactly(tmp_path, vae, tokenizer, monkeypatch):
    unet, text = td.train_base(TINY, vae, tokenizer, tmp_path / "straight", checkpoint_every=1)

    # Kill a second run at step 2 (after its step-2 checkpoint), then rerun: it must resume there
    # and end with exactly the weights of the uninterrupted run.
    real_batch = td.world_batch

    def killed_at_step_2(seed, stage, step, *args, **kwargs):
        if stage == "base" and step == 2:
            raise KeyboardInterrupt
        return real_batch(seed, stage, step, *args, **kwargs)

    monkeypatch.setattr(td, "world_batch", killed_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        td.train_base(TINY, vae, tokenizer, tmp_path / "killed", checkpoint_every=1)
    assert torch.load(tmp_path / "killed" / "base.pt", weights_only=False)["step"] == 2
    monkeypatch.setattr(td, "world_batch", real_batch)
    resumed_unet, resumed_text = td.train_base(TINY, vae, tokenizer, tmp_path / "killed", checkpoint_every=1)
    _assert_same(_state(unet), _state(resumed_unet))
    _assert_same(_state(text), _state(resumed_text))


def test_a_warm_restart_extends_a_finished_run_exactly(tmp_path, vae, tokenizer):
    # The committed base model was trained this way: `base` to the end, then `base_restart`
    # added to the params and the same command rerun. It must equal one uninterrupted run.
    two_phases = dataclasses.replace(TINY, base=SandboxStage(2, 2, 5e-4, 1), base_restart=SandboxStage(2, 2, 2e-4, 1))
    unet, text = td.train_base(two_phases, vae, tokenizer, tmp_path / "straight")
    first_only = dataclasses.replace(two_phases, base_restart=None)
    td.train_base(first_only, vae, tokenizer, tmp_path / "extended")
    assert torch.load(tmp_path / "extended" / "base.pt", weights_only=False)["step"] == 2
    extended_unet, extended_text = td.train_base(two_phases, vae, tokenizer, tmp_path / "extended")
    assert torch.load(tmp_path / "extended" / "base.pt", weights_only=False)["step"] == 4
    _assert_same(_state(unet), _state(extended_unet))
    _assert_same(_state(text), _state(extended_text))


def test_saved_model_is_fp16_safetensors_with_its_record(tmp_path, vae, tokenizer):
    unet, text = td.train_base(dataclasses.replace(TINY, base=SandboxStage(1, 2, 5e-4, 0)), vae, tokenizer,
                               tmp_path / "work")
    record = {"seed": 0, "validity": {"vae_psnr_db": 1.0}}
    td.save_diffusion(tmp_path / "diffusion", vae, unet, text, record)
    out = tmp_path / "diffusion"
    for name in ("unet", "vae", "text_encoder"):
        assert (out / name / "diffusion_pytorch_model.safetensors").exists() or \
            (out / name / "model.safetensors").exists()
    from safetensors.torch import load_file

    weights = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float16}
    assert (out / "tokenizer" / "vocab.json").exists()
    assert '"seed": 0' in (out / "training_record.json").read_text()


def test_train_stages_write_the_model_and_a_record_of_how_it_was_made(tmp_path):
    from bas import config
    from bas.sandbox.stages import read_record, run_stages

    # Whole stages replace params.yaml's; the rest of `sandbox` is params.yaml's.
    sandbox = {"vae": {"steps": 2, "batch_size": 2, "lr": 1e-3, "warmup_steps": 0},
               "base": {"steps": 2, "batch_size": 2, "lr": 5e-4, "warmup_steps": 0}, "base_restart": None,
               "text_pretrain": {"steps": 2, "batch_size": 8, "lr": 2e-3, "warmup_steps": 0}}
    cfg = config.load(overrides={"models.sandbox_weights": str(tmp_path / "weights"), **{f"sandbox.{k}": v for k, v in sandbox.items()}})
    run_stages(cfg, ["vae", "base"], tmp_path / "work")
    record = read_record(tmp_path / "weights" / "diffusion")
    assert record["base_resumed_at_step"] == 0 and record["params"]["base_restart"] is None
    assert record["params"]["base"]["steps"] == 2 and record["validity"]["vae_psnr_db"] > 0
    # More compute later: a warm restart continues the finished run, and the record says from where.
    sandbox["base_restart"] = {"steps": 1, "batch_size": 2, "lr": 1e-4, "warmup_steps": 0}
    cfg = config.load(overrides={"models.sandbox_weights": str(tmp_path / "weights"), **{f"sandbox.{k}": v for k, v in sandbox.items()}})
    run_stages(cfg, ["vae", "base"], tmp_path / "work")
    record = read_record(tmp_path / "weights" / "diffusion")
    assert record["base_resumed_at_step"] == 2 and record["params"]["base_restart"]["steps"] == 1


def test_rendering_in_worker_processes_changes_nothing(tmp_path, vae, tokenizer):
    # A GPU run renders batches ahead in worker processes; each batch is a function of its step,
    # so the trained weights must be exactly those of rendering inline.
    inline_vae, _ = td.train_vae(TINY, tmp_path / "vae-inline", metric_batches=1)
    worker_vae, _ = td.train_vae(TINY, tmp_path / "vae-workers", metric_batches=1, workers=2)
    _assert_same(_state(inline_vae), _state(worker_vae))
    unet, text = td.train_base(TINY, vae, tokenizer, tmp_path / "inline")
    worker_unet, worker_text = td.train_base(TINY, vae, tokenizer, tmp_path / "workers", workers=2)
    _assert_same(_state(unet), _state(worker_unet))
    _assert_same(_state(text), _state(worker_text))


def test_step_batches_come_in_step_order_from_workers():
    make = functools.partial(pow, 2)
    assert list(td.step_batches(make, 3, 9, workers=2)) == [2**k for k in range(3, 9)]
    assert list(td.step_batches(make, 3, 9, workers=0)) == [2**k for k in range(3, 9)]
    assert list(td.step_batches(make, 9, 9, workers=2)) == []


def test_base_batch_follows_the_phase_of_its_global_step():
    cfg = dataclasses.replace(TINY, base=SandboxStage(2, 3, 5e-4, 1), base_restart=SandboxStage(2, 1, 5e-4, 1))
    pixels, captions, share = td.base_batch(cfg, 1)
    assert pixels.shape == (3, 3, 64, 64) and len(captions) == 3 and share.shape == (3, 1, 32, 32)
    pixels, captions, share = td.base_batch(cfg, 2)          # the restart's batch size
    assert pixels.shape == (1, 3, 64, 64) and len(captions) == 1
    assert 0 < share.mean() < 1 and share.min() >= 0 and share.max() <= 1   # objects cover part of the image
    again, again_captions, _ = td.base_batch(cfg, 2)
    assert torch.equal(pixels, again) and captions == again_captions


def test_device_and_workers_are_checked_before_any_training():
    from bas.errors import ConfigError
    from bas.sandbox.stages import device_record, resolve_device, resolve_workers

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="--device 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(ConfigError, match="--device 'gpu please'"):
        resolve_device("gpu please")
    with pytest.raises(ConfigError, match="--device 'meta': the sandbox trainers run on cpu or cuda"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="torch sees no CUDA GPU"):
            resolve_device("cuda")
    assert resolve_workers(None, torch.device("cpu")) == 0
    assert 1 <= resolve_workers(None, torch.device("cuda")) <= 8 or (os.cpu_count() or 1) == 1
    assert resolve_workers(3, torch.device("cpu")) == 3
    with pytest.raises(ConfigError, match="--workers -1"):
        resolve_workers(-1, torch.device("cpu"))
    record = device_record("cpu", workers=3)
    assert record["device"] == "cpu" and record["render_workers"] == 3 and "gpu" not in record
    assert "render_workers" not in device_record("cpu")


def test_a_frozen_text_encoder_is_pretrained_then_left_as_it_is(tmp_path, vae, tokenizer):
    """`base_text: frozen`: the encoder learns the caption objective first (its accuracies go in
    the record), then only the UNet trains: the saved encoder is the pretrained one."""
    frozen = dataclasses.replace(TINY, base_text="frozen", text_pretrain=SandboxStage(3, 8, 2e-3, 1))
    record: dict = {}
    unet, text = td.train_base(frozen, vae, tokenizer, tmp_path / "frozen", record=record)
    assert set(record["text_pretrain"]) == {"shape", "colour", "pattern", "background"}

    from bas.sandbox import base_model
    from bas.sandbox.text_pretrain import pretrain_text_encoder

    torch.manual_seed(frozen.seed + 1)
    base_model.build_unet()
    pretrained = base_model.build_text_encoder()
    pretrain_text_encoder(pretrained, tokenizer, frozen.seed, frozen.text_pretrain, tmp_path / "alone")
    _assert_same(_state(text), _state(pretrained))
    joint_unet, joint_text = td.train_base(dataclasses.replace(TINY, base_text="joint"), vae, tokenizer, tmp_path / "joint")
    assert not all(torch.equal(a, b) for a, b in zip(_state(text).values(), _state(joint_text).values()))


def test_object_pixels_weigh_more_with_an_object_loss_weight():
    pred, noise = torch.zeros(2, 4, 8, 8), torch.ones(2, 4, 8, 8)
    noise[:, :, :4] = 3.0                                     # the error is larger on the object half
    share = torch.zeros(2, 1, 8, 8)
    share[:, :, :4] = 1.0
    weights = torch.tensor([1.0, 0.5])
    plain = td.diffusion_loss(pred, noise, weights, share, 1.0)
    assert plain.item() == pytest.approx(((9 + 1) / 2) * 0.75)          # (B,) weights averaged: (1 + 0.5) / 2
    heavy = td.diffusion_loss(pred, noise, weights, share, 3.0)
    assert heavy.item() == pytest.approx(((3 * 9 + 1) / 4) * 0.75)       # object pixels count 3 times
    assert td.diffusion_loss(pred, noise, weights, torch.zeros_like(share), 3.0).item() == pytest.approx(plain.item())


def test_the_base_layout_sets_object_counts_and_sides():
    from bas.config import SandboxLayout

    one_large = params_defaults.sandbox_layout(counts=(1,), count_probs=(1.0,), sides=(40, 48))
    images = td.world_batch(0, "layout", 0, 16, layout=one_large)
    assert all(len(w.objects) == 1 for w in images)
    assert all(40 <= w.boxes[0][2] <= 48 and w.masks[0].any() for w in images)
    # No layout: the world's own draw (the VAE's and the first base model's), 1-4 objects of 16-40 px.
    default = td.world_batch(0, "layout", 0, 16)
    worlds = params_defaults.sandbox_layout(counts=(1, 2, 3, 4), count_probs=(0.3, 0.35, 0.25, 0.1), sides=(16, 40))
    assert [w.caption(random.Random(0)) for w in default] == \
        [w.caption(random.Random(0)) for w in td.world_batch(0, "layout", 0, 16, layout=worlds)]
    # params.yaml's layout (the committed model's: 1-3 objects of 20-44 px) is another draw.
    committed = td.world_batch(0, "layout", 0, 64, layout=params_defaults.sandbox_layout())
    assert {len(w.objects) for w in committed} <= {1, 2, 3}
    assert all(20 <= side <= 44 for w in committed for side in (b[2] for b in w.boxes))
