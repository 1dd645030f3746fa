"""Named attention terms of a recipe (`attention_terms`), computed from the recorded maps.

The engine calls `compute_term` for every term its phase weights and sums the weighted
results; this module only picks the maps a term reads out of the `AttentionStore` and hands
them to the pure loss functions of `bas.training.losses`. Schedules are declarative:
`term_active` applies `from_step`/`until_step` (steps of the phase), and a term with
`max_timestep` counts only the samples noised at t < max_timestep (MIFO's t < 500 rule).

Every term is averaged over the batch's instance samples (sum / batch size, as the BaS
attention loss), a skipped sample adding 0; a batch with no sample for the term gives None
and the term is left out of that step.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from bas.config import AttentionTermRecipe
from bas.attention import AttentionStore
from bas.training.losses import (mifo_penalty_loss, mifo_reward_loss, sne_enhance_loss, sne_separate_loss,
                                 tl_attention_loss, tl_guidance_maps)


@dataclass
class TermInputs:
    """What the terms need of one step's batch besides the maps."""

    positions: Sequence[Sequence[int]]    # per instance sample: prompt positions of its tokens
    masks: Sequence[torch.Tensor]         # per instance sample: (k_b, H, W), in the order of positions
    timesteps: Sequence[int]              # per instance sample
    offset: int                           # class-image rows before the instance samples in each map
    latent_side: int                      # the latent's side (64 on SD 2.1, 32 on tiny)


def term_active(term: AttentionTermRecipe, phase_step: int) -> bool:
    """Whether the term is on at this step of its phase (from_step <= step < until_step)."""
    return phase_step >= term.from_step and (term.until_step is None or phase_step < term.until_step)


def _uses_sample(term: AttentionTermRecipe, timestep: int, num_tokens: int) -> bool:
    if term.max_timestep is not None and timestep >= term.max_timestep:
        return False
    return num_tokens >= 2 if term.needs_heads else num_tokens >= 1   # S&E compares token pairs


def compute_term(term: AttentionTermRecipe, store: AttentionStore, inputs: TermInputs) -> Optional[torch.Tensor]:
    """The term's value for the batch, or None when no sample takes part."""
    batch = len(inputs.positions)
    chosen = [b for b in range(batch)
              if _uses_sample(term, int(inputs.timesteps[b]), len(inputs.positions[b]))]
    if not chosen:
        return None
    total = None
    for b in chosen:
        value = _sample_value(term, store, inputs, b)
        total = value if total is None else total + value
    return total / batch


def _token_maps(map_: torch.Tensor, positions: Sequence[int]) -> torch.Tensor:
    """(HW, T) -> (k, HW) for the given prompt positions."""
    return map_[:, list(positions)].transpose(0, 1)


def _sample_value(term: AttentionTermRecipe, store: AttentionStore, inputs: TermInputs, b: int) -> torch.Tensor:
    row = inputs.offset + b
    positions = inputs.positions[b]
    masks = inputs.masks[b]
    names = store.names_under(term.layers)
    if term.kind in ("mifo_reward", "mifo_penalty"):
        layer_maps = [_token_maps(store.head_mean(n)[row], positions) for n in names]     # each (k, HW)
        if term.kind == "mifo_reward":
            return mifo_reward_loss(layer_maps, masks, term.target_scale)
        return mifo_penalty_loss(layer_maps, masks)
    if term.kind in ("tl_hard", "tl_soft"):
        by_resolution: dict[int, list[torch.Tensor]] = defaultdict(list)
        for n in names:
            maps = _token_maps(store.head_mean(n)[row], positions)                        # (k, HW)
            by_resolution[maps.shape[1]].append(maps)
        per_resolution = [torch.stack(group).mean(dim=0) for _, group in sorted(by_resolution.items())]
        guidance = tl_guidance_maps(per_resolution, term.map_scale * inputs.latent_side)  # (k, S, S)
        return tl_attention_loss(guidance, masks, soft=term.kind == "tl_soft")
    if term.kind in ("sne_separate", "sne_enhance"):
        heads = store.head_maps(term.layers)[row][:, :, list(positions)]                  # (heads, HW, k)
        maps = heads.permute(2, 0, 1)                                                      # (k, heads, HW)
        if term.kind == "sne_separate":
            return sne_separate_loss(maps)
        k, n_heads, hw = maps.shape
        side = int(round(hw ** 0.5))
        return sne_enhance_loss(maps.reshape(k, n_heads, side, side), term.smoothing_size, term.smoothing_sigma)
    raise ValueError(f"unknown attention term kind {term.kind!r}")
