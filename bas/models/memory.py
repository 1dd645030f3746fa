"""What a method's training holds in memory, and the memory options that fit a device.

The state a phase holds is counted exactly from the models' parameters (for sd21 from the
full-size architectures, `bas.models.sd21_architectures`, built on the `meta` device): every
weight of the UNet, VAE and text encoder, a gradient for each trainable parameter, and the
optimizer's two moments (AdamW: fp32; 8-bit AdamW: one byte each). The step's activations
(its measured peak less the gradients it writes) come from `bench/memory.py`, run on the sd21
architectures at 512 px and stored in `sd21_memory.json`; under autocast on a GPU, the cast
copies of the trained weights are counted too.

    state = phase_state(counts, recipe.phases["phase2"].trainable, options)      # bytes
    peaks = method_peak(recipe, batch_size, counts, options, measured())         # {phase: bytes}
    choice = pick_options(lambda o: max(method_peak(..., o, ...).values()), vram_bytes)
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from bas.io import atomic_write_json

GB = 1e9

# The memory options the engine offers (params training.*), in the order `training.memory: auto`
# tries them: gradient checkpointing (same results, slower) before 8-bit AdamW (results differ
# slightly), and 8-bit AdamW alone (no recomputation) before both.
OPTION_SETS: tuple[tuple[str, ...], ...] = (
    (),
    ("gradient_checkpointing",),
    ("use_8bit_adam",),
    ("gradient_checkpointing", "use_8bit_adam"),
)
# Head-room kept free (on a GPU: the CUDA context, allocator fragmentation, cuDNN workspaces;
# on a CPU: the process itself).
HEADROOM = 0.10
# The step memory bench/memory.py measured on the sd21 architectures (written by --write-table).
MEASURED_FILE = Path(__file__).with_name("sd21_memory.json")


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
    return counts_of(unet, vae, text)


def device_memory_bytes(device, resident_model_bytes: int = 0) -> float:
    """What a run may fill: the GPU's memory, or on a CPU the RAM free now plus the model weights
    already loaded (`resident_model_bytes`, which the peaks count)."""
    if device.type == "cuda":
        import torch   # only for a CUDA device; `bas models check` reads the rest from /proc

        return float(torch.cuda.get_device_properties(device).total_memory)
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        return float(int(fields["MemAvailable"].split()[0]) * 1024 + resident_model_bytes)
    except (OSError, KeyError, ValueError):   # not Linux: the machine's RAM
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def bitsandbytes_installed() -> bool:
    try:   # an optional dependency, looked for only when 8-bit AdamW is asked for or considered
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


def counts_of(unet, vae, text_encoder) -> ParameterCounts:
    """The parameter counts of loaded models (any profile)."""
    kv = re.compile(r"\.attn2\.to_(k|v)\.")
    k = re.compile(r"\.attn2\.to_k\.")
    named = list(unet.named_parameters())
    return ParameterCounts(
        unet=sum(p.numel() for _, p in named), vae=sum(p.numel() for p in vae.parameters()),
        text_encoder=sum(p.numel() for p in text_encoder.parameters()),
        token_embedding=text_encoder.get_input_embeddings().weight.numel(),
        cross_attention_kv=sum(p.numel() for n, p in named if kv.search("." + n)),
        cross_attention_k=sum(p.numel() for n, p in named if k.search("." + n)))


def weight_bytes(counts: ParameterCounts) -> int:
    """fp32 weights of the UNet, VAE and text encoder."""
    return 4 * (counts.unet + counts.vae + counts.text_encoder)


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
    weights = weight_bytes(counts)
    n = trainable_count(counts, trainable)
    moments = 2 * n if "use_8bit_adam" in options else 8 * n
    return weights + 4 * n + moments


def method_state(recipe, counts: Optional[ParameterCounts] = None, options: Sequence[str] = ()) -> dict[str, int]:
    """{phase: state bytes} of the phases of `recipe` (a MethodRecipe) that run."""
    counts = counts or sd21_parameter_counts()
    return {name: phase_state(counts, phase.trainable, options)
            for name, phase in recipe.phases.items() if phase.steps > 0}


# ---------------------------------------------------------------- measured step memory


def write_measured(table: dict, source: str) -> Path:
    """Store bench/memory.py's measurements (`{"training": {case: ...}, "generation": {case: ...}}`)."""
    atomic_write_json(MEASURED_FILE, {"source": source, "date": _dt.date.today().isoformat(), **table})
    measured.cache_clear()
    return MEASURED_FILE


@functools.lru_cache(maxsize=1)
def measured() -> Optional[dict]:
    """The stored measurements, or None where none were made."""
    try:
        return json.loads(MEASURED_FILE.read_text())
    except FileNotFoundError:
        return None


def samples_per_step(recipe, phase, batch_size: int) -> int:
    """Images in one training step of `phase`: the batch, and as many class images with prior preservation."""
    return batch_size * (2 if recipe.prior_preservation and phase.loss_weights.prior > 0 else 1)


