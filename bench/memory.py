#!/usr/bin/env python
"""Peak memory of the sd21 profile's training phases and generation (docs/BENCHMARKS.md).

    python -m bench.memory [--cases bas.phase1,bas.phase2,...] [--write-table]

The models are SD 2.1-base's UNet, VAE and text encoder at their real sizes with random
weights (`bas.models.sd21_architectures.build_diffusion`), run through the project's own code
on a 512 px scene: `Trainer.compute_losses()` and its backward pass for a training phase, the
DDIM/CFG sampler and VAE decode for generation. Each case runs in its own process on the CPU.

What is counted and what is measured:
- counted exactly (`bas.models.memory`): fp32 weights of the three models, one fp32 gradient
  per trained parameter, the optimizer's two moments (AdamW fp32, 8-bit AdamW one byte each);
- measured: the step, the rise of resident memory (VmHWM, Linux) from the trained state before
  the step to the peak of its forward and backward pass. Less the gradients it writes, that is
  the step's activations, attention maps and temporaries, stored per image. It is measured with
  gradient checkpointing off and on; the optimizer does not change it.

A phase's peak = weights + gradients + moments (per option set) + activations. On a CUDA device
with `training.mixed_precision` (bf16 autocast), autocast also keeps a 2-byte copy of every
trained weight from the forward to the backward pass: counted, and added to the CUDA column,
while the activations stay the fp32 figures measured here (autocast computes most of them in
bf16, so the CUDA column is an upper bound). `--write-table` stores the measurements in
`bas/models/sd21_memory.json`, which `training.memory: auto` and `bas models check` read;
`--validate CASE:OPTIONS` runs two real optimizer steps and compares the peak with the table.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# case: (method, phase). BaS's two phases, and the phase 2 of the DreamBooth-M, Custom Diffusion-M
# and MIFO baselines: UNet + text encoder, or cross-attention K/V, trained beside the tokens.
TRAINING_CASES = {
    "bas.phase1": ("bas", "phase1"),
    "bas.phase2": ("bas", "phase2"),
    "db_m.phase2": ("db_m", "phase2"),
    "cd_m.phase2": ("cd_m", "phase2"),
    "mifo.phase2": ("mifo", "phase2"),
}
GENERATION_CASES = {"generate.batch1": 1, "generate.batch8": 8}
# Every combination of the engine's memory options (training.memory: auto tries them in the
# order of bas.models.memory.OPTION_SETS).
TABLE_OPTIONS = ((), ("gradient_checkpointing",), ("use_8bit_adam",), ("gradient_checkpointing", "use_8bit_adam"))
ALL_CASES = (*TRAINING_CASES, *GENERATION_CASES)
GB = 1e9


def log(message: str) -> None:
    print(f"[bench/memory] {message}", file=sys.stderr, flush=True)


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmRSS in /proc/self/status")


def settle() -> int:
    """Free what Python and the C allocator hold, then the resident bytes."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    return rss_bytes()


def _config(storage: Path, gradient_checkpointing: bool, use_8bit_adam: bool = False):
    from bas.config import load

    return load(REPO / "params.yaml", {
        "models.profile": "sd21", "paths.storage_root": str(storage),
        "scenes.coco_root": "demo", "scenes.num_scenes": 3, "scenes.resolution": 512,
        "training.progress_bar": False, "training.memory": "manual",
        "training.gradient_checkpointing": gradient_checkpointing, "training.use_8bit_adam": use_8bit_adam,
        # One class image with one DDIM step: the set's size does not change a step's memory.
        "training.prior_images.num_images": 1, "training.prior_images.sampling_steps": 1,
        "training.prior_images.batch_size": 1,
    })


def _scene(cfg):
    from bas import paths
    from bas.scenes import load_scene, stage_coco

    report = stage_coco(cfg.scenes, paths.scenes_dir(cfg))
    return next(s for s in (load_scene(paths.scenes_dir(cfg) / i) for i in report.selected) if s.num_concepts == 2)


