#!/usr/bin/env python
"""GPU figures on the full-size SD 2.1-base architecture with random weights (docs/BENCHMARKS.md).

    python bench/gpu.py [--quick] [--only training,sampling,scoring] [--peak-tflops X]
    python bench/gpu.py --flops-only [--gpu-name H100]   # no GPU: parameter and FLOP counts only

The models are `bas.models.sd21_architectures` (the real configs, random weights: the same FLOPs
and memory as the real checkpoints) run through the project's own code: `Trainer.step()`
with bf16 autocast and fp32 master weights, the DDIM/CFG sampler, the `Scorer`. Beside
every time stands its limit: the FLOPs of one step / image (counted with
`torch.utils.flop_counter.FlopCounterMode`: matmuls, convolutions and attention; elementwise
work is not counted, so the limit is a lower bound) divided by the GPU's dense bf16 peak,
and the fraction of that limit reached.

- training: seconds per step of each BaS phase, with and without prior preservation, with
  and without the memory options (gradient checkpointing, 8-bit AdamW when bitsandbytes is
  installed); peak GPU memory; seconds per scene (setup + 400 + 400 steps), estimated from
  the step medians and, unless --quick, measured once end to end (`train_scene`).
- sampling: images/s of the 50-step CFG sampler over batch sizes, and the best.
- scoring: images/s of `Scorer.score_batch` (CLIP ViT-L/14, DINO ViT-B/16, MaskFormer Swin-L).

Targets: a BaS scene in under 60 s on one H100, within 24 GB with the memory
options on; sampling at >= 40% of the bf16 limit. Nothing here asserts them; each record
says whether it met its target.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import gc
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from bench.common import record, time_it  # noqa: E402

PROFILE = "sd21-random"
SECTIONS = ("training", "sampling", "scoring")

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from the vendors' data sheets. The
# first entry whose key occurs in the device name wins (so "H100 PCIe" before "H100").
DENSE_BF16_TFLOPS = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),           # SXM
    ("A100", 312.0),
)

SCENE_TARGET_S = 60.0
MEMORY_TARGET_GB = 24.0
SAMPLING_TARGET_FRACTION = 0.40

SIZES = {
    False: dict(train_repeats=10, train_warmup=3, full_scene=True, variants=("prior", "no_prior", "prior_memory",
                                                                             "no_prior_memory"),
                sample_batches=(1, 2, 4, 8, 16, 32), sample_repeats=3, score_batches=(1, 4, 16, 32),
                score_repeats=3),
    True: dict(train_repeats=3, train_warmup=2, full_scene=False, variants=("prior", "prior_memory"),
               sample_batches=(1, 8), sample_repeats=1, score_batches=(1, 16), score_repeats=1),
}
VARIANTS = {   # training variants: prior preservation on/off x memory options off/on
    "prior": dict(prior=True, memory=False), "no_prior": dict(prior=False, memory=False),
    "prior_memory": dict(prior=True, memory=True), "no_prior_memory": dict(prior=False, memory=True),
}


def log(message: str) -> None:
    print(f"[bench/gpu] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- limits


def dense_bf16_peak(device_name: str, override: Optional[float] = None) -> tuple[Optional[float], str]:
    """(TFLOP/s, where it came from) for a device name; (None, why) when unknown and not given."""
    if override:
        return float(override), "--peak-tflops"
    for key, tflops in DENSE_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops, f"table: {key}"
    return None, f"unknown device {device_name!r}: pass --peak-tflops"


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def limit_fields(flops: float, peak_tflops: Optional[float], measured_s: Optional[float] = None) -> dict:
    """FLOPs, the seconds they take at the dense bf16 peak, and the fraction of it reached."""
    out = {"flops": flops, "peak_tflops": peak_tflops}
    if peak_tflops:
        out["limit_s"] = flops / (peak_tflops * 1e12)
        if measured_s:
            out["fraction_of_limit"] = out["limit_s"] / measured_s
    return out


def bitsandbytes_available() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- FLOP counts on any device


def train_step_flops(parts, trainable: tuple[str, ...], samples: int) -> int:
    """FLOPs of one training step's forward + backward (text encoder, UNet) for `samples`
    latents, with gradients where a phase of `trainable` needs them. Works on `meta`; on a
    GPU the benchmark counts the engine's real step instead."""
    device = next(parts.unet.parameters()).device
    unet, text_encoder = parts.unet, parts.text_encoder
    unet.requires_grad_("unet" in trainable)
    text_encoder.requires_grad_("text_encoder" in trainable)
    if "tokens" in trainable:
        text_encoder.get_input_embeddings().weight.requires_grad_(True)
    side = parts.resolution // parts.vae_scale_factor
    ids = torch.zeros(samples, parts.tokenizer.model_max_length, dtype=torch.long, device=device)    # (n, 77)
    latents = torch.zeros(samples, unet.config.in_channels, side, side, device=device)                # (n, 4, h, w)
    timesteps = torch.zeros(samples, dtype=torch.long, device=device)                                # (n,)

    def step():
        hidden = text_encoder(ids)[0]                                       # (n, 77, D)
        pred = unet(latents, timesteps, hidden).sample                      # (n, 4, h, w)
        pred.float().pow(2).mean().backward()

    try:
        return count_flops(step)
    finally:
        unet.requires_grad_(False)
        text_encoder.requires_grad_(False)


