"""Short training probes of sandbox CLIP-like candidates that aim to read the class prompts.

    python scripts/sandbox_clip_candidates.py --candidate rn16-neg3 --steps 800 --out /work/clip-probe
    python scripts/sandbox_clip_candidates.py --candidate rn16 --time-steps 5     # seconds a step only

The aim: `class_prompt_top1` >= 0.8 (the committed model: 0.124; it reads contexts and colours,
not shape words), with captions and contexts kept (notes/sandbox-design-search.md).
Trains a candidate of the committed CLIP recipe (`bas.sandbox.embedders`: pool, batches,
caption augmentation, symmetric InfoNCE, AdamW, lr schedule) on one thread with these levers:
- `vision`: the open_clip vision_cfg (a ViT, or a ModifiedResNet when `layers` is a list);
- `negatives`: per image, that many hard negative captions, its own caption with shape words
  changed (one object's shape replaced by a shape absent from the image, or, for two objects
  of different shapes, their shapes swapped when that changes the words), made with the same
  random draws as the true caption so that nothing else differs; they are extra text
  candidates for the image->text half of the loss only;
- `aux`: weight of linear heads on the image embedding predicting the image's known
  attributes (which shapes and colours it shows: binary cross-entropy; its background:
  cross-entropy, none for a masked image); the heads are not saved.
The batches' images and true captions are exactly `embedders.clip_batch`'s (negatives come
from their own seed stream). The candidate is saved as the registry loads a sandbox CLIP
(`<out>/<candidate>/`), then measured with `embedders.measure_clip` and the linear probe of
`scripts/sandbox_clip_probe.py`; one JSON line per run is appended to `<out>/results.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import bas.config
from bas.config import SandboxStage
from bas.models import registry
from bas.sandbox import embedders, world
from bas.sandbox.loop import lr_at

sys.path.insert(0, str(Path(__file__).parent))
from sandbox_clip_probe import linear_probe  # noqa: E402

VIT = dict(embedders.CLIP_CONFIG["vision_cfg"])


def resnet(width: int, layers=(1, 1, 1, 1)) -> dict:
    return {"image_size": 64, "layers": list(layers), "width": width, "head_width": 32}


CANDIDATES = {
    "vit": dict(vision=VIT),
    "vit-neg3": dict(vision=VIT, negatives=3),
    "rn16": dict(vision=resnet(16)),
    "rn16-neg3": dict(vision=resnet(16), negatives=3),
    "rn16-neg3-aux": dict(vision=resnet(16), negatives=3, aux=1.0),
    "rn16-aux": dict(vision=resnet(16), aux=1.0),
    "rn16-neg3-aux3": dict(vision=resnet(16), negatives=3, aux=3.0),
    "rn24-neg3": dict(vision=resnet(24), negatives=3),
    "rn32-neg3": dict(vision=resnet(32), negatives=3),
    "rn32-neg3-aux": dict(vision=resnet(32), negatives=3, aux=1.0),
    "rn16x2-neg3": dict(vision=resnet(16, (2, 2, 2, 2)), negatives=3),
}


# --------------------------------------------------------------------------- data


def shape_variant(w: world.WorldImage, rng: random.Random) -> world.WorldImage:
    """`w` with only shapes changed: one object's shape to one the image lacks, or two objects' swapped."""
    objects = list(w.objects)
    shapes = [o.shape for o in objects]
    if len(set(shapes)) >= 2 and rng.random() < 0.3:
        i, j = rng.sample([k for k in range(len(objects))], 2)
        while shapes[i] == shapes[j]:
            i, j = rng.sample(range(len(objects)), 2)
        objects[i] = world.Identity(shapes[j], objects[i].colour, objects[i].pattern)
        objects[j] = world.Identity(shapes[i], objects[j].colour, objects[j].pattern)
        return world.WorldImage(w.image, w.masks, objects, w.boxes, w.background)
    k = rng.randrange(len(objects))
    absent = [s for s in world.SHAPES if s not in shapes]
    objects[k] = world.Identity(rng.choice(absent), objects[k].colour, objects[k].pattern)
    return world.WorldImage(w.image, w.masks, objects, w.boxes, w.background)


def substitute(w: world.WorldImage, rng: random.Random) -> world.WorldImage:
    objects = list(w.objects)
    k = rng.randrange(len(objects))
    absent = [s for s in world.SHAPES if s not in {o.shape for o in objects}]
    objects[k] = world.Identity(rng.choice(absent), objects[k].colour, objects[k].pattern)
    return world.WorldImage(w.image, w.masks, objects, w.boxes, w.background)


def batch(pool, seed: int, step: int, batch_size: int, attribute_dropout: float, negatives: int):
    """embedders.clip_batch's images and captions, with `negatives` shape-word negatives per image and labels."""
    rng = random.Random(f"{seed}:clip:{step}")
    neg_rng = random.Random(f"{seed}:clip-negatives:{step}")
    backgrounds = rng.sample(sorted(world.BACKGROUNDS), embedders.BACKGROUNDS_PER_BATCH)
    candidates = [i for i, w in enumerate(pool) if w.background in backgrounds]
    images, captions, negs, labels = [], [], [], []
    for index in rng.sample(candidates, batch_size):
        w = pool[index]
        masked = rng.random() < embedders.MASKED_SHARE
        if masked:
            w = embedders._single(w, rng.randrange(len(w.objects)))
        drop = 1.0 if rng.random() < embedders.CLASS_PROMPT_SHARE else attribute_dropout
        kwargs = dict(drop_attribute=drop, drop_background=1.0 if masked else embedders.BACKGROUND_DROPOUT)
        state = rng.getstate()
        caption = w.caption(rng, **kwargs)
        mine: list[str] = []
        for _ in range(negatives):
            for attempt in range(6):        # distinct from the caption and from each other when it can be
                alt = shape_variant(w, neg_rng) if attempt < 3 else substitute(w, neg_rng)
                same = random.Random()
                same.setstate(state)
                text = alt.caption(same, **kwargs)
                if text != caption and text not in mine:
                    break
            mine.append(text)
        negs.extend(mine)
        captions.append(caption)
        images.append(w.image)
        label = np.zeros(len(world.SHAPES) + len(world.COLOURS) + 1, np.float32)
        for o in w.objects:
            label[world.SHAPES.index(o.shape)] = 1
            label[len(world.SHAPES) + list(world.COLOURS).index(o.colour)] = 1
        label[-1] = -100 if masked else list(world.BACKGROUNDS).index(w.background)
        labels.append(label)
    return np.stack(images), captions, negs, torch.from_numpy(np.stack(labels))


