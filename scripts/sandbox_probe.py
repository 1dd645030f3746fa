"""Design probes for the sandbox base model: train a candidate briefly, judge it at checkpoints.

    python scripts/sandbox_probe.py --candidate NAME --steps 450 --eval-every 150 --out /work/probe

Each candidate is a set of levers over the committed trainer (`bas.sandbox.train_diffusion`):
the base-training distribution (object count and size), the conditioning path (a text encoder
pretrained on world captions and frozen, as SD freezes OpenCLIP, or trained jointly), loss
weighting on object pixels, learning rate and batch. The VAE is the committed one (its judged
ceiling: shape 0.91), or the one in `--weights DIR` (`DIR/diffusion/vae`). At each checkpoint the EMA model samples held-out single-object captions
of seen identities (`bas.sandbox.validity.probes`, the validity figures' own stream, first
`--samples`) at every `--guidance`, DDIM `--eval-steps`, and the committed judge reads
background, shape, colour and pattern. One JSON line a checkpoint goes to
`<out>/<candidate>.jsonl`; samples to `<out>/<candidate>-<step>.png`. One thread, resumable
from `<out>/<candidate>.pt`.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import bas.config
from bas.config import SandboxStage
from bas.sandbox import base_model, world
from bas.sandbox.loop import lr_at, stage_rng
from bas.sandbox.train_diffusion import encode_text, to_pixels

BASE = dict(counts=(1, 2, 3, 4), count_probs=(0.3, 0.35, 0.25, 0.1), sides=(16, 40), text="joint",
            text_steps=0, object_weight=1.0, lr=5e-4, batch=32, warmup=100, min_snr=5.0,
            caption_dropout=0.1, attribute_dropout=0.1)

CANDIDATES = {
    "baseline": {},
    # Okawa et al.-style signal: mostly one large object (eval objects are 34-49 px)
    "large": dict(counts=(1, 2), count_probs=(0.7, 0.3), sides=(28, 48)),
    # SD's arrangement: the text encoder pretrained on captions (binding at the shape token), frozen
    "frozen-text": dict(text="frozen", text_steps=300),
    "frozen-text-large": dict(text="frozen", text_steps=300, counts=(1, 2), count_probs=(0.7, 0.3), sides=(28, 48)),
    "frozen-text-large-obj3": dict(text="frozen", text_steps=300, counts=(1, 2), count_probs=(0.7, 0.3),
                                   sides=(28, 48), object_weight=3.0),
    "frozen-text-large-lr1e-3": dict(text="frozen", text_steps=300, counts=(1, 2), count_probs=(0.7, 0.3),
                                     sides=(28, 48), lr=1e-3),
    # both levers above at once: the faster optimiser and the object-focused loss
    "frozen-text-large-lr1e-3-obj3": dict(text="frozen", text_steps=300, counts=(1, 2), count_probs=(0.7, 0.3),
                                          sides=(28, 48), lr=1e-3, object_weight=3.0),
    # the same, carried on from its step-300 checkpoint with a 1500-step cosine (the lr schedule
    # is re-planned at step 300: 6.9e-4 there under 600 steps, 9.5e-4 under 1500)
    "frozen-text-large-lr1e-3-obj3-long": dict(text="frozen", text_steps=300, counts=(1, 2), count_probs=(0.7, 0.3),
                                               sides=(28, 48), lr=1e-3, object_weight=3.0),
    # batch versus steps at equal samples: twice the updates of half the batch
    "frozen-text-large-lr1e-3-obj3-b16": dict(text="frozen", text_steps=300, counts=(1, 2), count_probs=(0.7, 0.3),
                                              sides=(28, 48), lr=1e-3, object_weight=3.0, batch=16),
}


def batch(seed: int, step: int, c: dict):
    rng = stage_rng(seed, "probe-base", step)
    identities = world.seen_identities(seed)
    pictures = [world.sample_training_image(rng, identities, counts=c["counts"], count_probs=c["count_probs"],
                                            sides=c["sides"]) for _ in range(c["batch"])]
    text_rng = random.Random(f"{seed}:probe-captions:{step}")
    captions = ["" if text_rng.random() < c["caption_dropout"] else
                p.caption(text_rng, drop_attribute=c["attribute_dropout"], drop_background=0.1) for p in pictures]
    masks = torch.from_numpy(np.stack([np.any(p.masks, axis=0) if p.masks else np.zeros((64, 64), bool)
                                       for p in pictures]).astype(np.float32))[:, None]   # (B, 1, 64, 64)
    return to_pixels(pictures), captions, F.avg_pool2d(masks, 2)                          # mask (B, 1, 32, 32)


def evaluate(parts, judge, cfg, samples: int, guidances, steps: int, out_png: Path) -> dict:
    from PIL import Image

    from bas.generation.sampler import generate
    from bas.sandbox.validity import accuracy, probes

    batch_ = probes(cfg.sandbox, False, samples)
    result, rows = {}, []
    for g in guidances:
        images = generate(parts, [p.caption for p in batch_], [p.seed for p in batch_], steps=steps,
                          guidance_scale=g, batch_size=16)
        result[str(g)] = accuracy(batch_, judge.predict(images))
        rows.append(np.concatenate([np.array(i) for i in images[:16]], 1))
    Image.fromarray(np.concatenate(rows, 0)).save(out_png)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--candidate", required=True, choices=sorted(CANDIDATES))
    ap.add_argument("--steps", type=int, default=450)
    ap.add_argument("--eval-every", type=int, default=150)
    ap.add_argument("--samples", type=int, default=48)
    ap.add_argument("--guidance", type=float, nargs="+", default=[3.0, 7.5])
    ap.add_argument("--eval-steps", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("/work/probe"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--weights", type=Path, help="sandbox weights whose VAE, tokenizer and judge the probe uses "
                                                  "(default: the committed ones)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    c = {**BASE, **CANDIDATES[args.candidate]}
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / f"{args.candidate}.jsonl"

    from diffusers import DDPMScheduler

    from bas.models.registry import load_diffusion
    from bas.sandbox.classifiers import Judge
    from bas.sandbox.stages import weights_dir
    from bas.sandbox.train_diffusion import SCHEDULER_CONFIG, _ema_update

    cfg = bas.config.load("params.yaml", {"models.profile": "sandbox",
                                          **({"models.sandbox_weights": str(args.weights)} if args.weights else {})})
    parts = load_diffusion(dataclasses.replace(cfg.models, profile="sandbox"))
    judge = Judge.load(weights_dir(cfg) / "judge")
    vae, tokenizer = parts.vae.eval(), parts.tokenizer
    seed = cfg.sandbox.seed
    torch.manual_seed(seed + 1)
    unet = base_model.build_unet()
    text_encoder = base_model.build_text_encoder()
    ckpt_path = args.out / f"{args.candidate}.pt"
    state = torch.load(ckpt_path, weights_only=False) if ckpt_path.exists() else None
    started = time.time()
    text_record = None
    if c["text"] == "frozen":
        if state is None:
            from bas.sandbox.text_pretrain import pretrain_text_encoder

            t0 = time.time()
            text_record = pretrain_text_encoder(text_encoder, tokenizer, seed,
                                                SandboxStage(c["text_steps"], 128, 2e-3, 100),
                                                args.out / f"{args.candidate}-text")
            text_record["seconds"] = time.time() - t0
            print("text pretrain", text_record, flush=True)
        text_encoder.requires_grad_(False).eval()
    ema_unet, ema_text = copy.deepcopy(unet), copy.deepcopy(text_encoder)
    params = list(unet.parameters()) + (list(text_encoder.parameters()) if c["text"] == "joint" else [])
    opt = torch.optim.AdamW(params, lr=c["lr"], weight_decay=1e-2)
    start = 0
    if state is not None:
        unet.load_state_dict(state["unet"]); text_encoder.load_state_dict(state["text"])
        ema_unet.load_state_dict(state["ema_unet"]); ema_text.load_state_dict(state["ema_text"])
        opt.load_state_dict(state["opt"]); start = state["step"]; text_record = state.get("text_record")
    scheduler = DDPMScheduler.from_config(SCHEDULER_CONFIG)
    snr = scheduler.alphas_cumprod / (1 - scheduler.alphas_cumprod)
    stage = cfg.sandbox.base.__class__(steps=args.steps, batch_size=c["batch"], lr=c["lr"], warmup_steps=c["warmup"])
    losses = []
    for step in range(start, args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(stage, step)
        pixels, captions, mask = batch(seed, step, c)
        gen = torch.Generator().manual_seed(int(stage_rng(seed, "probe-noise", step).integers(2**62)))
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample(gen) * vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, 1000, (latents.shape[0],), generator=gen)
        weight = torch.clamp(snr[t], max=c["min_snr"]) / snr[t]                       # (B,)
        noisy = scheduler.add_noise(latents, noise, t)
        if c["text"] == "joint":
            context = encode_text(tokenizer, text_encoder, captions)
        else:
            with torch.no_grad():
                context = encode_text(tokenizer, text_encoder, captions)
        pred = unet(noisy, t, context).sample
        pixel_weight = 1.0 + (c["object_weight"] - 1.0) * mask                          # (B, 1, 32, 32)
        per_sample = (pixel_weight * (pred - noise).pow(2)).mean(dim=(1, 2, 3)) / pixel_weight.mean(dim=(1, 2, 3))
        loss = (weight * per_sample).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(0.999, (1 + step) / (10 + step))
        _ema_update(ema_unet, unet, decay)
        if c["text"] == "joint":
            _ema_update(ema_text, text_encoder, decay)
        losses.append(loss.item())
        done = step + 1
        if done % 25 == 0:
            print(f"{args.candidate} step {done}/{args.steps} loss {np.mean(losses[-25:]):.4f} "
                  f"({(time.time() - started) / (done - start):.2f} s/step)", flush=True)
        if done % args.eval_every == 0 or done == args.steps:
            tmp = ckpt_path.with_suffix(".tmp")
            torch.save({"step": done, "unet": unet.state_dict(), "text": text_encoder.state_dict(),
                        "ema_unet": ema_unet.state_dict(), "ema_text": ema_text.state_dict(),
                        "opt": opt.state_dict(), "text_record": text_record}, tmp)
            tmp.replace(ckpt_path)
            t0 = time.time()
            eval_parts = dataclasses.replace(parts, unet=ema_unet.eval(), text_encoder=ema_text.eval())
            figures = evaluate(eval_parts, judge, cfg, args.samples, args.guidance, args.eval_steps,
                               args.out / f"{args.candidate}-{done}.png")
            ema_unet.train()
            line = {"candidate": args.candidate, "levers": c, "step": done, "samples_seen": done * c["batch"],
                    "loss": float(np.mean(losses[-50:])), "train_minutes": (time.time() - started) / 60,
                    "eval_seconds": time.time() - t0, "text_pretrain": text_record, "judged": figures}
            with open(log_path, "a") as f:
                f.write(json.dumps(line) + "\n")
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
