#!/usr/bin/env python
"""Every CPU figure of the benchmark in one run, on the tiny profile (docs/BENCHMARKS.md).

    python bench/cpu.py [--quick] [--threads N] [--only training,generation,scoring,pipeline]

Prints one JSON object per measurement and appends each to bench/results.jsonl
(`BAS_BENCH_NO_RECORD=1`: print only). Ratios are measured within the run, from timings
taken in alternating rounds, so load from other processes falls on both sides alike:

- training: a BaS step vs a plain fine-tuning step of the same model (no attention capture,
  no attention loss, unmasked diffusion loss; the same prior-preservation batch), and vs the
  step the official code takes (`training.cache_latents: false` + `training.attention_capture:
  every_layer`: VAE encode every step, every attention layer through materialised
  probabilities). All three are the engine's own `Trainer.step()`, configured.
- generation: the grid batched (`generation.batch_size`) vs one image at a time, images/s.
- scoring: images/s with `scoring.batch_size` vs batches of one.
- pipeline: bench/pipeline.py, run as a child process because Prefect reads its settings at
  import: the project's real pipeline (dvc.yaml, the Prefect scene tasks) on a one-scene tiny
  copy, a no-change `dvc repro` of it, the real scene tasks' overhead on finished work, and
  Prefect's task machinery on a cheap call (--quick: the stand-ins only).

The tiny profile's models are random and small: these figures compare code paths, they do
not predict GPU seconds (bench/gpu.py does that with the full-size architectures).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from bench.common import paired_ratio, record, time_interleaved  # noqa: E402

PROFILE = "tiny"
SECTIONS = ("training", "generation", "scoring", "pipeline")
CAPTURE_TARGET = 1.15   # a BaS step may cost at most 1.15x a plain fine-tuning step

# Sizes of a full run and of --quick (the test's smoke run).
SIZES = {
    False: dict(train_repeats=15, train_warmup=2, gen_templates=2, gen_steps=None, gen_repeats=2,
                score_repeats=5),
    True: dict(train_repeats=2, train_warmup=1, gen_templates=1, gen_steps=3, gen_repeats=1,
               score_repeats=1),
}


def log(message: str) -> None:
    print(f"[bench/cpu] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- workspace


def make_config(storage: Path, params: Path):
    """params.yaml on the tiny profile, storage in a temporary folder, the demo scenes."""
    from bas.config import load
    from bas.models.tiny import RESOLUTION

    return load(params, {
        "models.profile": PROFILE, "models.cache_dir": str(REPO / ".cache" / "bas" / "models"),
        "paths.storage_root": str(storage),
        "scenes.coco_root": "demo", "scenes.num_scenes": 3, "scenes.resolution": RESOLUTION,
        "training.progress_bar": False,
        # One class image is drawn per step whatever their number: two, made in two steps.
        "training.prior_images.num_images": 2, "training.prior_images.sampling_steps": 2,
        "training.prior_images.batch_size": 2,
    })


def stage_scene(cfg):
    """The demo source's first two-concept scene (BaS scenes have two to four concepts)."""
    from bas import paths
    from bas.scenes import load_scene, stage_coco

    report = stage_coco(cfg.scenes, paths.scenes_dir(cfg))
    scenes = [load_scene(paths.scenes_dir(cfg) / scene_id) for scene_id in report.selected]
    return next(s for s in scenes if s.num_concepts == 2)


# --------------------------------------------------------------------------- training


def plain_recipe(recipe):
    """The same phases, model and prior batch without attention capture and attention loss,
    with the unmasked diffusion loss: plain fine-tuning (DreamBooth-style) of the same model."""
    phases = {name: dataclasses.replace(phase, term_weights={}) for name, phase in recipe.phases.items()}
    return dataclasses.replace(recipe, phases=phases,
                               diffusion_loss=dataclasses.replace(recipe.diffusion_loss, masked=False))


def official_config(cfg):
    """The step the official BaS code takes: VAE encode every step, every attention layer recorded."""
    training = dataclasses.replace(cfg.training, cache_latents=False, attention_capture="every_layer")
    return dataclasses.replace(cfg, training=training)