def activation_bytes(table: Optional[dict], trainable: Iterable[str], samples: int,
                     gradient_checkpointing: bool) -> int:
    """What a step of a phase that trains `trainable` on `samples` images holds beyond the
    counted state: the measured step less its gradients (activations kept for the backward
    pass, attention maps, temporaries), per image; 0 where nothing was measured.

    From the measured cases that train the same parts (the largest, per image); a set never
    measured takes the largest figure of all."""
    if not table or not table.get("training"):
        return 0
    key = str(bool(gradient_checkpointing)).lower()
    per_sample: dict[frozenset, float] = {}
    for case in table["training"].values():
        parts = frozenset(case["trainable"])
        extra = max(0, case["step_bytes"][key] - case["gradient_bytes"]) / case["samples"]
        per_sample[parts] = max(per_sample.get(parts, 0.0), extra)
    per = per_sample.get(frozenset(trainable), max(per_sample.values()))
    return int(per * samples)


def autocast_copy_bytes(counts: ParameterCounts, trainable: Iterable[str]) -> int:
    """bf16/fp16 copies of the trained weights that autocast keeps from the forward pass to the
    backward pass (CUDA with `training.mixed_precision`; the token rows are looked up, not cast)."""
    trainable = set(trainable)
    weights = trainable_count(counts, trainable - {"tokens"})
    if "text_encoder" in trainable:
        weights -= counts.token_embedding
    return 2 * max(0, weights)


def phase_peak(counts: ParameterCounts, trainable: Iterable[str], samples: int, options: Sequence[str],
               table: Optional[dict], autocast: bool = False) -> int:
    """Bytes at a phase's peak: weights, gradients and moments counted, the step's activations
    measured (`activation_bytes`), and under autocast the cast copies of the trained weights."""
    trainable = tuple(trainable)
    peak = phase_state(counts, trainable, options) + \
        activation_bytes(table, trainable, samples, "gradient_checkpointing" in options)
    return peak + (autocast_copy_bytes(counts, trainable) if autocast else 0)


def method_peak(recipe, batch_size: int, counts: ParameterCounts, options: Sequence[str],
                table: Optional[dict], autocast: bool = False) -> dict[str, int]:
    """{phase: peak bytes} of the phases of `recipe` that run, with memory `options`."""
    return {name: phase_peak(counts, phase.trainable, samples_per_step(recipe, phase, batch_size), options, table,
                             autocast)
            for name, phase in recipe.phases.items() if phase.steps > 0}


@dataclass(frozen=True)
class MemoryChoice:
    options: tuple[str, ...]       # the options picked; () = none needed
    need_bytes: int                # the largest phase's peak with those options
    fits: bool                     # False: even every option leaves it above the budget
    budget_bytes: float = float("inf")


def pick_options(need_of: Callable[[Sequence[str]], int], vram_bytes: float,
                 available: Callable[[str], bool] = lambda option: True) -> MemoryChoice:
    """The first option set (cheapest first) whose need fits `vram_bytes` less head-room.

    `available(option)`: False for an option this machine cannot use (8-bit AdamW without
    bitsandbytes); sets with it are passed over. Nothing fits: every available option."""
    budget = vram_bytes * (1 - HEADROOM)
    sets = [options for options in OPTION_SETS if all(available(o) for o in options)]
    need = 0
    for options in sets:
        need = need_of(options)
        if need <= budget:
            return MemoryChoice(options, need, True, budget)
    return MemoryChoice(sets[-1], need, False, budget)


def switched_options(training) -> tuple[str, ...]:
    """The memory options a `TrainingConfig` switches on itself (auto's minimum; manual's all)."""
    return tuple(name for name in OPTION_SETS[-1] if getattr(training, name))


def choose_options(recipe, batch_size: int, counts: ParameterCounts, table: Optional[dict], vram_bytes: float,
                   autocast: bool = False, switched_on: Sequence[str] = ()) -> MemoryChoice:
    """What `training.memory: auto` uses for `recipe`: the options switched on, and the first
    further set (OPTION_SETS order) that fits its largest phase into `vram_bytes` less head-room;
    8-bit AdamW only where bitsandbytes imports. The options come in OPTION_SETS' order."""
    order = OPTION_SETS[-1]
    eight_bit = bitsandbytes_installed()

    def with_switched(options: Sequence[str]) -> tuple[str, ...]:
        return tuple(sorted({*options, *switched_on}, key=order.index))

    def need(options: Sequence[str]) -> int:
        return max(method_peak(recipe, batch_size, counts, with_switched(options), table, autocast).values(),
                   default=0)

    choice = pick_options(need, vram_bytes, available=lambda option: option != "use_8bit_adam" or eight_bit)
    return MemoryChoice(with_switched(choice.options), choice.need_bytes, choice.fits, choice.budget_bytes)
