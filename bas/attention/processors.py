"""Cross-attention capture: a store that owns the maps, a processor that records them.

`install(unet, layers)` puts a `RecordingAttnProcessor` on the cross-attention (`attn2`) of
the named UNet blocks only, through `unet.set_attn_processor`; every other attention layer
keeps the processor it had (diffusers' SDPA `AttnProcessor2_0`). The recording processor
computes attention with an explicit softmax, uses those probabilities for its output (so
gradients of a loss on the maps flow into queries, keys and the text embeddings) and hands
a head-averaged copy to the store; it never writes into the probabilities in place.

Maps are per sample, `(B, HW, T)` for T prompt positions: with prior preservation the
batch holds the class images too, and each sample's map is its own row.

`install_every_layer(unet, store)` records every attention layer, cross and self, through
materialised probabilities: the official BaS code's way, kept to benchmark against
(`training.attention_capture: every_layer`). The loss still reads cross-attention only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

import torch

PROCESSOR_SUFFIX = ".processor"
CROSS_ATTENTION = "attn2"   # diffusers' name of a transformer block's cross-attention


@dataclass
class AttentionStore:
    """The cross-attention maps of the last UNet forward, by attention module name.

    A map is stored under its module's name (overwriting), so a forward that is run again
    (gradient checkpointing recomputes blocks during backward) cannot add duplicates.
    `average_heads=False` keeps (B, heads, HW, T) for losses that need single heads.
    """

    average_heads: bool = True
    maps: dict[str, torch.Tensor] = field(default_factory=dict)
    enabled: bool = True

    def record(self, layer: str, probs: torch.Tensor) -> None:
        # probs: (B, heads, HW, T); stored (B, HW, T) when heads are averaged
        if not self.enabled:
            return
        self.maps[layer] = probs.mean(dim=1) if self.average_heads else probs

    def reset(self) -> None:
        self.maps = {}

    def names_under(self, layers: Optional[Iterable[str]] = None) -> list[str]:
        """The recorded cross-attention module names under `layers` (block names; default: all),
        in layer order. Self-attention maps, recorded only by `install_every_layer`, are never read."""
        cross = [n for n in self.maps if n.endswith("." + CROSS_ATTENTION)]
        if layers is None:
            names = cross
        else:
            names = []
            for layer in layers:
                found = [n for n in cross if n.startswith(layer.rstrip(".") + ".")]
                if not found:
                    raise RuntimeError(f"no attention recorded under {layer!r}; recorded: {sorted(self.maps)}")
                names += found
        if not names:
            raise RuntimeError("no attention recorded")
        return names

    def head_mean(self, name: str) -> torch.Tensor:
        """One recorded map averaged over heads, (B, HW, T), fp32."""
        probs = self.maps[name].float()
        return probs.mean(dim=1) if probs.dim() == 4 else probs

    def mean_map(self, layers: Optional[Iterable[str]] = None) -> torch.Tensor:
        """Average of the maps recorded under `layers` (block names; default: all), (B, HW, T), fp32.

        Every map must have the same resolution. With equal head counts (true of SD's
        16x16 layers) this equals the BaS code's average over all heads of all layers.
        """
        stacked = torch.stack([self.head_mean(n) for n in self.names_under(layers)])  # (L, B, HW, T)
        return stacked.mean(dim=0)                                         # (B, HW, T)

    def head_maps(self, layers: Optional[Iterable[str]] = None) -> torch.Tensor:
        """Per-head maps averaged over the layers under `layers`, (B, heads, HW, T), fp32.

        Needs `average_heads=False`; every layer must have the same resolution and heads.
        """
        maps = [self.maps[n].float() for n in self.names_under(layers)]
        if any(m.dim() != 4 for m in maps):
            raise RuntimeError("per-head maps were not kept (AttentionStore(average_heads=False))")
        return torch.stack(maps).mean(dim=0)                               # (B, heads, HW, T)


@dataclass
class AttentionInputs:
    """What diffusers' attention computes before its softmax: heads split, norms applied."""

    query: torch.Tensor          # (B, heads, HW, d)
    key: torch.Tensor            # (B, heads, T, d)
    value: torch.Tensor          # (B, heads, T, d)
    residual: torch.Tensor       # the block's input, for `residual_connection`
    spatial: Optional[tuple[int, int, int]]  # (C, H, W) when the input was 4-D, else None

    @property
    def batch(self) -> int:
        return self.query.shape[0]