def _phase_trainer(case: str, cfg, work: Path, steps: int):
    """A Trainer of `case`'s method on the full-size random models whose recipe runs only the
    case's phase, for `steps` steps (which parameters train is what matters here); set up, in
    that phase. -> (trainer, phase state)"""
    import torch

    from bas.models.sd21_architectures import build_diffusion
    from bas.training import Trainer, get_recipe

    method, phase = TRAINING_CASES[case]
    recipe = get_recipe(cfg, method)
    phases = {name: dataclasses.replace(p, steps=steps if name == phase else 0) for name, p in recipe.phases.items()}
    recipe = dataclasses.replace(recipe, phases=phases)
    device = torch.device("cpu")
    parts = build_diffusion(device, tokenizer_dir=work / "tokenizer")
    trainer = Trainer(cfg, method, recipe, _scene(cfg), parts=parts, device=device)
    trainer.setup()
    return trainer, trainer.enter_phase(phase)


def measure_training(case: str, gradient_checkpointing: bool, work: Path) -> dict:
    """One forward and backward pass of `case`'s phase at 512 px; the step's peak above the trained state."""
    method, phase = TRAINING_CASES[case]
    process = settle()
    trainer, state = _phase_trainer(case, _config(work / "storage", gradient_checkpointing), work, steps=1)
    recipe = trainer.recipe
    before = settle()
    reset = _reset_peak()
    started = time.perf_counter()
    loss, _, facts = trainer.compute_losses()
    loss.backward()
    seconds = time.perf_counter() - started
    peak = _peak_bytes() if reset else None
    grads = sum(p.grad.numel() * p.grad.element_size() for p in state.params if p.grad is not None)
    samples = facts["prior_images"] + len(facts["concepts"])
    return {"case": case, "method": method, "phase": phase, "trainable": list(recipe.phases[phase].trainable),
            "samples": samples, "attention_terms": sorted(trainer.phase_terms(recipe.phases[phase])),
            "gradient_checkpointing": gradient_checkpointing, "step_bytes": None if peak is None else peak - before,
            "gradient_bytes": grads, "trained_state_rss_bytes": before, "process_rss_bytes": process,
            "step_s": round(seconds, 1)}


def validate_training(case: str, options: tuple[str, ...], work: Path) -> dict:
    """Two real training steps (optimizer included) with `options`: the second step's peak above
    the loaded models, against the table's prediction of it (gradients + moments + activations)."""
    process = settle()
    cfg = _config(work / "storage", "gradient_checkpointing" in options, "use_8bit_adam" in options)
    trainer, _ = _phase_trainer(case, cfg, work, steps=2)
    loaded = settle()                   # the models, the libraries, the scene and class image
    trainer.step()                      # the optimizer's moments exist from here on
    after_first = settle()
    reset = _reset_peak()
    started = time.perf_counter()
    trainer.step()
    seconds = time.perf_counter() - started
    peak = _peak_bytes() if reset else None
    return {"case": case, "options": list(options), "peak_above_loaded_bytes": None if peak is None else peak - loaded,
            "kept_after_first_step_bytes": after_first - loaded, "loaded_above_process_bytes": loaded - process,
            "step_s": round(seconds, 1)}


def measure_generation(case: str, work: Path) -> dict:
    """One DDIM step with CFG and the VAE decode for a batch of images: the peak above the loaded models."""
    import torch

    from bas.generation.sampler import generate
    from bas.models.sd21_architectures import build_diffusion

    batch = GENERATION_CASES[case]
    process = settle()
    parts = build_diffusion(torch.device("cpu"), tokenizer_dir=work / "tokenizer")
    before = settle()
    reset = _reset_peak()
    started = time.perf_counter()
    generate(parts, ["a photo of a dog at the beach"] * batch, list(range(batch)), steps=1, guidance_scale=7.5,
             batch_size=batch)
    seconds = time.perf_counter() - started
    peak = _peak_bytes() if reset else None
    return {"case": case, "batch": batch, "step_bytes": None if peak is None else peak - before,
            "loaded_rss_bytes": before, "process_rss_bytes": process, "step_s": round(seconds, 1)}


def _reset_peak() -> bool:
    from bench.common import reset_peak_rss

    return reset_peak_rss()


def _peak_bytes() -> int:
    from bench.common import peak_rss_mb

    return int(peak_rss_mb() * 1024 * 1024)


