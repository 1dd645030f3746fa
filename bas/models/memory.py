"""What a method's training holds in memory on the sd21 profile, and the options that fit a GPU.

The state a phase holds is counted exactly from the full-size architectures
(`bas.models.sd21_architectures`, built on the `meta` device): every weight of the UNet, VAE and
text encoder, a gradient for each trainable parameter, and the optimizer's two moments
(AdamW: fp32; 8-bit AdamW: one byte each). Activations are not counted here: they are the
measured part of the peak (docs/BENCHMARKS.md) and `ACTIVATION_BYTES` holds them where
measured.

    state = phase_state(counts, recipe.phases["phase2"].trainable, options)   # bytes
    choice = pick_options(method_state_fn, vram_bytes)                         # MemoryChoice
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

GB = 1e9

# The memory options the engine offers (params training.*), cheapest in speed first.
OPTION_SETS: tuple[tuple[str, ...], ...] = (
    (),
    ("gradient_checkpointing",),
    ("gradient_checkpointing", "use_8bit_adam"),
)
# Head-room kept free on the GPU (CUDA context, allocator fragmentation, cuDNN workspaces).
HEADROOM = 0.10


@dataclass(frozen=True)
class ParameterCounts:
    unet: int
    vae: int
    text_encoder: int
    token_embedding: int          # the text encoder's input embedding (its rows train in phase 1)
    cross_attention_kv: int       # UNet attn2.to_k / to_v
    cross_attention_k: int        # UNet attn2.to_k


@functools.lru_cache(maxsize=1)
def sd21_parameter_counts() -> ParameterCounts:
    """Exact parameter counts of SD 2.1-base's parts, from their configs (no weights)."""
    # torch, diffusers, transformers: only when the counts are made (cached; `bas models check` start-up)
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from bas.models.sd21_architectures import SD21_TEXT_ENCODER, SD21_UNET, SD21_VAE

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD21_UNET)
        vae = AutoencoderKL(**SD21_VAE)
        text = CLIPTextModel(CLIPTextConfig(**SD21_TEXT_ENCODER))
    kv = re.compile(r"\.attn2\.to_(k|v)\.")
    k = re.compile(r"\.attn2\.to_k\.")
    named = list(unet.named_parameters())
    return ParameterCounts(
        unet=sum(p.numel() for _, p in named), vae=sum(p.numel() for p in vae.parameters()),
        text_encoder=sum(p.numel() for p in text.parameters()),
        token_embedding=text.get_input_embeddings().weight.numel(),
        cross_attention_kv=sum(p.numel() for n, p in named if kv.search("." + n)),
        cross_attention_k=sum(p.numel() for n, p in named if k.search("." + n)))


def trainable_count(counts: ParameterCounts, trainable: Iterable[str]) -> int:
    """Parameters a phase's optimizer holds (the engine's `_phase_parameters`)."""
    trainable = set(trainable)
    n = counts.unet if "unet" in trainable else sum(
        getattr(counts, group) for group in ("cross_attention_kv", "cross_attention_k") if group in trainable)
    if "text_encoder" in trainable:
        n += counts.text_encoder
    elif "tokens" in trainable:
        n += counts.token_embedding
    return n


def phase_state(counts: ParameterCounts, trainable: Iterable[str], options: Sequence[str] = ()) -> int:
    """Bytes of weights (fp32), gradients (fp32) and AdamW moments for one training phase."""
    weights = 4 * (counts.unet + counts.vae + counts.text_encoder)
    n = trainable_count(counts, trainable)
    moments = 2 * n if "use_8bit_adam" in options else 8 * n
    return weights + 4 * n + moments


def method_state(recipe, counts: Optional[ParameterCounts] = None, options: Sequence[str] = ()) -> dict[str, int]:
    """{phase: state bytes} of the phases of `recipe` (a MethodRecipe) that run."""
    counts = counts or sd21_parameter_counts()
    return {name: phase_state(counts, phase.trainable, options)
            for name, phase in recipe.phases.items() if phase.steps > 0}


@dataclass(frozen=True)
class MemoryChoice:
    options: tuple[str, ...]       # the options picked; () = none needed
    need_bytes: int                # the largest phase's state with those options
    fits: bool                     # False: even every option leaves it above the VRAM


def pick_options(state_of: Callable[[Sequence[str]], int], vram_bytes: float,
                 activation_bytes: Callable[[Sequence[str]], int] = lambda options: 0) -> MemoryChoice:
    """The first option set (cheapest first) whose state + activations fit `vram_bytes` less head-room."""
    budget = vram_bytes * (1 - HEADROOM)
    need = 0
    for options in OPTION_SETS:
        need = state_of(options) + activation_bytes(options)
        if need <= budget:
            return MemoryChoice(options, need, True)
    return MemoryChoice(OPTION_SETS[-1], need, False)
