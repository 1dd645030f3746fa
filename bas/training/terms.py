"""Named attention terms of a recipe (`attention_terms`), computed from the recorded maps.

The engine calls `compute_term` for every term its phase weights and sums the weighted
results; this module only picks the maps a term's kind reads (`bas.attention_terms`) out of
the `AttentionStore` and hands them to the kind's pure loss function. Schedules are declarative:
`term_active` applies `from_step`/`until_step` (steps of the phase), and a term with
`max_timestep` counts only the samples noised at t < max_timestep (MIFO's t < 500 rule); with
`timestep_source: class_image` that is the timestep of the class image drawn with the sample
(MIFO's phase 2, whose code reads `timesteps[0]` of a class-then-instance batch).

Every term is averaged over the batch's instance samples (sum / batch size, as the BaS
attention loss), a skipped sample adding 0; a batch with no sample for the term gives None
and the term is left out of that step.
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from bas.attention import AttentionStore
from bas.attention_terms import ATTENTION_TERMS
from bas.config import AttentionTermRecipe


@dataclass
class TermInputs:
    """What the terms need of one step's batch besides the maps."""

    positions: Sequence[Sequence[int]]    # per instance sample: prompt positions of its tokens
    masks: Sequence[torch.Tensor]         # per instance sample: (k_b, H, W), in the order of positions
    timesteps: Sequence[int]              # per instance sample
    offset: int                           # class-image rows before the instance samples in each map
    latent_side: int                      # the latent's side (64 on SD 2.1, 32 on tiny)
    class_timesteps: Sequence[int] = ()   # per instance sample: its class image's timestep (none without)


def term_active(term: AttentionTermRecipe, phase_step: int) -> bool:
    """Whether the term is on at this step of its phase (from_step <= step < until_step)."""
    return phase_step >= term.from_step and (term.until_step is None or phase_step < term.until_step)


def term_loss(kind: str) -> Callable:
    """The registry entry's loss function (imported on first use when named as `module:function`)."""
    loss = ATTENTION_TERMS[kind].loss
    if isinstance(loss, str):
        module, _, function = loss.partition(":")
        loss = getattr(importlib.import_module(module), function)
    return loss


def gate_timestep(term: AttentionTermRecipe, inputs: TermInputs, b: int) -> int:
    """The timestep `max_timestep` compares for instance sample b."""
    if term.timestep_source == "class_image" and inputs.class_timesteps:
        return int(inputs.class_timesteps[b])
    return int(inputs.timesteps[b])


def _uses_sample(term: AttentionTermRecipe, timestep: int, num_tokens: int) -> bool:
    if term.max_timestep is not None and timestep >= term.max_timestep:
        return False
    return num_tokens >= ATTENTION_TERMS[term.kind].min_tokens


def compute_term(term: AttentionTermRecipe, store: AttentionStore, inputs: TermInputs) -> Optional[torch.Tensor]:
    """The term's value for the batch, or None when no sample takes part."""
    batch = len(inputs.positions)
    chosen = [b for b in range(batch)
              if _uses_sample(term, gate_timestep(term, inputs, b), len(inputs.positions[b]))]
    if not chosen:
        return None
    loss = term_loss(term.kind)
    total = None
    for b in chosen:
        value = loss(_sample_maps(term, store, inputs, b), inputs.masks[b], term.options, inputs.latent_side)
        total = value if total is None else total + value
    return total / batch


def _token_maps(map_: torch.Tensor, positions: Sequence[int]) -> torch.Tensor:
    """(HW, T) -> (k, HW) for the given prompt positions."""
    return map_[:, list(positions)].transpose(0, 1)


def _sample_maps(term: AttentionTermRecipe, store: AttentionStore, inputs: TermInputs, b: int):
    """Sample b's maps of the term's layers, as its registry entry `reads` them."""
    row = inputs.offset + b
    positions = inputs.positions[b]
    reads = ATTENTION_TERMS[term.kind].reads
    if reads == "mean_map":
        return _token_maps(store.mean_map(term.layers)[row], positions)                      # (k, HW)
    if reads == "layer_means":
        return [_token_maps(store.head_mean(n)[row], positions) for n in store.names_under(term.layers)]  # each (k, HW)
    if reads == "resolution_means":
        by_resolution: dict[int, list[torch.Tensor]] = defaultdict(list)
        for n in store.names_under(term.layers):
            maps = _token_maps(store.head_mean(n)[row], positions)                        # (k, HW)
            by_resolution[maps.shape[1]].append(maps)
        return [torch.stack(group).mean(dim=0) for _, group in sorted(by_resolution.items())]
    if reads == "head_maps":
        heads = store.head_maps(term.layers)[row][:, :, list(positions)]                  # (heads, HW, k)
        return heads.permute(2, 0, 1)                                                      # (k, heads, HW)
    raise ValueError(f"attention term kind {term.kind!r} reads {reads!r}: not a way to read the maps")