@torch.no_grad()
def sampler_flops_per_image(parts, steps: int) -> int:
    """FLOPs of one image of the CFG sampler: both prompts encoded, `steps` UNet calls on the
    (uncond, cond) pair, one VAE decode."""
    from bas.generation.sampler import encode_prompts

    device = next(parts.unet.parameters()).device
    side = parts.resolution // parts.vae_scale_factor
    channels = parts.unet.config.in_channels
    encode = count_flops(lambda: (encode_prompts(parts, ["a photo"], device), encode_prompts(parts, [""], device)))
    context = torch.zeros(2, parts.tokenizer.model_max_length, parts.unet.config.cross_attention_dim, device=device)
    unet_call = count_flops(lambda: parts.unet(torch.zeros(2, channels, side, side, device=device),
                                               torch.tensor(500, device=device), encoder_hidden_states=context))
    decode = count_flops(lambda: parts.vae.decode(torch.zeros(1, channels, side, side, device=device)))
    return encode + steps * unet_call + decode


@torch.no_grad()
def scoring_flops_per_image(scorers, concepts: int = 2) -> int:
    """FLOPs of scoring one image with `concepts` detected concepts: CLIP image + text, DINO on
    the whole image and each detected concept, MaskFormer at its processor's size. On a GPU
    the benchmark counts the real `Scorer.score_batch` instead."""
    device = next(scorers.clip_model.parameters()).device
    clip_side = scorers.clip_model.visual.image_size
    clip_side = clip_side[0] if isinstance(clip_side, (tuple, list)) else clip_side
    dino_side = scorers.dino_model.patch_embed.img_size[0]
    mask_side = scorers.maskformer_processor.size["shortest_edge"]
    return count_flops(lambda: (
        scorers.clip_model.encode_image(torch.zeros(1, 3, clip_side, clip_side, device=device)),
        scorers.clip_model.encode_text(torch.zeros(1, 77, dtype=torch.long, device=device)),
        scorers.dino_model(torch.zeros(1 + concepts, 3, dino_side, dino_side, device=device)),
        scorers.maskformer(pixel_values=torch.zeros(1, 3, mask_side, mask_side, device=device)),
    ))


def flops_only(args) -> list[dict]:
    """Parameter and FLOP counts on the `meta` device, and their limits at a named GPU's peak."""
    from bas.config import load
    from bas.models.sd21_architectures import build_diffusion, build_scorers, parameter_count

    cfg = load(REPO / "params.yaml")
    peak, source = dense_bf16_peak(args.gpu_name, args.peak_tflops)
    parts = build_diffusion("meta")
    out = []

    def emit(name: str, **fields) -> dict:
        entry = {"name": name, "device": f"meta (FLOPs at {args.gpu_name}: {source})", "profile": PROFILE, **fields}
        print(json.dumps(entry), flush=True)
        out.append(entry)
        return entry

    scorers = build_scorers("meta")
    emit("gpu.parameters", sizes={}, **{name: parameter_count(module) for name, module in (
        ("unet", parts.unet), ("vae", parts.vae), ("text_encoder", parts.text_encoder),
        ("clip", scorers.clip_model), ("dino", scorers.dino_model), ("maskformer", scorers.maskformer))})
    recipe = cfg.methods["bas"]
    scene_flops = {True: 0, False: 0}
    for prior in (True, False):
        for phase_name, phase in recipe.phases.items():
            samples = cfg.training.batch_size * (2 if prior else 1)
            flops = train_step_flops(parts, tuple(phase.trainable), samples)
            scene_flops[prior] += phase.steps * flops
            emit("gpu.train_step.flops", sizes={"phase": phase_name, "samples": samples, "prior": prior,
                                                "resolution": parts.resolution}, **limit_fields(flops, peak))
        emit("gpu.train_scene.flops", sizes={"prior": prior, "steps": {n: p.steps for n, p in recipe.phases.items()}},
             **limit_fields(scene_flops[prior], peak))
    gen = cfg.generation
    emit("gpu.sampling.flops", sizes={"steps": gen.steps, "resolution": parts.resolution, "per": "image"},
         **limit_fields(sampler_flops_per_image(parts, gen.steps), peak))
    emit("gpu.scoring.flops", sizes={"detected_concepts": 2, "per": "image"},
         **limit_fields(scoring_flops_per_image(scorers), peak))
    return out