def run_child(case: str, gradient_checkpointing: bool, work: Path, timeout_s: float,
              validate: Optional[tuple[str, ...]] = None) -> dict:
    """Measure one case in a fresh process (its own allocator, its own peak)."""
    argv = [sys.executable, "-m", "bench.memory", "--child", case, "--work", str(work)]
    if gradient_checkpointing:
        argv.append("--gradient-checkpointing")
    if validate is not None:     # () validates the phase without any option
        argv += ["--validate-options", "+".join(validate)]
    # Large tensors from mmap, returned to the system when freed: the resident size then follows
    # what torch holds instead of what the C allocator keeps for later.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.memory {case}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def phase_totals(measured: dict, counts=None) -> dict:
    """Peak bytes of a measured training phase for every memory option set, as `training.memory:
    auto` computes them: {options: {"cpu": fp32 peak, "cuda": with bf16 autocast's cast copies}}."""
    from bas.models.memory import phase_peak, sd21_parameter_counts

    counts = counts or sd21_parameter_counts()
    table = {"training": {"case": measured}}
    return {"+".join(options) or "fp32": {
        device: phase_peak(counts, measured["trainable"], measured["samples"], options, table,
                           autocast=device == "cuda") for device in ("cpu", "cuda")}
        for options in TABLE_OPTIONS}


def fits_table(rows: dict, sizes_gb=(12, 16, 24, 40, 80)) -> list[str]:
    """Markdown: each case and option set, its peaks, and the GPU sizes its CUDA peak fits (with head-room)."""
    from bas.models.memory import HEADROOM

    lines = ["| case | options | CPU, fp32 (GB) | CUDA, bf16 autocast (GB) | "
             + " | ".join(f"{g} GB" for g in sizes_gb) + " |",
             "|---|---|---|---|" + "---|" * len(sizes_gb)]
    for case, totals in rows.items():
        for options, peak in totals.items():
            marks = ["yes" if peak["cuda"] <= g * GB * (1 - HEADROOM) else "no" for g in sizes_gb]
            lines.append(f"| {case} | {options.replace('+', ' + ')} | {peak['cpu'] / GB:.1f} | {peak['cuda'] / GB:.1f} | "
                         + " | ".join(marks) + " |")
    return lines


def generation_table(generation: dict, sizes_gb=(12, 16, 24, 40, 80)) -> list[str]:
    """Markdown: generation's peak (fp32 weights + the measured step) per batch and the GPU sizes it fits."""
    from bas.models.memory import HEADROOM, sd21_parameter_counts, weight_bytes

    weights = weight_bytes(sd21_parameter_counts())
    lines = ["| generation | peak GB | " + " | ".join(f"{g} GB" for g in sizes_gb) + " |",
             "|---|---|" + "---|" * len(sizes_gb)]
    for case, m in generation.items():
        total = weights + m["step_bytes"]
        marks = ["yes" if total <= g * GB * (1 - HEADROOM) else "no" for g in sizes_gb]
        lines.append(f"| batch {m['batch']} | {total / GB:.1f} | " + " | ".join(marks) + " |")
    return lines


