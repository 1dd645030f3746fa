"""Judge a `bas sandbox train` run's base model at its latest checkpoint, while it trains.

    python scripts/sandbox_checkpoint_eval.py WORK_DIR [--samples 48] [--guidance 3 7.5] [--set KEY=VALUE ...]

Run with the same `-S` overrides as the training (`--set KEY=VALUE`, repeatable), so the VAE's
calibration and the design params are the run's. It exports the checkpoint's EMA UNet and text
encoder with the run's VAE into `WORK_DIR/eval/step-<N>/diffusion` (the diffusers layout, fp16,
as `bas sandbox train` writes a finished model), loads them through the registry, and measures:

- the judged background / shape / colour / pattern of samples of the first `--samples` held-out
  single-object captions (seen identities; the validity figures' own stream), at each guidance;
- the diffusion loss per timestep band (0-250 / 250-500 / 500-750 / 750-1000) on held-out
  training batches (stream `base-heldout`), unweighted epsilon MSE, with the floor the latents
  imply: the posterior's sampling noise that no model can predict, `(std_post / std_noise)^2`
  mapped through each band's SNR.

One JSON line a checkpoint goes to `WORK_DIR/eval/results.jsonl`; samples (the first 16
captions, one row a guidance) to `WORK_DIR/eval/step-<N>.png`. One thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sandbox_probe import evaluate   # scripts/: the probes' judged samples and sample strip

BANDS = ((0, 250), (250, 500), (500, 750), (750, 1000))


def band_losses(parts, cfg, batches: int = 4, batch_size: int = 32) -> dict:
    """Unweighted epsilon MSE per timestep band on held-out batches, and the floor of each band."""
    from bas.sandbox import train_diffusion as td

    scheduler = parts.noise_scheduler
    alphas = scheduler.alphas_cumprod
    losses = {band: [] for band in BANDS}
    floors = {band: [] for band in BANDS}
    sf = parts.vae.config.scaling_factor
    with torch.no_grad():
        for b in range(batches):
            images = td.world_batch(cfg.seed, "base-heldout", b, batch_size, layout=cfg.base_layout)
            pixels = td.to_pixels(images)
            dist = parts.vae.encode(pixels).latent_dist
            gen = torch.Generator().manual_seed(1000 + b)
            latents = dist.sample(gen) * sf
            post_var = (dist.std * sf).pow(2).mean().item()
            captions = [w.caption(random.Random(f"eval:{b}:{i}")) for i, w in enumerate(images)]
            context = td.encode_text(parts.tokenizer, parts.text_encoder, captions)
            for lo, hi in BANDS:
                t = torch.randint(lo, hi, (batch_size,), generator=gen)
                noise = torch.randn(latents.shape, generator=gen)
                noisy = scheduler.add_noise(latents, noise, t)
                pred = parts.unet(noisy, t, context).sample
                losses[(lo, hi)].append((pred - noise).pow(2).mean().item())
                # x_t = sqrt(a) (mu + s z) + sqrt(1-a) eps: the best eps estimate misses s z's share
                a = alphas[t]
                floors[(lo, hi)].append(float((a * post_var / (a * post_var + (1 - a))).mean()))
    return {f"{lo}-{hi}": {"loss": round(float(np.mean(losses[(lo, hi)])), 4),
                           "floor": round(float(np.mean(floors[(lo, hi)])), 4)} for lo, hi in BANDS}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work_dir", type=Path)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="the training's -S overrides")
    ap.add_argument("--samples", type=int, default=48)
    ap.add_argument("--guidance", type=float, nargs="+", default=[3.0, 7.5])
    ap.add_argument("--eval-steps", type=int, default=20)
    ap.add_argument("--judge", type=Path, default=Path("bas/data/sandbox/judge"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from bas import config
    from bas.cli import parse_overrides
    from bas.models.registry import load_diffusion
    from bas.sandbox import base_model
    from bas.sandbox import train_diffusion as td
    from bas.sandbox.classifiers import Judge

    cfg = config.load("params.yaml", parse_overrides(args.set))
    sb = cfg.sandbox
    ckpt = torch.load(args.work_dir / "base.pt", map_location="cpu", weights_only=False)
    step = int(ckpt["step"])
    out = args.work_dir / "eval"
    target = out / f"step-{step}"
    if not (target / "diffusion").is_dir():
        vae, _ = td.train_vae(sb, args.work_dir)   # finished: loads the checkpoint, then calibrates
        unet, text = base_model.build_unet(), base_model.build_text_encoder()
        unet.load_state_dict(ckpt["ema_unet"])
        text.load_state_dict(ckpt["ema_text"])
        td.save_diffusion(target / "diffusion", vae, unet, text, {"seed": sb.seed, "step": step})
    del ckpt
    models = dataclasses.replace(cfg.models, profile="sandbox", sandbox_weights=str(target))
    parts = load_diffusion(models)
    judge = Judge.load(args.judge)
    started = time.time()
    figures = evaluate(parts, judge, cfg, args.samples, args.guidance, args.eval_steps, out / f"step-{step}.png")
    line = {"step": step, "samples": args.samples, "eval_steps": args.eval_steps, "judged": figures,
            "band_loss": band_losses(parts, sb), "overrides": args.set,
            "eval_seconds": round(time.time() - started, 1)}
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