# --------------------------------------------------------------------------- on a GPU


def _free() -> None:
    gc.collect()
    torch.cuda.empty_cache()


def make_config(storage: Path, memory: bool):
    from bas.config import load

    return load(REPO / "params.yaml", {
        "models.profile": "sd21", "paths.storage_root": str(storage),
        "scenes.coco_root": "demo", "scenes.num_scenes": 3, "scenes.resolution": 512,
        "training.progress_bar": False, "training.mixed_precision": True,
        # The variants set the options themselves: auto would add them on a small GPU.
        "training.memory": "manual", "training.gradient_checkpointing": memory,
        "training.use_8bit_adam": memory and bitsandbytes_available(),
        # One class image a step whatever their number; the set is made once per model.
        "training.prior_images.num_images": 8, "training.prior_images.sampling_steps": 50,
    })


def demo_scene(cfg):
    from bas import paths
    from bas.scenes import load_scene, stage_coco

    report = stage_coco(cfg.scenes, paths.scenes_dir(cfg))
    return next(s for s in (load_scene(paths.scenes_dir(cfg) / i) for i in report.selected) if s.num_concepts == 2)


def bench_training(args, sizes: dict, device: torch.device, peak: Optional[float], work: Path) -> list[dict]:
    from bas.models.sd21_architectures import build_diffusion
    from bas.training import Trainer, get_recipe
    from bas.training.prior import ensure_class_images

    out = []
    scene = None
    for variant in sizes["variants"]:
        prior, memory = VARIANTS[variant]["prior"], VARIANTS[variant]["memory"]
        cfg = make_config(work / "storage", memory)
        scene = scene or demo_scene(cfg)
        recipe = dataclasses.replace(get_recipe(cfg, "bas"), prior_preservation=prior)
        parts = build_diffusion(device, tokenizer_dir=work / "tokenizer")
        if prior:   # made once per model (every scene reuses them): not part of a scene's time
            ensure_class_images(cfg, parts, dtype=torch.bfloat16)
        torch.cuda.reset_peak_memory_stats(device)
        trainer = Trainer(cfg, "bas", recipe, scene, parts=parts, device=device)
        started = time.perf_counter()
        trainer.setup()
        torch.cuda.synchronize(device)
        setup_s = time.perf_counter() - started
        options = {"prior_preservation": prior, "gradient_checkpointing": cfg.training.gradient_checkpointing,
                   "use_8bit_adam": cfg.training.use_8bit_adam, "autocast": cfg.models.gpu_dtype}
        scene_s, scene_flops, peak_gb = setup_s, 0, 0.0
        for phase_name, phase in recipe.phases.items():
            if phase.steps == 0:
                continue
            trainer.enter_phase(phase_name)
            flops = count_flops(trainer.step)               # the engine's real step, counted once
            stats = time_it(trainer.step, sizes["train_repeats"], sizes["train_warmup"], device)
            scene_s += phase.steps * stats["median_s"]
            scene_flops += phase.steps * flops
            peak_gb = max(peak_gb, stats["peak_gpu_mem_gb"])
            log(f"training {variant} {phase_name}: {stats['median_s'] * 1000:.0f} ms a step, "
                f"{stats['peak_gpu_mem_gb']:.1f} GB")
            out.append(record("gpu.train_step", device, PROFILE,
                              {"phase": phase_name, "resolution": parts.resolution, "samples":
                               cfg.training.batch_size * (2 if prior else 1)},
                              {**stats, **limit_fields(flops, peak, stats["median_s"])}, variant=variant, **options))
        trainer.cleanup()
        memory_ok = peak_gb <= MEMORY_TARGET_GB if memory else None
        out.append(record("gpu.train_scene.estimate", device, PROFILE,
                          {"steps": {n: p.steps for n, p in recipe.phases.items()}, "resolution": parts.resolution},
                          {"median_s": scene_s, "setup_s": setup_s, "peak_gpu_mem_gb": peak_gb,
                           **limit_fields(scene_flops, peak, scene_s)}, variant=variant, **options,
                          target_s=SCENE_TARGET_S, meets_time_target=scene_s <= SCENE_TARGET_S,
                          memory_target_gb=MEMORY_TARGET_GB if memory else None, meets_memory_target=memory_ok,
                          meaning="setup + steps x median step seconds"))
        del trainer, parts
        _free()
        if sizes["full_scene"] and variant == "prior":
            out.append(_full_scene(cfg, recipe, scene, device, work, options, peak, scene_flops))
    return out


