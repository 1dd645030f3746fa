#!/usr/bin/env python
"""Train the sandbox base model on a GPU within a time budget (docs/SANDBOX.md).

    python scripts/sandbox_train_gpu.py --budget-s 330 --out /tmp/sandbox-gpu [--pack DIR]

The run is sized to the time it is given: it times two short runs of the real trainer on the
device (their difference is the cost of a step), picks the number of base steps that fits
`--budget-s`, then runs `bas sandbox train --only vae,base,validity` on the
GPU with those params (one cosine cycle, no warm restart) into `--out`, with the bundled
judge copied beside it for the validity stage. The number of steps is decided before the
run, so the run is an ordinary `bas sandbox train` whose record names every param; the
command that repeats it is printed at the end. `--pack DIR` tars the finished diffusion model
into parts of 15 MiB at most in DIR, for copying it off the GPU machine where a file's size is
limited (cat them | tar -x).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PART_BYTES = 15 * 2**20   # under 16 MiB a file, so the parts pass copies that limit file size
PROBE_SHORT = 10          # steps of the shorter probe run


def overrides(args: argparse.Namespace, steps: int) -> dict:
    stage = {"steps": steps, "batch_size": args.batch_size, "lr": args.lr, "warmup_steps": min(args.warmup_steps, steps)}
    values = {"models.sandbox_weights": str(args.out), "sandbox.base": stage, "sandbox.base_restart": None,
              "sandbox.validity_samples": args.validity_samples}
    if args.vae_steps is not None:
        values["sandbox.vae.steps"] = args.vae_steps
    return values


def seconds_per_step(args: argparse.Namespace, device, workers: int) -> float:
    """Wall seconds a base step takes here: two short runs of the real trainer, `--probe-steps`
    apart, so that start-up (building models, starting render workers) cancels out."""
    from transformers import CLIPTokenizer

    from bas import config
    from bas.models.tokenizer import write_clip_tokenizer
    from bas.sandbox import base_model
    from bas.sandbox import train_diffusion as td

    def timed(steps: int, tmp: Path, tokenizer) -> float:
        cfg = config.load(REPO / "params.yaml", overrides(args, steps))
        vae = base_model.build_vae(scaling_factor=1.0)
        started = time.time()
        td.train_base(cfg.sandbox, vae, tokenizer, tmp / f"work-{steps}", device=device, workers=workers)
        if device.type == "cuda":
            import torch

            torch.cuda.synchronize()
        return time.time() - started

    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer(Path(tmp) / "tokenizer")
        tokenizer = CLIPTokenizer.from_pretrained(Path(tmp) / "tokenizer")
        short = timed(PROBE_SHORT, Path(tmp), tokenizer)
        long = timed(PROBE_SHORT + args.probe_steps, Path(tmp), tokenizer)
    return max(long - short, 1e-3) / args.probe_steps


def pack(diffusion_dir: Path, out: Path) -> list[Path]:
    """diffusion_dir as diffusion.tar.part-00, -01, ... in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    archive = Path(tempfile.mkdtemp()) / "diffusion.tar"
    subprocess.run(["tar", "-cf", str(archive), "-C", str(diffusion_dir.parent), diffusion_dir.name], check=True)
    data, parts = archive.read_bytes(), []
    for k in range(0, len(data), PART_BYTES):
        part = out / f"diffusion.tar.part-{k // PART_BYTES:02d}"
        part.write_bytes(data[k:k + PART_BYTES])
        parts.append(part)
    return parts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, required=True, help="wall seconds for the whole run")
    parser.add_argument("--out", type=Path, required=True, help="sandbox weights directory to write")
    parser.add_argument("--pack", type=Path, help="also write the diffusion model here as tar parts")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--warmup-steps", type=int, default=200)
    parser.add_argument("--probe-steps", type=int, default=100,
                        help="steps the longer probe run adds to the shorter one (default: %(default)s)")
    parser.add_argument("--reserve-s", type=float, default=90.0,
                        help="kept for the VAE, validity sampling and saving (default: %(default)s)")
    parser.add_argument("--validity-samples", type=int, default=200)
    parser.add_argument("--vae-steps", type=int, help="default: sandbox.vae.steps of params.yaml")
    parser.add_argument("--max-steps", type=int, default=100_000)
    args = parser.parse_args(argv)

    import logging

    from bas import config
    from bas.sandbox.stages import resolve_device, resolve_workers, run_stages

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.time()
    device = resolve_device(args.device)
    workers = resolve_workers(args.workers, device)
    rate = seconds_per_step(args, device, workers)
    left = args.budget_s - (time.time() - started) - args.reserve_s
    steps = max(1, min(args.max_steps, int(left / rate)))
    print(json.dumps({"probe_s_per_step": round(rate, 4), "steps": steps, "batch_size": args.batch_size,
                      "device": str(device), "workers": workers}), flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    bundled_judge = REPO / "bas" / "data" / "sandbox" / "judge"
    if not (args.out / "judge").exists():
        shutil.copytree(bundled_judge, args.out / "judge")
    cfg = config.load(REPO / "params.yaml", overrides(args, steps))
    records = run_stages(cfg, ["vae", "base", "validity"], args.out / ".work", device, workers)
    shutil.rmtree(args.out / ".work", ignore_errors=True)
    record = json.loads((args.out / "diffusion" / "training_record.json").read_text())
    print(json.dumps({"validity": records["validity"], "wall_s": round(time.time() - started, 1),
                      "device": record["device"]}), flush=True)
    base = json.dumps(overrides(args, steps)["sandbox.base"]).replace('"', "")
    vae = f" -S sandbox.vae.steps={args.vae_steps}" if args.vae_steps is not None else ""
    print(f"repeat with: bas -S 'sandbox.base={base}' -S sandbox.base_restart=null{vae} "
          f"sandbox train --only vae,base,validity --device {device.type}", flush=True)
    if args.pack:
        parts = pack(args.out / "diffusion", args.pack)
        shutil.copy(args.out / "diffusion" / "training_record.json", args.pack / "training_record.json")
        print(f"packed: {', '.join(p.name for p in parts)} (cat them | tar -x)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
