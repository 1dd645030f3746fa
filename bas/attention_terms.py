"""The registry of attention-loss terms: every loss a recipe can put on the cross-attention maps.

A recipe's `attention_terms.<name>` names a `kind` of this registry; a phase weights the term
in `term_weights`. Each entry says

- `loss`: the pure loss function, as `module:function` (imported on first use, so reading
  params does not import torch) or the function itself. It is called once per instance
  sample as `loss(maps, masks, options, latent_side) -> scalar tensor`, with `masks` the
  sample's (k, H, W) concept masks in token order and `maps` what the entry `reads`:
    - "mean_map":         one (k, HW) map, the layers' maps averaged, each averaged over heads
                          (every layer at one resolution);
    - "layer_means":      a list with one (k, HW) map per layer, averaged over heads;
    - "resolution_means": a list with one (k, HW) map per resolution (coarse to fine), the
                          layers of that resolution averaged, each averaged over heads;
    - "head_maps":        one (k, heads, HW) tensor: every head, the layers averaged;
- `min_tokens`: a sample with fewer concept tokens in its prompt is skipped;
- `options`: a frozen dataclass of the kind's own settings: a recipe sets them next to
  `kind` (`target_scale: 0.5`); they have no defaults (params.yaml is their only home), a
  key the kind does not have is an error, and one it has that the recipe lacks too.

A new term is one function, one `register_attention_term` call and one recipe
(tests/training/test_terms.py trains with a toy term).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Literal, Union


@dataclass(frozen=True)
class NoOptions:
    """A kind without settings of its own."""


@dataclass(frozen=True)
class MifoRewardOptions:
    target_scale: float              # the target is target_scale x the mask

    def __post_init__(self) -> None:
        if not self.target_scale > 0:
            raise ValueError("target_scale: must be > 0")


@dataclass(frozen=True)
class TlOptions:
    map_scale: int                   # guidance maps at map_scale x the latent side (256 on SD 2.1)

    def __post_init__(self) -> None:
        if self.map_scale < 1:
            raise ValueError("map_scale: must be >= 1")


@dataclass(frozen=True)
class SneEnhanceOptions:
    smoothing_size: int              # Gaussian kernel size and sigma
    smoothing_sigma: float

    def __post_init__(self) -> None:
        if not (self.smoothing_size >= 1 and self.smoothing_size % 2 == 1):
            raise ValueError("smoothing_size: must be odd and >= 1")
        if not self.smoothing_sigma > 0:
            raise ValueError("smoothing_sigma: must be > 0")


@dataclass(frozen=True)
class AttentionTermKind:
    loss: Union[str, Callable]
    reads: Literal["mean_map", "layer_means", "resolution_means", "head_maps"]
    min_tokens: int
    options: type = NoOptions

    @property
    def needs_heads(self) -> bool:
        """Whether the maps must be kept per head (the attention store then keeps every head)."""
        return self.reads == "head_maps"


_LOSSES = "bas.training.losses"
ATTENTION_TERMS: dict[str, AttentionTermKind] = {
    # Break-A-Scene (PROTOCOL.md sec. 2): each token's map over its max against its mask.
    "bas": AttentionTermKind(f"{_LOSSES}:bas_attention_term", "mean_map", 1),
    # MIFO (PROTOCOL.md sec. 3): reward attention inside the mask up to a target, then penalise outside.
    "mifo_reward": AttentionTermKind(f"{_LOSSES}:mifo_reward_term", "layer_means", 1, MifoRewardOptions),
    "mifo_penalty": AttentionTermKind(f"{_LOSSES}:mifo_penalty_term", "layer_means", 1),
    # Textual Localization: per-resolution maps upsampled to guidance maps, hard or soft MSE.
    "tl_hard": AttentionTermKind(f"{_LOSSES}:tl_hard_term", "resolution_means", 1, TlOptions),
    "tl_soft": AttentionTermKind(f"{_LOSSES}:tl_soft_term", "resolution_means", 1, TlOptions),
    # Separate-and-Enhance: compares token pairs over every head.
    "sne_separate": AttentionTermKind(f"{_LOSSES}:sne_separate_term", "head_maps", 2),
    "sne_enhance": AttentionTermKind(f"{_LOSSES}:sne_enhance_term", "head_maps", 2, SneEnhanceOptions),
}


def register_attention_term(kind: str, entry: AttentionTermKind) -> None:
    """Add a kind of attention term (a kind of that name already there is an error)."""
    if kind in ATTENTION_TERMS:
        raise ValueError(f"attention term kind {kind!r} is already registered")
    if not (dataclasses.is_dataclass(entry.options) and entry.options.__dataclass_params__.frozen):
        raise TypeError(f"attention term kind {kind!r}: options must be a frozen dataclass")
    ATTENTION_TERMS[kind] = entry


def option_names(kind: str) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(ATTENTION_TERMS[kind].options))