def validate(parser, args) -> int:
    import torch

    from bas.models.memory import measured
    from bench.common import record

    case, _, joined = args.validate.partition(":")
    options = tuple(o for o in joined.split("+") if o)
    table = measured()
    if case not in TRAINING_CASES or table is None or case not in table["training"]:
        parser.error(f"--validate {args.validate}: needs a training case of bas/models/sd21_memory.json")
    unknown = set(options) - {"gradient_checkpointing", "use_8bit_adam"}
    if unknown:
        parser.error(f"--validate: unknown option(s) {', '.join(sorted(unknown))}")
    from bas.models.memory import sd21_parameter_counts, weight_bytes

    predicted = phase_totals(table["training"][case])["+".join(options) or "fp32"]["cpu"] - \
        weight_bytes(sd21_parameter_counts())
    with tempfile.TemporaryDirectory(prefix="bas-bench-memory-") as tmp:
        work = args.work or Path(tmp)
        run = run_child(case, False, work, args.timeout_s, validate=options)
    measured_bytes = run["peak_above_loaded_bytes"]
    log(f"{case} with {'+'.join(options) or 'no options'}, above the loaded models: predicted {predicted / GB:.2f} GB, "
        f"measured {measured_bytes / GB:.2f} GB (moments and what else the first step kept: "
        f"{run['kept_after_first_step_bytes'] / GB:.2f} GB)")
    record("memory.validate", torch.device("cpu"), "sd21-random", {"case": case, "options": list(options)},
           {"predicted_bytes": predicted, "measured_bytes": measured_bytes, "run": run})
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(ALL_CASES), help="comma-separated, of: " + ", ".join(ALL_CASES))
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--timeout-s", type=float, default=3600.0, help="per measured process")
    parser.add_argument("--write-table", action="store_true", help="store the step bytes in bas/models/sd21_memory.json")
    parser.add_argument("--print-table", action="store_true",
                        help="measure nothing: print the Markdown table of bas/models/sd21_memory.json")
    parser.add_argument("--validate", default=None, metavar="CASE:OPTIONS",
                        help="measure nothing new: run two real training steps of CASE with OPTIONS (e.g. "
                             "bas.phase2:gradient_checkpointing+use_8bit_adam) and compare the second step's peak "
                             "with the stored table's prediction")
    parser.add_argument("--validate-options", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--gradient-checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        if args.validate_options is not None:
            options = tuple(o for o in args.validate_options.split("+") if o)
            result = validate_training(args.child, options, args.work)
        elif args.child in TRAINING_CASES:
            result = measure_training(args.child, args.gradient_checkpointing, args.work)
        else:
            result = measure_generation(args.child, args.work)
        print(json.dumps(result), flush=True)
        return 0

    if args.print_table:
        from bas.models.memory import measured

        table = measured()
        if table is None:
            parser.error("no bas/models/sd21_memory.json yet: run with --write-table first")
        print("\n".join(fits_table({case: phase_totals(m) for case, m in table["training"].items()})))
        print("\n".join(generation_table(table["generation"])))
        return 0
    if args.validate:
        return validate(parser, args)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in ALL_CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(ALL_CASES)}")
    import torch

    from bench.common import record

    with tempfile.TemporaryDirectory(prefix="bas-bench-memory-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        table: dict = {"training": {}, "generation": {}}
        for case in cases:
            if case in TRAINING_CASES:
                runs = {}
                for checkpointing in (False, True):
                    log(f"{case}, gradient checkpointing {'on' if checkpointing else 'off'}")
                    runs[checkpointing] = run_child(case, checkpointing, work, args.timeout_s)
                    log(f"{case}: step {runs[checkpointing]['step_bytes'] / GB:.2f} GB in {runs[checkpointing]['step_s']} s")
                first = runs[False]
                measured = {key: first[key] for key in ("method", "phase", "trainable", "samples", "attention_terms")}
                measured["step_bytes"] = {str(k).lower(): r["step_bytes"] for k, r in runs.items()}
                measured["gradient_bytes"] = first["gradient_bytes"]
                totals = phase_totals(measured)
                table["training"][case] = measured
                record("memory.train_phase", torch.device("cpu"), "sd21-random", {"case": case, "resolution": 512,
                       "samples": first["samples"]}, {"step_bytes": measured["step_bytes"],
                       "peak_bytes": totals, "runs": list(runs.values())})
            else:
                run = run_child(case, False, work, args.timeout_s)
                log(f"{case}: step {run['step_bytes'] / GB:.2f} GB in {run['step_s']} s")
                table["generation"][case] = {"batch": run["batch"], "step_bytes": run["step_bytes"]}
                record("memory.generate", torch.device("cpu"), "sd21-random", {"case": case, "batch": run["batch"],
                       "resolution": 512}, {"step_bytes": run["step_bytes"], "run": run})
        if args.write_table:
            from bas.models.memory import write_measured

            path = write_measured(table, source=f"python -m bench.memory --cases {','.join(cases)} --write-table")
            log(f"wrote {path}")
        rows = {case: phase_totals(m) for case, m in table["training"].items()}
        print("\n".join(fits_table(rows)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