def prepare_attention(attn, hidden_states: torch.Tensor, encoder_hidden_states: Optional[torch.Tensor],
                      temb: Optional[torch.Tensor]) -> AttentionInputs:
    """diffusers' `AttnProcessor2_0` up to the attention itself: norms, reshape, q/k/v projections.

    Shared by every processor of ours, so that capturing or biasing attention never changes
    the computation around it.
    """
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    spatial = None
    if hidden_states.ndim == 4:
        batch, channel, height, width = hidden_states.shape
        spatial = (channel, height, width)
        hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
    batch = hidden_states.shape[0]                                           # (B, HW, C)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

    query = attn.to_q(hidden_states)                                         # (B, HW, inner)
    if encoder_hidden_states is None:
        encoder_hidden_states = hidden_states
    elif attn.norm_cross:
        encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
    key = attn.to_k(encoder_hidden_states)                                   # (B, T, inner)
    value = attn.to_v(encoder_hidden_states)                                 # (B, T, inner)

    heads = attn.heads
    head_dim = key.shape[-1] // heads
    split = lambda t: t.view(batch, -1, heads, head_dim).transpose(1, 2)    # noqa: E731  (B, heads, L, d)
    return AttentionInputs(split(query), split(key), split(value), residual, spatial)


def finish_attention(attn, inputs: AttentionInputs, attended: torch.Tensor) -> torch.Tensor:
    """The rest of `AttnProcessor2_0`: merge heads, output projection, residual, rescale."""
    batch, heads, _, head_dim = attended.shape                               # (B, heads, HW, d)
    hidden_states = attended.transpose(1, 2).reshape(batch, -1, heads * head_dim)
    hidden_states = attn.to_out[0](hidden_states)
    hidden_states = attn.to_out[1](hidden_states)
    if inputs.spatial is not None:
        channel, height, width = inputs.spatial
        hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
    if attn.residual_connection:
        hidden_states = hidden_states + inputs.residual
    return hidden_states / attn.rescale_output_factor


class RecordingAttnProcessor:
    """Attention with an explicit softmax whose probabilities go to an `AttentionStore`."""

    def __init__(self, store: AttentionStore, name: str) -> None:
        self.store = store
        self.name = name  # the attention module's path, e.g. up_blocks.1.attentions.0.transformer_blocks.0.attn2

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: Optional[torch.Tensor] = None,
                 attention_mask: Optional[torch.Tensor] = None, temb: Optional[torch.Tensor] = None,
                 *args, **kwargs) -> torch.Tensor:
        x = prepare_attention(attn, hidden_states, encoder_hidden_states, temb)
        # Scores and softmax in fp32 even under autocast (these maps are max-normalised by the
        # loss, where half precision is coarse); the value product runs in the compute dtype.
        # `softmax` returns a new tensor: nothing is written in place.
        with torch.autocast(x.query.device.type, enabled=False):
            scores = torch.matmul(x.query.float(), x.key.float().transpose(-1, -2)) * attn.scale  # (B, heads, HW, T)
            if attention_mask is not None:
                mask = attn.prepare_attention_mask(attention_mask, x.key.shape[2], x.batch)
                scores = scores + mask.view(x.batch, attn.heads, -1, mask.shape[-1]).float()
            probs = scores.softmax(dim=-1)                                   # (B, heads, HW, T)
        self.store.record(self.name, probs)
        return finish_attention(attn, x, torch.matmul(probs.to(x.value.dtype), x.value))


def cross_attention_processor_names(unet, layer: str) -> list[str]:
    """The `attn2` processor keys under one block, e.g. `up_blocks.1.attentions.0`."""
    prefix = layer.rstrip(".") + "."
    return [name for name in unet.attn_processors
            if name.startswith(prefix) and name.endswith(CROSS_ATTENTION + PROCESSOR_SUFFIX)]


def install(unet, layers: Iterable[str], store: AttentionStore) -> list[str]:
    """Record cross-attention of `layers` into `store`; returns the processor keys replaced.

    Every other layer keeps its current processor. A layer name that matches no
    cross-attention is an error (a typo would otherwise silently record nothing).
    """
    processors = dict(unet.attn_processors)
    replaced = []
    for layer in layers:
        names = cross_attention_processor_names(unet, layer)
        if not names:
            raise ValueError(f"attention layer {layer!r} has no cross-attention in this UNet "
                             f"(attention blocks: {sorted({n.split('.transformer_blocks')[0] for n in processors})})")
        for name in names:
            processors[name] = RecordingAttnProcessor(store, name[: -len(PROCESSOR_SUFFIX)])
            replaced.append(name)
    unet.set_attn_processor(processors)
    return replaced



def install_every_layer(unet, store: AttentionStore) -> list[str]:
    """Record every attention layer, cross and self, into `store` (the official code's way:
    materialised probabilities everywhere, no SDPA); returns the processor keys replaced."""
    names = list(unet.attn_processors)
    unet.set_attn_processor({name: RecordingAttnProcessor(store, name[: -len(PROCESSOR_SUFFIX)]) for name in names})
    return names
