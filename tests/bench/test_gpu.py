"""bench/gpu.py's full-size architectures, built on the `meta` device (no GPU, no memory):
they are SD 2.1-base and the scorers the protocol names, by parameter count and FLOPs."""

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bas.models.sd21_architectures import build_diffusion, build_scorers, parameter_count  # noqa: E402
from bench import gpu  # noqa: E402


@pytest.fixture(scope="module")
def parts():
    return build_diffusion("meta")


def test_sd21_base_architecture(parts):
    # stabilityai/stable-diffusion-2-1-base: UNet 865.9M, VAE 83.7M, text encoder 340.4M parameters.
    assert parameter_count(parts.unet) == 865_910_724
    assert parameter_count(parts.vae) == 83_653_863
    assert parameter_count(parts.text_encoder) == 340_387_840
    assert all(p.device.type == "meta" for p in parts.unet.parameters())
    assert parts.resolution == 512 and parts.vae_scaling_factor == 0.18215
    assert parts.tokenizer("a photo").input_ids == [49406, 320, 1125, 49407]
    assert parts.noise_scheduler.config.prediction_type == "epsilon"
    # The attention-loss layers of params.yaml are SD's 16x16 cross-attention layers here.
    assert "up_blocks.1.attentions.2.transformer_blocks.0.attn2.processor" in parts.unet.attn_processors


def test_sampler_flops_match_the_unet(parts):
    # One SD UNet forward at 64x64 latents is ~0.8 TFLOPs a sample; an image of the 50-step CFG
    # sampler is 100 of them plus the prompts and one VAE decode.
    one_step = gpu.sampler_flops_per_image(parts, steps=1)
    fifty = gpu.sampler_flops_per_image(parts, steps=50)
    unet_pair = (fifty - one_step) / 49
    assert 1.5e12 < unet_pair < 1.7e12
    assert 80e12 < fifty < 86e12


def test_full_size_scorers():
    scorers = build_scorers("meta")
    assert parameter_count(scorers.clip_model) == 427_616_513           # open_clip ViT-L-14
    assert parameter_count(scorers.dino_model) == 85_798_656            # ViT-B/16, no head
    assert 210e6 < parameter_count(scorers.maskformer) < 213e6          # MaskFormer Swin-L (212M)
    backbone = scorers.maskformer.config.backbone_config
    assert (backbone.embed_dim, backbone.depths, backbone.num_heads, backbone.window_size) == (
        192, [2, 2, 18, 2], [6, 12, 24, 48], 12)
    assert len(scorers.panoptic_id2label) == 133


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.0),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA GeForce RTX 3090", None),
])
def test_dense_bf16_peak_by_device_name(name, peak):
    assert gpu.dense_bf16_peak(name)[0] == peak
    assert gpu.dense_bf16_peak(name, override=500.0) == (500.0, "--peak-tflops")


def test_limit_fields():
    out = gpu.limit_fields(989e12, 989.0, measured_s=4.0)
    assert out["limit_s"] == pytest.approx(1.0) and out["fraction_of_limit"] == pytest.approx(0.25)
    assert "limit_s" not in gpu.limit_fields(1e12, None)


def test_without_a_gpu_the_script_says_what_to_do(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        gpu.main(["--quick"])
    assert "--flops-only" in capsys.readouterr().err
