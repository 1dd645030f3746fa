"""The `tiny` profile: the real model classes with tiny configs and seeded random weights.

Each model is built once, saved in its library's own format into a cache directory, and
then loaded through the very same loading code as the real weights (`registry.py`), so the
machinery unit tests exercise is exactly the real one. Numbers computed with these models
mean nothing.

Shapes are chosen so module *names* match SD 2.1: four UNet down blocks (three with cross
attention, two transformer layers each), three cross-attention up blocks of three layers.
The tiny model works at 128 px with a 4x VAE (latent 32x32), so SD's 16x16 layers
(`down_blocks.2`, `up_blocks.1`) are 8x8 here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import save_file

from bas.io import atomic_dir
from bas.models.coco_classes import PANOPTIC_LABELS
from bas.models.tokenizer import write_clip_tokenizer

# diffusers, transformers, open_clip and timm are imported by the builders: only when the tiny
# models are (re)built; the registry reads this module's names (TINY_VERSION, SCHEDULER_CONFIG) without them.

log = logging.getLogger(__name__)

# Bump when a tiny config changes, so stale caches are rebuilt rather than reused.
TINY_VERSION = 1

RESOLUTION = 128
TEXT_DIM = 32

SCHEDULER_CONFIG = dict(  # SD 2.1-base scheduler_config.json, values that matter
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False, steps_offset=1,
)

CLIP_MODEL_NAME = "bas-tiny-clip"
CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
DINO_KWARGS = dict(img_size=64, embed_dim=32, depth=2, num_heads=2)


def tiny_dir(cache_dir: Path, seed: int) -> Path:
    return cache_dir / f"tiny-v{TINY_VERSION}-seed{seed}"


def ensure_tiny(cache_dir: Path, seed: int) -> Path:
    """Build the tiny models under `cache_dir` unless already there; return their root."""
    root = tiny_dir(cache_dir, seed)
    if (root / "COMPLETE").exists():
        return root
    log.info("building tiny models in %s (seed %d)", root, seed)
    with atomic_dir(root) as tmp:
        _build_diffusion(tmp / "diffusion", seed)
        _build_clip(tmp / "clip", seed)
        _build_dino(tmp / "dino", seed)
        _build_maskformer(tmp / "maskformer", seed)
        (tmp / "COMPLETE").write_text(json.dumps({"version": TINY_VERSION, "seed": seed}) + "\n")
    return root


def _build_diffusion(root: Path, seed: int) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=RESOLUTION // 4,
        in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(32, 32, 64, 64),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_head_dim=(2, 2, 4, 4),  # diffusers' name for SD 2's head counts
        cross_attention_dim=TEXT_DIM, use_linear_projection=True, norm_num_groups=8,
    )
    unet.save_pretrained(root / "unet")
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        block_out_channels=(16, 32, 32), norm_num_groups=8, sample_size=RESOLUTION,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        scaling_factor=0.18215,
    )
    vae.save_pretrained(root / "vae")
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=TEXT_DIM, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=77, projection_dim=TEXT_DIM,
        hidden_act="gelu", pad_token_id=1, bos_token_id=49406, eos_token_id=49407,
    ))
    text_encoder.save_pretrained(root / "text_encoder")
    write_clip_tokenizer(root / "tokenizer")
    # SD 2.1-base ships this PNDM config; training reads it as DDPM and sampling as DDIM.
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "PNDMScheduler", "skip_prk_steps": True, **SCHEDULER_CONFIG}, indent=2))


def _build_clip(root: Path, seed: int) -> None:
    import open_clip

    root.mkdir(parents=True)
    (root / f"{CLIP_MODEL_NAME}.json").write_text(json.dumps(CLIP_CONFIG, indent=2))
    open_clip.add_model_config(root / f"{CLIP_MODEL_NAME}.json")
    torch.manual_seed(seed + 3)
    model = open_clip.create_model(CLIP_MODEL_NAME, pretrained=None)
    torch.save({"state_dict": model.state_dict()}, root / "open_clip_model.pt")


def _build_dino(root: Path, seed: int) -> None:
    import timm

    root.mkdir(parents=True)
    torch.manual_seed(seed + 4)
    model = timm.create_model("vit_base_patch16_224.dino", pretrained=False, **DINO_KWARGS)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, root / "model.safetensors")
    (root / "kwargs.json").write_text(json.dumps(DINO_KWARGS))


def _build_maskformer(root: Path, seed: int) -> None:
    from transformers import (DetrConfig, MaskFormerConfig, MaskFormerForInstanceSegmentation,
                              MaskFormerImageProcessor, SwinConfig)

    torch.manual_seed(seed + 5)
    id2label = dict(enumerate(PANOPTIC_LABELS))
    config = MaskFormerConfig(
        backbone_config=SwinConfig(
            image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
            window_size=4, out_features=["stage1", "stage2", "stage3", "stage4"],
        ),
        decoder_config=DetrConfig(
            d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=16,
        ),
        fpn_feature_size=32, mask_feature_size=32,
        id2label=id2label, label2id={v: k for k, v in id2label.items()},
    )
    MaskFormerForInstanceSegmentation(config).save_pretrained(root)
    MaskFormerImageProcessor(
        size={"shortest_edge": 64, "longest_edge": 64}, size_divisor=32, ignore_index=255,
        do_reduce_labels=False,
    ).save_pretrained(root)
