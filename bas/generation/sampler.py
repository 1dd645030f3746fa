"""The BaS sampler: DDIM with classifier-free guidance, batched over prompts.

Written out rather than taken from `StableDiffusionPipeline` so that every method shares
exactly one sampler, whose per-image noise depends only on that image's seed: the initial
latent of each image is drawn from its own CPU generator, so batching never changes which
noise an image starts from.

Batch invariance: the initial noise never depends on the batch, but the model's CPU kernels
do, in the last bits: a convolution over few channels (the UNet's `conv_in`, 4 channels) and
the timestep MLP (M = batch rows) take different code paths for different batch sizes. So an
image made in a batch of 8 can differ by one grey level somewhere from the same image made
alone. `sample_ddim(..., batch_invariant=True)` therefore runs every model call on one image
(its uncond + cond pair): the image is then a function of (model, prompt, seed, sampler
settings) only, and regenerating it alone gives the same bytes on the same machine, library
versions and thread count. `generation.batch_invariant: auto` does that on CPU and batches on
GPU, where speed matters and bitwise equality across batch sizes is not promised.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image


def encode_prompts(parts, prompts: Sequence[str], device: torch.device) -> torch.Tensor:
    """Text-encoder hidden states for `prompts`, padded to the tokenizer's length."""
    ids = parts.tokenizer(
        list(prompts), padding="max_length", max_length=parts.tokenizer.model_max_length,
        truncation=True, return_tensors="pt",
    ).input_ids.to(device)                                     # (B, 77)
    return parts.text_encoder(ids)[0]                          # (B, 77, D)


def initial_latents(parts, seeds: Sequence[int]) -> torch.Tensor:
    """One latent per seed, each from its own CPU generator (batch-size independent)."""
    side = parts.resolution // parts.vae_scale_factor
    channels = parts.unet.config.in_channels
    latents = [
        torch.randn((1, channels, side, side), generator=torch.Generator("cpu").manual_seed(int(seed)))
        for seed in seeds
    ]
    return torch.cat(latents)                                  # (B, 4, h, w)


def decode_latents(parts, latents: torch.Tensor) -> list[Image.Image]:
    images = parts.vae.decode(latents / parts.vae_scaling_factor).sample   # (B, 3, H, W) in [-1, 1]
    images = (images.float() / 2 + 0.5).clamp(0, 1)
    array = (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in array]


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    if device.type == "cuda" and dtype is not None:
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


@torch.no_grad()
def denoise(parts, cond: torch.Tensor, uncond: torch.Tensor, latents: torch.Tensor, steps: int,
            guidance_scale: float, step_callback: Optional[Callable] = None) -> torch.Tensor:
    """Run `steps` DDIM steps with CFG from `latents`; returns the final latents.

    `step_callback(i, t, latents) -> latents`, if given, may alter the latents before each
    step (box-controlled samplers optimise them there).
    """
    # diffusers: only when sampling (bas.sandbox.validity and mifo_box import this module)
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(parts.sampler_scheduler.config)  # own state per call
    scheduler.set_timesteps(steps, device=latents.device)
    latents = latents * scheduler.init_noise_sigma
    context = torch.cat([uncond, cond])                        # (2B, 77, D)
    for i, t in enumerate(scheduler.timesteps):
        if step_callback is not None:
            latents = step_callback(i, t, latents)
        model_in = scheduler.scale_model_input(torch.cat([latents, latents]), t)  # (2B, 4, h, w)
        noise = parts.unet(model_in, t, encoder_hidden_states=context).sample
        noise_uncond, noise_cond = noise.chunk(2)
        noise = noise_uncond + guidance_scale * (noise_cond - noise_uncond)
        latents = scheduler.step(noise, t, latents).prev_sample
    return latents


@torch.no_grad()
def generate(parts, prompts: Sequence[str], seeds: Sequence[int], *, steps: int, guidance_scale: float,
             batch_size: int, negative_prompt: str = "", dtype: Optional[torch.dtype] = None) -> list[Image.Image]:
    """Images for `prompts`, one per (prompt, seed) pair, in order; batches of `batch_size`.

    `steps` and `guidance_scale` have no defaults: the caller reads them from params.yaml
    (`generation`, `training.prior_images`, `sandbox.validity_*`)."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    device = parts.unet.device
    images: list[Image.Image] = []
    for start in range(0, len(prompts), batch_size):
        batch_prompts = list(prompts[start : start + batch_size])
        batch_seeds = list(seeds[start : start + batch_size])
        with _autocast(device, dtype):
            cond = encode_prompts(parts, batch_prompts, device)
            uncond = encode_prompts(parts, [negative_prompt] * len(batch_prompts), device)
            latents = initial_latents(parts, batch_seeds).to(device, cond.dtype)
            latents = denoise(parts, cond, uncond, latents, steps, guidance_scale)
            images.extend(decode_latents(parts, latents.to(parts.vae.dtype)))
    return images


def sample_ddim(parts, items, scene, gen, *, dtype: Optional[torch.dtype] = None,
                batch_invariant: bool = True) -> list[Image.Image]:
    """The `ddim` entry of the sampler registry: one image per grid item, in order."""
    del scene  # plain DDIM has no spatial control
    prompts = [item.prompt for item in items]
    seeds = [item.seed for item in items]
    return generate(parts, prompts, seeds, steps=gen.steps, guidance_scale=gen.guidance_scale,
                    batch_size=1 if batch_invariant else max(1, len(items)),
                    negative_prompt=gen.negative_prompt, dtype=dtype)
