"""The sandbox's diffusion model: SD 2.1's classes and module names, sized for a CPU.

64x64 images through a 2x AutoencoderKL give 32x32 latents, the same latent side as the
tiny profile, so SD's 16x16 attention layers (`down_blocks.2`, `up_blocks.1`) are 8x8 here
and every method's layer names apply unchanged. Unlike SD, the finest level (32x32) has no
attention: it would cost half of every step on a CPU and no method reads it
(`bas.sandbox` docs, docs/SANDBOX.md).
"""

from __future__ import annotations

# diffusers and transformers are imported by the builders: bas.sandbox.train_diffusion (and through it
# the sandbox's scorers and checks) imports this module without building a model.

RESOLUTION = 64
TEXT_DIM = 64

UNET_CONFIG = dict(
    sample_size=RESOLUTION // 2, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(32, 64, 128, 128),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(2, 4, 4, 4),  # diffusers' name for the head counts, as in SD 2
    cross_attention_dim=TEXT_DIM, use_linear_projection=True, norm_num_groups=16,
)

VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
    block_out_channels=(32, 64), norm_num_groups=16, sample_size=RESOLUTION,
    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    mid_block_add_attention=False,  # self-attention over 32x32 latents would triple the VAE's cost
)

TEXT_CONFIG = dict(
    vocab_size=49408, hidden_size=TEXT_DIM, intermediate_size=4 * TEXT_DIM, num_hidden_layers=3,
    num_attention_heads=4, max_position_embeddings=77, projection_dim=TEXT_DIM,
    hidden_act="gelu", pad_token_id=1, bos_token_id=49406, eos_token_id=49407,
)


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**UNET_CONFIG)


def build_vae(scaling_factor: float = 1.0):
    from diffusers import AutoencoderKL

    return AutoencoderKL(**VAE_CONFIG, scaling_factor=scaling_factor)


def build_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
