"""Loss terms: pure functions of tensors. The engine only adds up weighted terms.

Each function takes the tensors it needs and returns a scalar; nothing here reads params,
models or global state. Resolutions are taken from the tensors, never from constants, so
the same code serves SD 2.1 (64x64 latents, 16x16 maps) and the tiny profile (32x32, 8x8).
Successor methods (MIFO, Textual Localization, Separate-and-Enhance) add their terms here
in the same style.
"""

from __future__ import annotations

from typing import Literal, Optional, Sequence

import torch
import torch.nn.functional as F

Normalise = Literal["all_elements", "mask_area"]


def downsample_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest-neighbour resize of masks (..., H, W) to (..., size, size), as float.

    `F.interpolate(mode="nearest")` is what the BaS code uses for both the latent and the
    16x16 attention masks: a binary mask stays binary.
    """
    lead = mask.shape[:-2]
    flat = mask.float().reshape(-1, 1, *mask.shape[-2:])                 # (n, 1, H, W)
    small = F.interpolate(flat, size=(size, size), mode="nearest")      # (n, 1, s, s)
    return small.reshape(*lead, size, size)


def masked_diffusion_loss(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None,
                          normalise: Normalise = "all_elements") -> torch.Tensor:
    """MSE between `pred` and `target` (B, C, h, w) counted only where `mask` (B, 1, h, w) is 1.

    all_elements (BaS code): mean of (pred*M - target*M)^2 over every element, so a small
    mask gives a small loss. mask_area: the sum divided by the number of masked elements
    (mask area x channels), a per-pixel error independent of the mask's size.
    `mask=None` is the plain full-image loss.
    """
    pred, target = pred.float(), target.float()
    if mask is None:
        return F.mse_loss(pred, target, reduction="mean")
    mask = mask.to(pred.dtype).expand_as(pred)                           # (B, C, h, w)
    if normalise == "all_elements":
        return F.mse_loss(pred * mask, target * mask, reduction="mean")
    if normalise == "mask_area":
        squared = ((pred - target) ** 2 * mask).sum()
        return squared / mask.sum().clamp_min(1.0)
    raise ValueError(f"unknown normalisation {normalise!r}")


def prior_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Prior preservation: the plain, unmasked MSE on the class images' predictions."""
    return F.mse_loss(pred.float(), target.float(), reduction="mean")