def _full_scene(cfg, recipe, scene, device, work: Path, options: dict, peak, scene_flops: int) -> dict:
    """One scene trained end to end by `train_scene` (class images already made)."""
    from bas.models.sd21_architectures import build_diffusion
    from bas.training import train_scene

    parts = build_diffusion(device, tokenizer_dir=work / "tokenizer")
    torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    result = train_scene(cfg, "bas", scene, run_dir=work / "runs" / "bas", parts=parts, device=device)
    torch.cuda.synchronize(device)
    wall = time.perf_counter() - started
    peak_gb = torch.cuda.max_memory_allocated(device) / 2**30
    log(f"training: one scene end to end {wall:.1f} s, {peak_gb:.1f} GB")
    del parts
    _free()
    return record("gpu.train_scene", device, PROFILE, {"steps": result.summary["steps"], "resolution": 512},
                  {"median_s": wall, "min_s": wall, "max_s": wall, "repeats": 1, "peak_gpu_mem_gb": peak_gb,
                   **limit_fields(scene_flops, peak, wall)}, variant="prior", **options,
                  target_s=SCENE_TARGET_S, meets_time_target=wall <= SCENE_TARGET_S)


def bench_sampling(args, sizes: dict, device: torch.device, peak: Optional[float], work: Path) -> list[dict]:
    from bas.batching import is_out_of_memory
    from bas.config import load
    from bas.generation.grid import build_grid
    from bas.generation.sampler import sample_ddim
    from bas.models.sd21_architectures import build_diffusion
    from bas.tokens import add_placeholder_tokens

    cfg = load(REPO / "params.yaml")
    gen = cfg.generation
    parts = build_diffusion(device, tokenizer_dir=work / "tokenizer")
    class_names = ["cat", "dog", "cup"]
    tokens, _ = add_placeholder_tokens(parts.tokenizer, parts.text_encoder, class_names)
    items = build_grid("bench", tokens, class_names, gen, cfg.seed)           # 70 prompts
    flops = sampler_flops_per_image(parts, gen.steps)
    out, best = [], None
    for batch in sizes["sample_batches"]:
        chosen = (items * (batch // len(items) + 1))[:batch]
        try:
            stats = time_it(lambda: sample_ddim(parts, chosen, None, gen, dtype=torch.bfloat16, batch_invariant=False),
                            sizes["sample_repeats"], warmup=1, device=device)
        except Exception as err:  # noqa: BLE001: out-of-memory ends the sweep, the rest re-raised
            if not is_out_of_memory(err):
                raise
            log(f"sampling: batch {batch} does not fit")
            _free()
            break
        per_image = stats["median_s"] / batch
        log(f"sampling: batch {batch}: {batch / stats['median_s']:.2f} images/s")
        entry = record("gpu.sampling", device, PROFILE, {"batch_size": batch, "steps": gen.steps,
                                                        "guidance_scale": gen.guidance_scale,
                                                        "resolution": parts.resolution},
                       {**stats, **limit_fields(flops, peak, per_image)}, images_per_s=batch / stats["median_s"],
                       per="image (limit and fraction)", autocast="bf16")
        out.append(entry)
        if best is None or entry["images_per_s"] > best["images_per_s"]:
            best = entry
    if best is not None:
        fraction = best.get("fraction_of_limit")
        out.append(record("gpu.sampling.best", device, PROFILE, best["sizes"],
                          {k: best[k] for k in ("median_s", "min_s", "max_s", "repeats", "peak_gpu_mem_gb")},
                          images_per_s=best["images_per_s"], **limit_fields(flops, peak, best["median_s"] /
                                                                            best["sizes"]["batch_size"]),
                          target_fraction=SAMPLING_TARGET_FRACTION,
                          meets_target=None if fraction is None else fraction >= SAMPLING_TARGET_FRACTION))
    del parts
    _free()
    return out


def bench_scoring(args, sizes: dict, device: torch.device, peak: Optional[float], work: Path) -> list[dict]:
    from PIL import Image

    from bas.generation.grid import build_grid
    from bas.generation.run import manifest_frame
    from bas.models.sd21_architectures import build_scorers
    from bas.scoring.score import Scorer

    cfg = make_config(work / "storage", memory=False)
    scene = demo_scene(cfg)
    scorers = build_scorers(device)
    scorer = Scorer(scorers, cfg.scoring, device)
    tokens = [f"<asset{i}>" for i in range(scene.num_concepts)]
    rows = manifest_frame(build_grid(scene.scene_id, tokens, scene.class_names, cfg.generation, cfg.seed),
                          "bench", "ddim").to_dict("records")
    # Generated-image stand-ins at 512 px: the scene image, mirrored every other one.
    mirrored = scene.image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    images = [scene.image if i % 2 == 0 else mirrored for i in range(max(sizes["score_batches"]))]
    pick = lambda n: ((rows * (n // len(rows) + 1))[:n], images[:n], [scene] * n)  # noqa: E731
    scorer.score_batch(*pick(1))                                    # scene embeddings, cached from here on
    flops = count_flops(lambda: scorer.score_batch(*pick(1)))
    out = []
    for batch in sizes["score_batches"]:
        stats = time_it(lambda: scorer.score_batch(*pick(batch)), sizes["score_repeats"], warmup=1, device=device)
        log(f"scoring: batch {batch}: {batch / stats['median_s']:.2f} images/s")
        out.append(record("gpu.scoring", device, PROFILE, {"batch_size": batch, "image_side": 512,
                                                          "maskformer_side": _maskformer_side(scorers)},
                          {**stats, **limit_fields(flops, peak, stats["median_s"] / batch)},
                          images_per_s=batch / stats["median_s"], per="image (limit and fraction)",
                          precision="fp32 (as bas scores)"))
    del scorer, scorers
    _free()
    return out


def _maskformer_side(scorers) -> int:
    return int(scorers.maskformer_processor.size["shortest_edge"])


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, variants and batch sizes")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated: {','.join(SECTIONS)}")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="dense bf16 peak of this GPU in TFLOP/s (default: from the device name)")
    parser.add_argument("--flops-only", action="store_true",
                        help="no GPU needed: parameter and FLOP counts on the meta device, not recorded")
    parser.add_argument("--gpu-name", default="H100", help="with --flops-only: whose peak the limits use")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if set(only) - set(SECTIONS):
        parser.error(f"unknown section(s); choose from {', '.join(SECTIONS)}")
    logging.basicConfig(level=logging.WARNING)
    for name in ("bas", "diffusers", "transformers", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.flops_only:
        return flops_only(args)
    if not torch.cuda.is_available():
        parser.error("no CUDA device: run with --flops-only for the counts, or on a GPU for the timings")
    device = torch.device("cuda")
    peak, source = dense_bf16_peak(torch.cuda.get_device_name(device), args.peak_tflops)
    log(f"{torch.cuda.get_device_name(device)}: dense bf16 peak {peak} TFLOP/s ({source})")
    sizes = SIZES[args.quick]
    out = []
    with tempfile.TemporaryDirectory(prefix="bas-bench-gpu-") as tmp:
        work = Path(tmp)
        for section, fn in (("training", bench_training), ("sampling", bench_sampling), ("scoring", bench_scoring)):
            if section in only:
                out += fn(args, sizes, device, peak, work)
    return out


if __name__ == "__main__":
    main()