def bench_training(cfg, scene, sizes: dict, device: torch.device) -> list[dict]:
    from bas.models import load_diffusion
    from bas.training import Trainer, get_recipe

    recipe = get_recipe(cfg, "bas")
    variants = {"bas": (cfg, recipe), "plain": (cfg, plain_recipe(recipe)),
                "official": (official_config(cfg), recipe)}
    trainers = {}
    for name, (variant_cfg, variant_recipe) in variants.items():
        trainer = Trainer(variant_cfg, "bas", variant_recipe, scene, parts=load_diffusion(variant_cfg.models),
                          device=device)
        trainer.setup()
        trainers[name] = trainer
    parts = trainers["bas"].parts
    out, timings = [], {}
    steps = {name: phase.steps for name, phase in recipe.phases.items() if phase.steps > 0}
    for phase in steps:
        for trainer in trainers.values():
            trainer.enter_phase(phase)
        log(f"training {phase}: {len(trainers)} variants x {sizes['train_repeats']} rounds")
        timings[phase] = time_interleaved({name: t.step for name, t in trainers.items()},
                                          sizes["train_repeats"], sizes["train_warmup"])
        trainable = int(sum(q.numel() for q in trainers["bas"].phase.params))
        base = {"phase": phase, "resolution": parts.resolution,
                "latent": parts.resolution // parts.vae_scale_factor, "batch_size": cfg.training.batch_size,
                "prior_images_per_step": cfg.training.batch_size if recipe.prior_preservation else 0,
                "concepts": scene.num_concepts, "trainable_elements": trainable}
        for name, result in timings[phase].items():
            measured = {k: v for k, v in result.items() if k != "times"}
            out.append(record("cpu.train_step", device, PROFILE, base, measured, variant=name,
                              recording_processors=len(trainers[name].recording_processors),
                              vae_encode_every_step=not variants[name][0].training.cache_latents))
        out += _training_ratios(device, base, {phase: timings[phase]}, f"{phase} step")
    for trainer in trainers.values():
        trainer.cleanup()
    # A scene is every phase's steps: per-round scene times, weighted by the recipe's steps.
    scene_times = {name: [sum(steps[p] * timings[p][name]["times"][i] for p in steps)
                          for i in range(sizes["train_repeats"])] for name in variants}
    scene_sizes = {"phases": steps, "resolution": parts.resolution, "concepts": scene.num_concepts}
    out += _training_ratios(device, scene_sizes, {"scene": {n: {"times": t} for n, t in scene_times.items()}},
                            "a scene (" + " + ".join(f"{n} steps of {p}" for p, n in steps.items()) + ")")
    return out


def _training_ratios(device, sizes: dict, timing: dict, what: str) -> list[dict]:
    (key, result), = timing.items()
    overhead = paired_ratio(result["bas"]["times"], result["plain"]["times"])
    speedup = paired_ratio(result["official"]["times"], result["bas"]["times"])
    return [
        record("cpu.train_step.capture_overhead", device, PROFILE, {**sizes, "over": key},
               {"kind": "ratio", **overhead}, numerator="bas", denominator="plain", target_max=CAPTURE_TARGET,
               meaning=f"BaS / plain fine-tuning, {what}"),
        record("cpu.train_step.speedup_vs_official", device, PROFILE, {**sizes, "over": key},
               {"kind": "ratio", **speedup}, numerator="official", denominator="bas",
               meaning=f"official code's step / ours, {what}: latent caching + capture on the loss's layers only"),
    ]


# --------------------------------------------------------------------------- generation


def bench_generation(cfg, scene, sizes: dict, device: torch.device, work: Path) -> tuple[list[dict], Path]:
    import pandas as pd

    from bas import paths
    from bas.generation.run import generate_grid
    from bas.models import load_diffusion
    from bas.tokens import add_placeholder_tokens

    parts = load_diffusion(cfg.models)
    tokens, _ = add_placeholder_tokens(parts.tokenizer, parts.text_encoder, scene.class_names)
    gen = dataclasses.replace(cfg.generation, templates=tuple(cfg.generation.templates[: sizes["gen_templates"]]),
                              steps=sizes["gen_steps"] or cfg.generation.steps)
    modes = {
        "batched": dataclasses.replace(cfg, generation=dataclasses.replace(gen, batch_invariant="never")),
        "one_at_a_time": dataclasses.replace(cfg, generation=dataclasses.replace(
            gen, batch_invariant="always", batch_size=1)),
    }
    last: dict[str, Path] = {}

    def run(mode: str, mode_cfg=None):
        out_dir = work / "generation" / f"{mode}-{uuid.uuid4().hex[:8]}"
        manifest = generate_grid(parts, tokens, scene, "bench", mode_cfg or modes[mode], out_dir, progress=False)
        last[mode] = out_dir
        return manifest

    for mode, mode_cfg in modes.items():   # warm-up: every code path once, in two steps
        run(mode, dataclasses.replace(mode_cfg, generation=dataclasses.replace(mode_cfg.generation, steps=2)))
    log(f"generation: {gen.steps} steps an image, 2 modes x {sizes['gen_repeats']} rounds")
    timings = time_interleaved({mode: (lambda m=mode: run(m)) for mode in modes}, sizes["gen_repeats"], warmup=0)
    images = len(pd.read_parquet(paths.manifest_path(last["batched"])))
    base = {"images": images, "steps": gen.steps, "guidance_scale": gen.guidance_scale,
            "resolution": parts.resolution, "batch_size": gen.batch_size}
    out = []
    for mode, result in timings.items():
        measured = {k: v for k, v in result.items() if k != "times"}
        size = {**base, "batch_size": modes[mode].generation.batch_size}
        out.append(record("cpu.generation", device, PROFILE, size, measured, mode=mode,
                          images_per_s=images / result["median_s"]))
    out.append(record("cpu.generation.batched_speedup", device, PROFILE, base,
                      {"kind": "ratio", **paired_ratio(timings["one_at_a_time"]["times"], timings["batched"]["times"])},
                      numerator="one_at_a_time", denominator="batched",
                      meaning="images/s batched / images/s one image per model call"))
    return out, last["batched"]


