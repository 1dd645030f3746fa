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


def bas_attention_loss_batch(maps: torch.Tensor, token_positions: Sequence[Sequence[int]],
                             masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """`bas_attention_loss` averaged over a batch, as the BaS code does (sum / batch size).

    maps: (B, HW, T) per-sample maps over all T prompt positions; token_positions[b]: the
    prompt positions of sample b's tokens, in the order of masks[b] (k_b, H, W).
    """
    total = maps.new_zeros((), dtype=torch.float32)
    for b, (positions, sample_masks) in enumerate(zip(token_positions, masks, strict=True)):
        token_maps = maps[b, :, list(positions)].transpose(0, 1)         # (k_b, HW)
        total = total + bas_attention_loss(token_maps, sample_masks.to(maps.device))
    return total / len(masks)
