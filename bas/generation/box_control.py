"""MIFO's box control, the pure parts: boxes, attention masks, the in-box / out-of-box loss and
its schedules. `bas.generation.mifo_box` puts them into a sampler.

Boxes are (x0, y0, x1, y1) fractions of the image side. At an attention layer of side s, a
box covers rows round(y0 s):round(y1 s) and columns round(x0 s):round(x1 s) (MIFO's code);
pixels in no box are the background.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch

Box = tuple[float, float, float, float]


def mask_box(mask: np.ndarray) -> Box:
    """The bounding box of a boolean mask (H, W), as fractions of its width and height."""
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("an empty mask has no bounding box")
    height, width = mask.shape
    return (cols[0] / width, rows[0] / height, (cols[-1] + 1) / width, (rows[-1] + 1) / height)


def box_grid(boxes: Sequence[Box], side: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """Which pixels of a side x side map each box covers: (S, side*side) bool."""
    grid = torch.zeros(len(boxes), side, side, dtype=torch.bool, device=device)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        grid[i, round(y0 * side):round(y1 * side), round(x0 * side):round(x1 * side)] = True
    return grid.flatten(start_dim=1)


def cross_attention_block(grid: torch.Tensor, positions: Sequence[int], num_tokens: int,
                          eos_position: Optional[int], include_background: bool) -> torch.Tensor:
    """Which (pixel, prompt position) pairs cross-attention may not use: (n, T) bool.

    Subject i's token is hidden outside box i; with `include_background` (while the latent is
    optimised) it may also use the background. Otherwise the end-of-text token is hidden from
    the background (MIFO's mask_eos), so background pixels do not pick subjects up through it.
    """
    subjects, n = grid.shape
    background = ~grid.any(dim=0)                                               # (n,)
    block = torch.zeros(n, num_tokens, dtype=torch.bool, device=grid.device)
    for i, position in enumerate(positions):
        allowed = grid[i] | background if include_background else grid[i]
        block[:, position] = ~allowed
    if eos_position is not None and not include_background:
        block[:, eos_position] |= background
    return block


def self_attention_block(grid: torch.Tensor) -> torch.Tensor:
    """Which (query, key) pixel pairs self-attention may not use: (n, n) bool.

    A pixel in a box may not attend a pixel of another subject's box (unless both lie in a
    common box); background pixels, and attention to the background, stay free.
    """
    in_box = grid.any(dim=0)                                                    # (n,)
    g = grid.float()
    shared = (g.transpose(0, 1) @ g) > 0                                        # (n, n): a common box
    return in_box[:, None] & in_box[None, :] & ~shared


def box_loss(foreground: torch.Tensor, background: torch.Tensor, alpha: float) -> torch.Tensor:
    """MIFO's per-subject box loss: (1 - fg / (fg + bg))^2 + alpha * log(1 + bg).

    The first (in-box, reward) part is 0 when all of a subject's attention mass lies in its
    box; the second (out-of-box, penalty) part grows with the mass on the background.
    """
    total = (foreground + background).clamp_min(1e-12)
    return (1 - foreground / total) ** 2 + alpha * torch.log1p(background)


def cross_mass(probs: torch.Tensor, grid: torch.Tensor, positions: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-attention mass of each subject's token (summed over heads) in its box and on the
    background. probs: (heads, n, T) of one sample; returns (fg, bg), each (S,)."""
    background = (~grid.any(dim=0)).float()                                     # (n,)
    token_maps = probs[:, :, list(positions)].sum(dim=0).transpose(0, 1)         # (S, n)
    return (token_maps * grid.float()).sum(dim=1), (token_maps * background).sum(dim=1)


def self_mass(probs: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-attention mass onto each box's pixels (summed over heads) from the box's own pixels
    (fg) and from the background (bg). probs: (heads, n, n) of one sample; each (S,)."""
    g = grid.float()                                                            # (S, n)
    background = (~grid.any(dim=0)).float()                                     # (n,)
    summed = probs.sum(dim=0)                                                   # (n, n) query x key
    into_box = summed @ g.transpose(0, 1)                                       # (n, S): mass each query puts on box s
    return (g * into_box.transpose(0, 1)).sum(dim=1), (background[None] * into_box.transpose(0, 1)).sum(dim=1)


def alpha_at(step: int, start: float, mid: float, end: float, linear_end: int, cosine_end: int) -> float:
    """The out-of-box weight at denoising step `step` (MIFO's schedule): `start` until step 1,
    linearly to `mid` at `linear_end`, then cosine annealing to `end` at `cosine_end`."""
    if step < 1:
        return start
    if step <= linear_end:
        return start + (mid - start) * (step - 1) / (linear_end - 1)
    if step >= cosine_end:
        return end
    phase = (step - linear_end) / (cosine_end - linear_end)
    return end + (mid - end) * (1 + math.cos(math.pi * phase)) / 2


def step_size_at(step: int, start: float, end: float, guidance_steps: int) -> float:
    """The latent step size at denoising step `step`: linear from `start` towards `end`."""
    return start + (end - start) * step / max(guidance_steps, 1)


def in_box_fraction(token_maps: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Share of each subject token's attention mass inside its own box: (S,) from (S, n) maps."""
    maps = token_maps.float()
    return (maps * grid.float()).sum(dim=1) / maps.sum(dim=1).clamp_min(1e-12)