# --------------------------------------------------------------------------- scoring


def bench_scoring(cfg, run_dir: Path, sizes: dict, device: torch.device) -> list[dict]:
    import pandas as pd

    from bas import paths
    from bas.models import load_scorers
    from bas.scoring.score import SceneCache, make_scorer, score_manifest

    scorers = load_scorers(cfg.models)
    manifest = pd.read_parquet(paths.manifest_path(run_dir))
    batch = cfg.scoring.batch_size
    modes = {"batched": batch, "one_at_a_time": 1}
    runners = {}
    for mode, size in modes.items():
        mode_cfg = dataclasses.replace(cfg, scoring=dataclasses.replace(cfg.scoring, batch_size=size))
        scorer = make_scorer(mode_cfg, scorers=scorers)
        scenes = SceneCache(paths.scenes_dir(cfg))
        runners[mode] = (lambda s=scorer, c=scenes: score_manifest(manifest, run_dir, c, s, kind="method", progress=False))
    log(f"scoring: {len(manifest)} images, 2 modes x {sizes['score_repeats']} rounds")
    timings = time_interleaved(runners, sizes["score_repeats"], warmup=1)
    base = {"images": len(manifest), "image_side": int(cfg.scenes.resolution)}
    out = []
    for mode, result in timings.items():
        measured = {k: v for k, v in result.items() if k != "times"}
        out.append(record("cpu.scoring", device, PROFILE, {**base, "batch_size": modes[mode]}, measured, mode=mode,
                          images_per_s=len(manifest) / result["median_s"]))
    out.append(record("cpu.scoring.batched_speedup", device, PROFILE, {**base, "batch_size": batch},
                      {"kind": "ratio", **paired_ratio(timings["one_at_a_time"]["times"], timings["batched"]["times"])},
                      numerator="one_at_a_time", denominator="batched",
                      meaning="images/s batched / images/s one image per model call"))
    return out


# --------------------------------------------------------------------------- pipeline


def bench_pipeline(quick: bool) -> list[dict]:
    """bench/pipeline.py in a child process; its records (it appends them itself) are returned."""
    command = [sys.executable, str(REPO / "bench" / "pipeline.py")] + (["--quick"] if quick else [])
    log("pipeline: " + " ".join(command[1:]))
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
    entries = []
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            print(line, flush=True)
            entries.append(json.loads(line))
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise RuntimeError(f"bench/pipeline.py failed with exit status {done.returncode}")
    return entries


# --------------------------------------------------------------------------- main


def summary_lines(entries: list[dict]) -> list[str]:
    lines = []
    for e in entries:
        label = e["name"] + "".join(f" {e[k]}" for k in ("variant", "mode") if k in e)
        over = e["sizes"].get("over") or e["sizes"].get("phase") or ""
        if e.get("kind") == "ratio":
            lines.append(f"{label:50s} {over:8s} ratio {e['ratio']:.3f} (rounds {e['min']:.3f}-{e['max']:.3f})")
        elif "median_s" in e:
            extra = f"  {e['images_per_s']:.2f} img/s" if "images_per_s" in e else ""
            lines.append(f"{label:50s} {over:8s} {e['median_s'] * 1000:9.1f} ms{extra}")
    return lines


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repeats and steps: a smoke run (seconds)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})")
    parser.add_argument("--params", default=str(REPO / "params.yaml"), help="params file (default the repo's)")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if "scoring" in only and "generation" not in only:
        only.append("generation")   # scoring scores the images the generation benchmark made
    logging.basicConfig(level=logging.WARNING)
    for name in ("bas", "diffusers", "transformers", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = SIZES[args.quick]
    device = torch.device("cpu")
    started = time.perf_counter()
    entries: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bas-bench-") as tmp:
        work = Path(tmp)
        cfg = make_config(work / "storage", Path(args.params))
        if any(s in only for s in ("training", "generation", "scoring")):
            scene = stage_scene(cfg)
            log(f"scene {scene.scene_id} ({', '.join(scene.class_names)}), {torch.get_num_threads()} torch threads")
        if "training" in only:
            entries += bench_training(cfg, scene, sizes, device)
        if "generation" in only:
            generated, run_dir = bench_generation(cfg, scene, sizes, device, work)
            entries += generated
            if "scoring" in only:
                entries += bench_scoring(cfg, run_dir, sizes, device)
        if "pipeline" in only:
            entries += bench_pipeline(args.quick)
    log(f"done in {time.perf_counter() - started:.0f} s" +
        ("" if os.environ.get("BAS_BENCH_NO_RECORD") == "1" else "; appended to bench/results.jsonl"))
    for line in summary_lines(entries):
        print("  " + line, file=sys.stderr)
    return entries


if __name__ == "__main__":
    main()
