"""The full-size architectures of the `sd21` profile, as data, with random-weight builders.

The same shapes as the real checkpoints (so the same FLOPs and memory) without downloading
them: `bench/gpu.py` times the protocol on these. The configs are those of
stable-diffusion-2-1-base (unet, vae, text_encoder; sd2-community copy), open_clip ViT-L/14, timm
vit_base_patch16_224.dino and facebook/maskformer-swin-large-coco.

    parts = build_diffusion("cuda")     # DiffusionParts, random weights, fp32
    scorers = build_scorers("cuda")     # ScorerParts, random weights
    build_diffusion("meta")             # shapes only: parameter counts, FLOP counts, no memory

Numbers computed with these weights mean nothing; their speed is the real models' speed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional, Union

import torch

from bas.models.coco_classes import PANOPTIC_LABELS
from bas.models.registry import DiffusionParts, ScorerParts, protocol_sampler
from bas.models.tiny import SCHEDULER_CONFIG
from bas.models.tokenizer import write_clip_tokenizer

# diffusers, transformers, open_clip and timm are imported by the builders that use them: the
# configs here are read as data (`bas models check`'s parameter counts) without loading them.

# stable-diffusion-2-1-base/unet/config.json (865.9M parameters)
SD21_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(5, 10, 20, 20),   # diffusers' name for SD 2's head counts (64 channels a head)
    cross_attention_dim=1024, use_linear_projection=True, norm_num_groups=32, norm_eps=1e-5,
    act_fn="silu", flip_sin_to_cos=True, freq_shift=0, downsample_padding=1, center_input_sample=False,
)

# stable-diffusion-2-1-base/vae/config.json (83.7M parameters)
SD21_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=32, act_fn="silu", sample_size=512, scaling_factor=0.18215,
)

# stable-diffusion-2-1-base/text_encoder/config.json: OpenCLIP ViT-H/14's text tower without
# its last layer (340.4M parameters)
SD21_TEXT_ENCODER = dict(
    vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
    num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512,
    layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2,
)

# open_clip model names (random weights: pretrained=None)
CLIP_MODEL = "ViT-L-14"                    # 427.6M parameters
DINO_MODEL = "vit_base_patch16_224.dino"   # timm, 85.8M parameters

# facebook/maskformer-swin-large-coco: Swin-L backbone, DETR-style decoder, COCO panoptic (133)
MASKFORMER_SWIN_L_BACKBONE = dict(
    image_size=384, patch_size=4, embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48],
    window_size=12, out_features=["stage1", "stage2", "stage3", "stage4"],
)
MASKFORMER_SWIN_L = dict(fpn_feature_size=256, mask_feature_size=256)  # decoder: DETR defaults, 100 queries
MASKFORMER_PROCESSOR = dict(
    size={"shortest_edge": 800, "longest_edge": 1333}, size_divisor=32, ignore_index=255, do_reduce_labels=False,
)

Device = Union[str, torch.device]


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _tokenizer(directory: Optional[Path]):
    from transformers import CLIPTokenizer

    if directory is None:
        with tempfile.TemporaryDirectory(prefix="bas-tokenizer-") as tmp:
            write_clip_tokenizer(Path(tmp) / "tokenizer")
            return CLIPTokenizer.from_pretrained(Path(tmp) / "tokenizer")
    if not (Path(directory) / "vocab.json").exists():
        write_clip_tokenizer(Path(directory))
    return CLIPTokenizer.from_pretrained(directory)


def build_diffusion(device: Device = "cpu", seed: int = 0, tokenizer_dir: Optional[Path] = None):
    """SD 2.1-base's UNet, VAE and text encoder with seeded random fp32 weights on `device`
    (`meta`: shapes only), the CLIP tokenizer and the protocol's schedulers."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(**SD21_UNET)
        vae = AutoencoderKL(**SD21_VAE)
        text_encoder = CLIPTextModel(CLIPTextConfig(**SD21_TEXT_ENCODER))
    noise_scheduler = DDPMScheduler.from_config(SCHEDULER_CONFIG)
    for module in (unet, vae, text_encoder):
        module.eval()
    return DiffusionParts(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=_tokenizer(tokenizer_dir),
                          noise_scheduler=noise_scheduler, sampler_scheduler=protocol_sampler(noise_scheduler),
                          profile="sd21-random")


def maskformer_config():
    from transformers import MaskFormerConfig, SwinConfig

    id2label = dict(enumerate(PANOPTIC_LABELS))
    return MaskFormerConfig(backbone_config=SwinConfig(**MASKFORMER_SWIN_L_BACKBONE), id2label=id2label,
                            label2id={v: k for k, v in id2label.items()}, **MASKFORMER_SWIN_L)


def build_scorers(device: Device = "cpu", seed: int = 0):
    """Full-size CLIP ViT-L/14, DINO ViT-B/16 and MaskFormer Swin-L with random weights, eval mode."""
    import open_clip
    import timm
    from transformers import MaskFormerForInstanceSegmentation, MaskFormerImageProcessor

    torch.manual_seed(seed)
    # open_clip moves the model itself; on `meta` it must be built there, not moved there.
    clip_model, _, clip_preprocess = open_clip.create_model_and_transforms(CLIP_MODEL, pretrained=None,
                                                                          device=torch.device(device))
    with torch.device(device):
        dino_model = timm.create_model(DINO_MODEL, pretrained=False, num_classes=0)
        maskformer = MaskFormerForInstanceSegmentation(maskformer_config())
    data_cfg = timm.data.resolve_data_config({}, model=dino_model)
    for module in (clip_model, dino_model, maskformer):
        module.eval()
    return ScorerParts(clip_model=clip_model, clip_preprocess=clip_preprocess,
                       clip_tokenizer=open_clip.get_tokenizer(CLIP_MODEL), dino_model=dino_model,
                       dino_transform=timm.data.create_transform(**data_cfg), maskformer=maskformer,
                       maskformer_processor=MaskFormerImageProcessor(**MASKFORMER_PROCESSOR),
                       profile="sd21-random")