# --------------------------------------------------------------------------- training


def pool_for(seed: int, out: Path):
    path = out / f"pool-seed{seed}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    pool = embedders.clip_pool(seed, embedders.CLIP_POOL_IMAGES)
    path.write_bytes(pickle.dumps(pool))
    return pool


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--candidate", required=True, choices=sorted(CANDIDATES))
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--lr", type=float, default=None, help="default: params.yaml sandbox.clip.lr")
    ap.add_argument("--warmup", type=float, default=0.1, help="share of steps")
    ap.add_argument("--time-steps", type=int, default=0, help="only time this many steps")
    ap.add_argument("--eval-every", type=int, default=0, help="also save and measure every this many steps")
    ap.add_argument("--name", default=None, help="output folder name (default: candidate-steps)")
    ap.add_argument("--out", type=Path, default=Path("/work/clip-probe"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    cand = CANDIDATES[args.candidate]
    cfg = bas.config.load("params.yaml", {"models.profile": "sandbox"})
    sb = cfg.sandbox
    lr = args.lr or sb.clip.lr
    stage = SandboxStage(steps=args.steps, batch_size=sb.clip.batch_size, lr=lr,
                         warmup_steps=max(1, int(args.warmup * args.steps)))
    name = args.name or f"{args.candidate}-{args.steps}" + (f"-lr{lr:g}" if args.lr else "")
    args.out.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.time(), time.process_time()
    pool = pool_for(sb.seed, args.out)
    print(f"pool: {time.time() - t0:.0f} s", flush=True)

    config = {**embedders.CLIP_CONFIG, "vision_cfg": cand["vision"]}
    embedders.CLIP_CONFIG = config                       # build_clip writes and registers this config
    model, preprocess = embedders.build_clip(args.out / f"{name}-config", sb.seed + 2)
    tokenizer = embedders._clip_tokenizer()
    normalize = embedders.Normalizer(preprocess)
    normalize.check(np.stack([w.image for w in pool[:4]]))
    negatives, aux = cand.get("negatives", 0), cand.get("aux", 0.0)
    n_shape, n_colour = len(world.SHAPES), len(world.COLOURS)
    heads = torch.nn.Linear(config["embed_dim"], n_shape + n_colour + len(world.BACKGROUNDS))
    params = embedders._param_groups(model) + ([{"params": list(heads.parameters()), "weight_decay": 0.0}]
                                               if aux else [])
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), eps=1e-6)
    n_vis = sum(p.numel() for p in model.visual.parameters())
    print(f"{name}: visual {n_vis / 1e6:.2f}M parameters, negatives {negatives}, aux {aux}", flush=True)


    def save_and_measure(at: int, final: bool) -> None:
        from safetensors.torch import save_file

        model.eval()
        directory = args.out / (name if final else f"{name}-at{at}")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{registry.SANDBOX_CLIP_MODEL_NAME}.json").write_text(json.dumps(config, indent=2) + "\n")
        save_file(embedders._half_state(model), directory / registry.SANDBOX_CLIP_WEIGHTS)
        validity = embedders.measure_clip(directory, cfg)
        probe = linear_probe(directory)
        result = {"name": directory.name, "candidate": args.candidate,
                  **{k: v for k, v in cand.items() if k != "vision"}, "vision": cand["vision"], "steps": args.steps,
                  "at_step": at, "lr": lr, "visual_params_M": round(n_vis / 1e6, 2),
                  "train_wall_min": round((time.time() - t1) / 60, 1),
                  "cpu_min": round((time.process_time() - c0) / 60, 1),
                  "final_loss": round(float(np.mean(losses[-50:])), 4), "logit_scale": round(scale.item(), 2),
                  "validity": validity, "linear_probe": {k: v["accuracy"] for k, v in probe.items()}}
        (directory / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        with open(args.out / "results.jsonl", "a") as f:
            f.write(json.dumps(result) + "\n")
        print(json.dumps(result), flush=True)
        model.train()

    model.train()
    t1, c1, losses = time.time(), time.process_time(), []
    steps = args.time_steps or args.steps
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(stage, step)
        images, captions, negs, labels = batch(pool, sb.seed, step, stage.batch_size, sb.attribute_dropout, negatives)
        features = model.encode_image(normalize(images))
        image_emb = F.normalize(features, dim=-1)
        text_emb = F.normalize(model.encode_text(tokenizer(captions + negs)), dim=-1)
        scale = model.logit_scale.exp()
        target = torch.arange(len(images))
        logits = scale * image_emb @ text_emb.T                              # (B, B + B*negatives)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, :len(images)].T, target)) / 2
        if aux:
            out = heads(features)
            loss = loss + aux * (F.binary_cross_entropy_with_logits(out[:, :n_shape + n_colour],
                                                                    labels[:, :n_shape + n_colour])
                                 + F.cross_entropy(out[:, n_shape + n_colour:], labels[:, -1].long(),
                                                   ignore_index=-100))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, float(np.log(embedders.LOGIT_SCALE_MAX)))
        losses.append(loss.item())
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < steps:
            save_and_measure(step + 1, final=False)
        if (step + 1) % 50 == 0 or args.time_steps:
            rate = (time.time() - t1) / (step + 1)
            print(f"step {step + 1}/{steps} loss {np.mean(losses[-50:]):.4f} ({rate:.2f} s/step, "
                  f"{(time.process_time() - c1) / (step + 1):.2f} CPU s/step)", flush=True)
    if args.time_steps:
        return
    save_and_measure(args.steps, final=True)


if __name__ == "__main__":
    main()