def bas_attention_loss(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """BaS cross-attention loss for one sample.

    maps: (k, HW) cross-attention of each sampled token, averaged over the heads and the
    layers read (HW a square). masks: (k, H, W) the tokens' masks at any resolution.
    Each map is divided by its maximum, its mask nearest-downsampled to the map's side;
    the loss is the MSE of each pair (mean over pixels) summed over the k tokens.
    """
    k, hw = maps.shape
    side = int(round(hw ** 0.5))
    if side * side != hw:
        raise ValueError(f"attention maps of {hw} pixels are not square")
    if masks.shape[0] != k:
        raise ValueError(f"{k} attention maps but {masks.shape[0]} masks")
    maps = maps.float()
    normalised = maps / maps.amax(dim=1, keepdim=True)                   # (k, HW), max 1
    targets = downsample_mask(masks, side).reshape(k, hw)                # (k, HW)
    per_token = ((normalised - targets) ** 2).mean(dim=1)                # (k,)
    return per_token.sum()


# --------------------------------------------------------------------------- successor methods


def resize_mask_bilinear(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of masks (..., H, W) to (..., size, size), as MIFO and TL do (soft edges)."""
    lead = mask.shape[:-2]
    flat = mask.float().reshape(-1, 1, *mask.shape[-2:])                 # (n, 1, H, W)
    small = F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=False)
    return small.reshape(*lead, size, size)


def _square_side(hw: int) -> int:
    side = int(round(hw ** 0.5))
    if side * side != hw:
        raise ValueError(f"attention maps of {hw} pixels are not square")
    return side


def mifo_reward_loss(layer_maps: Sequence[torch.Tensor], masks: torch.Tensor,
                     target_scale: float) -> torch.Tensor:
    """MIFO's reward term for one sample: sum over layers and tokens of MSE(target_scale * M, A).

    layer_maps: one (k, HW) map per layer (raw probabilities, heads averaged, any square
    resolution); masks: (k, H, W), resized bilinearly to each layer's side. Unlike BaS the
    maps are not max-normalised, so the target is a fraction (`target_scale`) of the mask.
    """
    total = masks.new_zeros((), dtype=torch.float32)
    for maps in layer_maps:
        k, hw = maps.shape
        target = resize_mask_bilinear(masks, _square_side(hw)).reshape(k, hw).to(maps.device)
        total = total + ((target_scale * target - maps.float()) ** 2).mean(dim=1).sum()
    return total


def mifo_penalty_loss(layer_maps: Sequence[torch.Tensor], masks: torch.Tensor) -> torch.Tensor:
    """MIFO's penalty term for one sample: sum over layers and tokens of mean((A * (1 - M))^2).

    Zero when each token attends only inside its mask; grows with the attention outside it.
    Shapes as `mifo_reward_loss`.
    """
    total = masks.new_zeros((), dtype=torch.float32)
    for maps in layer_maps:
        k, hw = maps.shape
        outside = 1 - resize_mask_bilinear(masks, _square_side(hw)).reshape(k, hw).to(maps.device)
        total = total + ((maps.float() * outside) ** 2).mean(dim=1).sum()
    return total


def min_max_normalise(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Each map (..., H, W) scaled to [0, 1] by its own min and max (a constant map becomes 0)."""
    flat = maps.float().flatten(-2)
    low = flat.amin(dim=-1, keepdim=True)
    high = flat.amax(dim=-1, keepdim=True)
    return ((flat - low) / (high - low).clamp_min(eps)).reshape(maps.shape)


def tl_guidance_maps(maps_by_resolution: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """Textual Localization's guidance maps: (k, size, size) from one (k, HW_r) map per resolution.

    Each resolution's map (already averaged over that resolution's layers) is upsampled
    bilinearly to `size`, min-max normalised per token, and the resolutions are averaged.
    """
    upsampled = []
    for maps in maps_by_resolution:
        k, hw = maps.shape
        side = _square_side(hw)
        grid = maps.float().reshape(k, 1, side, side)
        big = F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)[:, 0]  # (k, S, S)
        upsampled.append(min_max_normalise(big))
    return torch.stack(upsampled).mean(dim=0)                                            # (k, S, S)


def tl_attention_loss(guidance: torch.Tensor, masks: torch.Tensor, soft: bool = False) -> torch.Tensor:
    """TL's cross-attention guidance loss, averaged over the k tokens.

    guidance: (k, S, S) from `tl_guidance_maps`; masks: (k, H, W), resized bilinearly to S and
    min-max normalised. Hard: MSE over the whole map. Soft: the squared error counted only
    where the target is 0 (outside the mask), still averaged over every pixel (TL's code),
    so attention inside the mask is free.
    """
    k, size, _ = guidance.shape
    target = min_max_normalise(resize_mask_bilinear(masks, size)).to(guidance.device)    # (k, S, S)
    error = (guidance.float() - target) ** 2
    if soft:
        error = error * (target == 0)
    return error.mean(dim=(1, 2)).mean()


def sne_separate_loss(maps: torch.Tensor) -> torch.Tensor:
    """S&E separate loss: max over heads and pixels of A_i * A_j / (A_i + A_j), mean over pairs.

    maps: (k, heads, HW) per-head maps of k >= 2 tokens (averaged over layers). Zero when
    the maps never overlap; largest (max(A)/2) when the two maps are the same.
    """
    k = maps.shape[0]
    if k < 2:
        raise ValueError("the separate loss needs at least two tokens")
    maps = maps.float()
    pairs = []
    for i in range(k):
        for j in range(i + 1, k):
            a, b = maps[i], maps[j]
            overlap = a * b / (a + b).clamp_min(1e-12)                   # (heads, HW)
            pairs.append(overlap.amax())
    return torch.stack(pairs).mean()


def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """The (size, size) smoothing kernel of S&E's code (Attend-and-Excite's GaussianSmoothing),
    exp(-((x - mean) / (2 sigma))^2) per axis, normalised to sum 1."""
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    one = torch.exp(-((coords / (2 * sigma)) ** 2))
    kernel = one[:, None] * one[None, :]
    return kernel / kernel.sum()


def sne_enhance_loss(maps: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """S&E enhance loss: 1 - min over tokens of (max over heads and pixels of the smoothed map).

    maps: (k, heads, s, s) per-head maps. Each head's map is reflect-padded and smoothed
    with `gaussian_kernel`; the loss falls as the weakest token's peak rises.
    """
    k, heads, side, _ = maps.shape
    kernel = gaussian_kernel(kernel_size, sigma).to(maps.device)[None, None]        # (1, 1, K, K)
    pad = kernel_size // 2
    flat = maps.float().reshape(k * heads, 1, side, side)
    if pad:
        flat = F.pad(flat, (pad, pad, pad, pad), mode="reflect")
    smoothed = F.conv2d(flat, kernel).reshape(k, heads * side * side)                # (k, heads*s*s)
    peaks = smoothed.amax(dim=1)                                                     # (k,)
    return 1 - peaks.min()


# --------------------------------------------------------------------------- attention terms
# The registry's loss functions (bas.attention_terms): one instance sample's maps, as the
# entry `reads` them, its (k, H, W) masks, the kind's options and the latent's side.


def bas_attention_term(maps: torch.Tensor, masks: torch.Tensor, options, latent_side: int) -> torch.Tensor:
    return bas_attention_loss(maps, masks.to(maps.device))


def mifo_reward_term(maps: Sequence[torch.Tensor], masks: torch.Tensor, options, latent_side: int) -> torch.Tensor:
    return mifo_reward_loss(maps, masks, options.target_scale)


def mifo_penalty_term(maps: Sequence[torch.Tensor], masks: torch.Tensor, options, latent_side: int) -> torch.Tensor:
    return mifo_penalty_loss(maps, masks)


def tl_hard_term(maps: Sequence[torch.Tensor], masks: torch.Tensor, options, latent_side: int) -> torch.Tensor:
    return tl_attention_loss(tl_guidance_maps(maps, options.map_scale * latent_side), masks)


def tl_soft_term(maps: Sequence[torch.Tensor], masks: torch.Tensor, options, latent_side: int) -> torch.Tensor:
    return tl_attention_loss(tl_guidance_maps(maps, options.map_scale * latent_side), masks, soft=True)


def sne_separate_term(maps: torch.Tensor, masks: torch.Tensor, options, latent_side: int) -> torch.Tensor:
    return sne_separate_loss(maps)


def sne_enhance_term(maps: torch.Tensor, masks: torch.Tensor, options, latent_side: int) -> torch.Tensor:
    k, n_heads, hw = maps.shape                                                        # (k, heads, HW)
    side = int(round(hw ** 0.5))
    return sne_enhance_loss(maps.reshape(k, n_heads, side, side), options.smoothing_size, options.smoothing_sigma)
