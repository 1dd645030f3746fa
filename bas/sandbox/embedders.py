"""The sandbox's CLIP and DINO: the real scorers' classes, small, trained on the sandbox world.

Both are what `bas.scoring` loads in the `sandbox` profile (`bas.models.registry`), saved in
fp16 in the layout the registry reads, each with a `training_record.json` whose `validity`
figures `measure_clip` / `measure_dino` recompute from the saved weights.

CLIP (open_clip `CLIP`, 64 px) is trained contrastively on world images and their captions:
symmetric InfoNCE with a learned temperature, as CLIP was. Captions are augmented so that
what prompt similarity scores is in distribution: a share names shapes only ("a photo of a
circle and a square at the beach", the form of `prompt_classes`), the rest drop colour and
pattern words at `sandbox.attribute_dropout`; and a share of the images are one object
masked on black with its caption, the form of CLIP-I's reference image. CLIP is trained on
every identity, as the real CLIP has seen the kinds of objects people personalize.
Validity: image-to-caption retrieval top-1 on held-out images.

DINO (timm `VisionTransformer`, the class of `vit_base_patch16_224.dino`, 64 px) is trained
so that one identity looks the same wherever it is: each batch holds distinct *seen*
identities, each rendered twice independently (place, size, background, other objects in
front or behind), each render masked to the object on black in the full frame, which is how
`bas.scoring` prepares a concept for identity similarity (`masked_concept`, no crop). The
CLS embedding itself is trained (InfoNCE, both directions), since its cosine is the score.
Validity: same-vs-different identity AUC on held-out renders of the *novel* identities, which
DINO never saw.

Rendering is the slow part (~5 ms an image on one core), so each model draws its batches
from a pool rendered once from its own seed stream; what varies per step (which images,
caption augmentation, which views pair up) is drawn from a per-step seed, so a run is
reproducible and a resumed run sees exactly the batches an uninterrupted one would.
Held-out sets come from seed streams no training step uses.
"""

from __future__ import annotations

import functools
from itertools import combinations
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from bas.config import Config, to_dict
from bas.errors import ConfigError
from bas.io import atomic_dir
from bas.models import registry
from bas.paths import TRAINING_RECORD_FILE
from bas.sandbox import world
from bas.sandbox.devices import device_record
from bas.sandbox.loop import lr_at, train_steps
from bas.sandbox.loop import stage_rng
from bas.sandbox.train_diffusion import world_batch
from bas.scoring.clip_scores import ClipEmbedder
from bas.scoring.dino_scores import DinoEmbedder, dino_transform

# open_clip, timm and scipy.stats are imported in the functions that use them: they are heavy, and
# `bas sandbox train --only ...` / `bas sandbox check` import this module for one stage or measure.

log = logging.getLogger(__name__)


CLIP_CONFIG = {  # open_clip model config (registered as registry.SANDBOX_CLIP_MODEL_NAME)
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 64, "patch_size": 8, "head_width": 32},
    # The longest world caption (4 objects, colour + pattern words, the longest context) is 31 tokens.
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 3},
}
DINO_KWARGS = dict(img_size=64, patch_size=8, embed_dim=64, depth=4, num_heads=2)

CLIP_POOL_IMAGES = 8192           # rendered once, 256 at a time, from seed stream "clip-pool"
CLASS_PROMPT_SHARE = 0.5          # captions naming shapes only: the form prompt similarity scores
BACKGROUNDS_PER_BATCH = 2         # a batch's images share few backgrounds, so objects must tell them apart
MASKED_SHARE = 0.2                # one object masked on black, captioned without background (CLIP-I's form)
BACKGROUND_DROPOUT = 0.1          # the background phrase left out, as in the base model's captions
CLIP_HELDOUT_IMAGES = 256         # retrieval set, seed stream "clip-heldout"
LOGIT_SCALE_MAX = 100.0           # CLIP's clamp of its learned inverse temperature

DINO_POOL_VIEWS = 48              # renders per seen identity, seed stream "dino-pool"
DINO_TEMPERATURE = 0.1            # fixed, so that cosine similarities keep one scale run to run
DINO_MAX_SIDE = 50                # base-training objects are 16-40 px, evaluation objects 34-49 px
DINO_HELDOUT_VIEWS = 8            # held-out renders per identity, seed streams "dino-heldout*"
MASK_JITTER = 0.5                 # share of views whose mask grows or shrinks by a pixel (segmenter error)

WEIGHT_DECAY = 0.1


# --------------------------------------------------------------------------- the loss


def contrastive_loss(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE between L2-normalised embeddings `a` and `b`, (B, D) each; row i of each is a pair.

    The mean of the a->b and b->a cross-entropies over the (B, B) similarity logits. One
    caption twice in a batch needs no special case: its two text embeddings are identical,
    so they share their softmax mass, which adds a constant and no gradient.
    """
    logits = logit_scale * a @ b.T                                   # (B, B)
    target = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


# --------------------------------------------------------------------------- pixels


class Normalizer:
    """uint8 (B, 64, 64, 3) -> the tensor a scorer's eval transform makes of those images.

    At 64 px the transforms bas.scoring applies (open_clip's preprocess, timm's with
    `crop_pct` 1.0) resize and crop to the size the image already has, then normalise: this
    does the normalisation on whole batches. `check` proves the equivalence on real images,
    and every training run calls it, so a transform that stops being a pure normalisation at
    64 px stops training instead of silently training on other inputs than scoring shows.
    """

    def __init__(self, transform: Callable):
        normalize = next(t for t in transform.transforms if type(t).__name__ == "Normalize")
        self.transform = transform
        self.mean = torch.as_tensor(normalize.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.as_tensor(normalize.std, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, pixels: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float() / 255.0   # (B, 3, 64, 64)
        return (x - self.mean) / self.std

    def check(self, pixels: np.ndarray) -> None:
        ours = self(pixels)
        theirs = torch.stack([self.transform(Image.fromarray(p)) for p in pixels])
        if ours.shape != theirs.shape or not torch.allclose(ours, theirs, atol=1e-5):
            raise RuntimeError("the scorer's eval transform is not a normalisation of 64 px images: "
                               "training would not see what scoring shows")


# --------------------------------------------------------------------------- CLIP data


def class_prompt(shapes: Sequence[str], background: Optional[str]) -> str:
    """'a photo of a circle and a square at the beach', as bas.scoring builds `prompt_classes`."""
    text = "a photo of " + " and ".join(f"a {s}" for s in shapes)
    return text + (" " + world.BACKGROUNDS[background] if background else "")


def _single(w: world.WorldImage, k: int) -> world.WorldImage:
    """Object k of `w` alone, masked on black, as `bas.scenes.masking.masked_concept` shows it."""
    image = np.where(w.masks[k][..., None], w.image, 0).astype(np.uint8)
    return world.WorldImage(image, [w.masks[k]], [w.objects[k]], [w.boxes[k]], w.background)


def clip_pool(seed: int, count: int, stream: str = "clip-pool") -> list[world.WorldImage]:
    chunk = 256
    return [w for c in range(0, count, chunk)
            for w in world_batch(seed, stream, c // chunk, min(chunk, count - c), identities=world.ALL_IDENTITIES)]


def clip_batch(pool: Sequence[world.WorldImage], seed: int, step: int, batch_size: int,
               attribute_dropout: float) -> tuple[np.ndarray, list[str]]:
    """(B, 64, 64, 3) uint8 images and their augmented captions for training step `step`.

    The images come from BACKGROUNDS_PER_BATCH backgrounds: with ten in a batch of 64, the
    background and a colour would tell almost every image from the others, and CLIP would
    never need to learn shapes, which is most of what prompt similarity asks of it.
    """
    rng = random.Random(f"{seed}:clip:{step}")
    backgrounds = rng.sample(sorted(world.BACKGROUNDS), BACKGROUNDS_PER_BATCH)
    candidates = [i for i, w in enumerate(pool) if w.background in backgrounds]
    images, captions = [], []
    for index in rng.sample(candidates, batch_size):
        w = pool[index]
        masked = rng.random() < MASKED_SHARE
        if masked:
            w = _single(w, rng.randrange(len(w.objects)))
        drop = 1.0 if rng.random() < CLASS_PROMPT_SHARE else attribute_dropout
        captions.append(w.caption(rng, drop_attribute=drop, drop_background=1.0 if masked else BACKGROUND_DROPOUT))
        images.append(w.image)
    return np.stack(images), captions


# --------------------------------------------------------------------------- DINO data


def _jitter(mask: np.ndarray, grow: bool) -> np.ndarray:
    """`mask` grown (or shrunk) by one pixel, 4-neighbourhood."""
    m = mask if grow else ~mask
    out = m.copy()
    out[1:] |= m[:-1]
    out[:-1] |= m[1:]
    out[:, 1:] |= m[:, :-1]
    out[:, :-1] |= m[:, 1:]
    return out if grow else ~out


def render_view(rng: np.random.Generator, identity: world.Identity,
                others: Sequence[world.Identity], max_tries: int = 20) -> np.ndarray:
    """(64, 64, 3) uint8: `identity` in a scene of its own, masked to its visible part on black.

    The scene: a random background, the object at a random place and size, and 0-2 other
    objects painted before or after it; at least half of it stays visible.
    """
    for _ in range(max_tries):
        background = str(rng.choice(list(world.BACKGROUNDS)))
        extra = [others[j] for j in rng.choice(len(others), size=int(rng.integers(0, 3)), replace=False)]
        position = int(rng.integers(0, len(extra) + 1))
        objects = extra[:position] + [identity] + extra[position:]
        boxes = []
        for _obj in objects:
            side = int(rng.integers(world.MIN_SIDE, DINO_MAX_SIDE + 1))
            boxes.append((int(rng.integers(0, world.SIZE - side + 1)), int(rng.integers(0, world.SIZE - side + 1)), side))
        scene = world.compose(background, objects, boxes, rng)
        mask = scene.masks[position]
        if mask.sum() >= world._shape_mask(identity.shape, *boxes[position]).sum() / 2:
            break
    if rng.random() < MASK_JITTER:
        jittered = _jitter(mask, grow=bool(rng.random() < 0.5))
        mask = jittered if jittered.any() else mask
    return np.where(mask[..., None], scene.image, 0).astype(np.uint8)


def render_views(seed: int, stream: str, identities: Sequence[world.Identity], per_identity: int) -> np.ndarray:
    """(len(identities), per_identity, 64, 64, 3) uint8; identity i's views from stream (seed, stream, i)."""
    out = np.zeros((len(identities), per_identity, world.SIZE, world.SIZE, 3), np.uint8)
    for i, identity in enumerate(identities):
        rng = stage_rng(seed, stream, i)
        others = [o for o in world.ALL_IDENTITIES if o != identity]
        for v in range(per_identity):
            out[i, v] = render_view(rng, identity, others)
    return out


def dino_batch(pool: np.ndarray, seed: int, step: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Two (B, 64, 64, 3) uint8 arrays: two different views of B distinct identities."""
    rng = stage_rng(seed, "dino", step)
    identities = rng.choice(pool.shape[0], size=batch_size, replace=False)
    first, second = [], []
    for i in identities:
        u, v = rng.choice(pool.shape[1], size=2, replace=False)
        first.append(pool[i, u])
        second.append(pool[i, v])
    return np.stack(first), np.stack(second)


# --------------------------------------------------------------------------- models


def _clip_config_file(directory: Path) -> Path:
    return directory / f"{registry.SANDBOX_CLIP_MODEL_NAME}.json"


def build_clip(work_dir: Path, seed: int):
    """A fresh open_clip CLIP of CLIP_CONFIG, made as the registry makes it; (model, preprocess)."""
    import open_clip

    config_file = _clip_config_file(work_dir)
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(json.dumps(CLIP_CONFIG, indent=2) + "\n")
    open_clip.add_model_config(config_file)
    torch.manual_seed(seed)
    model, _, preprocess = open_clip.create_model_and_transforms(registry.SANDBOX_CLIP_MODEL_NAME, pretrained=None)
    return model, preprocess


def build_dino(seed: int, crop_pct: float):
    """A fresh timm ViT of DINO_KWARGS, made as the registry makes it; (model, scoring transform)."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(registry.SANDBOX_DINO_MODEL_NAME, pretrained=False, num_classes=0, **DINO_KWARGS)
    return model, dino_transform(model, crop_pct)


def _param_groups(model: torch.nn.Module) -> list[dict]:
    """Weight decay on matrices only, as open_clip and DINO train (not gains, biases, tokens, scale)."""
    decay, rest = [], []
    for name, p in model.named_parameters():
        no_decay = p.ndim < 2 or any(k in name for k in ("embedding", "pos_embed", "cls_token", "logit_scale"))
        (rest if no_decay else decay).append(p)
    return [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": rest, "weight_decay": 0.0}]


def _half_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- training loop


@dataclass
class _Run:
    """One stage's training: its model, optimizer, and the loss of a step."""

    name: str
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    step_loss: Callable[[int], torch.Tensor]
    after_step: Callable[[], None] = lambda: None


def _train(run: _Run, stage, work_dir: Path, checkpoint_every: int, log_every: int) -> dict:
    """Run `run` for `stage.steps` steps, resuming from `work_dir`; returns its outcome for the record."""
    run.model.train()
    outcome = train_steps(run.name, {"model": run.model, "opt": run.opt}, run.opt, stage.steps,
                          functools.partial(lr_at, stage), lambda step, _: run.step_loss(step), Path(work_dir),
                          after_step=lambda step: run.after_step(), checkpoint_every=checkpoint_every,
                          log_every=log_every)
    run.model.eval()
    return {"final_loss": outcome.final_loss(log_every), "resumed_at": outcome.resumed_at,
            "cpu_s_per_step": outcome.cpu_s_per_step}


def _record(cfg: Config, model: str, stage_name: str, architecture: dict, data: dict, started: tuple[float, float],
            outcome: dict) -> dict:
    """The training record; `started` = (time.time(), time.process_time()) at the start.

    CPU time is recorded beside wall time: on a shared machine the wall time says more about
    the neighbours than about the model.
    """
    return {"model": model, "seed": cfg.sandbox.seed,
            "params": {stage_name: to_dict(getattr(cfg.sandbox, stage_name)), **data},
            "steps": getattr(cfg.sandbox, stage_name).steps, "architecture": architecture,
            "device": device_record(), "wall_time_s": round(time.time() - started[0], 1),
            "cpu_time_s": round(time.process_time() - started[1], 1), **outcome}


def _write_record(directory: Path, record: dict) -> None:
    (directory / TRAINING_RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")


# --------------------------------------------------------------------------- CLIP


def train_clip(cfg: Config, work_dir: Path, out_dir: Path, *, checkpoint_every: int = 100,
               log_every: int = 50) -> dict:
    """Train the sandbox CLIP, save it (fp16) into `out_dir` with its record; returns the record."""
    sb, stage = cfg.sandbox, cfg.sandbox.clip
    started = (time.time(), time.process_time())
    work_dir = Path(work_dir)
    model, preprocess = build_clip(work_dir / "clip-config", sb.seed + 2)
    tokenizer = _clip_tokenizer()
    normalize = Normalizer(preprocess)
    pool = clip_pool(sb.seed, CLIP_POOL_IMAGES)
    normalize.check(np.stack([w.image for w in pool[:4]]))
    log.info("clip: %d pool images rendered in %.0f s (%.0f s CPU)", len(pool), time.time() - started[0],
             time.process_time() - started[1])
    opt = torch.optim.AdamW(_param_groups(model), lr=stage.lr, betas=(0.9, 0.98), eps=1e-6)

    def step_loss(step: int) -> torch.Tensor:
        images, captions = clip_batch(pool, sb.seed, step, stage.batch_size, sb.attribute_dropout)
        image_emb = F.normalize(model.encode_image(normalize(images)), dim=-1)     # (B, D)
        text_emb = F.normalize(model.encode_text(tokenizer(captions)), dim=-1)     # (B, D)
        return contrastive_loss(image_emb, text_emb, model.logit_scale.exp())

    def clamp_scale() -> None:
        with torch.no_grad():
            model.logit_scale.clamp_(0, float(np.log(LOGIT_SCALE_MAX)))

    outcome = _train(_Run("clip", model, opt, step_loss, clamp_scale), stage, work_dir, checkpoint_every, log_every)
    outcome["logit_scale"] = round(model.logit_scale.exp().item(), 2)
    data = {"attribute_dropout": sb.attribute_dropout, "class_prompt_share": CLASS_PROMPT_SHARE,
            "masked_share": MASKED_SHARE, "background_dropout": BACKGROUND_DROPOUT, "pool_images": CLIP_POOL_IMAGES,
            "identities": "all", "weight_decay": WEIGHT_DECAY}
    with atomic_dir(out_dir) as tmp:
        _clip_config_file(tmp).write_text(json.dumps(CLIP_CONFIG, indent=2) + "\n")
        save_file(_half_state(model), tmp / registry.SANDBOX_CLIP_WEIGHTS)
        validity = measure_clip(tmp, cfg)   # from the saved fp16 weights, as `bas sandbox check` will
        record = _record(cfg, "sandbox CLIP (open_clip CLIP, 64 px)", "clip", CLIP_CONFIG, data, started,
                         {**outcome, "validity": validity})
        _write_record(tmp, record)
    log.info("clip: saved to %s; validity %s", out_dir, validity)
    return record


def _clip_tokenizer():
    import open_clip

    return open_clip.get_tokenizer(registry.SANDBOX_CLIP_MODEL_NAME)


def load_sandbox_clip(directory: Path):
    """(model, preprocess, tokenizer) from a sandbox CLIP directory, through the registry."""
    s = registry.sandbox_sources(Path(directory).parent, clip=Path(directory))
    return registry.load_clip(s)


def measure_clip(directory: Path, cfg: Config) -> dict:
    """Held-out retrieval of the saved CLIP, through `bas.scoring`'s CLIP embedder.

    CLIP_HELDOUT_IMAGES world images of the seed stream "clip-heldout" (no training image
    comes from it), any identity. Two figures:
    - `caption_top1`: full captions (every colour and pattern, the background, objects in
      painting order); the candidates are the set's distinct captions, and an image is right
      when its best candidate is its own caption (two images with one caption do not count
      against each other);
    - `class_prompt_top1`: prompts as prompt similarity scores them, shapes only ("a photo
      of a circle and a square at the beach"), for the held-out images whose objects have
      distinct shapes, as evaluation scenes' do; the candidates are every such prompt, each
      non-empty set of shapes (in a fixed order) with each of the ten contexts. Right means
      the exact set of shapes and the background.
    """
    model, preprocess, tokenizer = load_sandbox_clip(directory)
    embedder = ClipEmbedder(SimpleNamespace(clip_model=model, clip_preprocess=preprocess, clip_tokenizer=tokenizer),
                            torch.device("cpu"))
    held_out = world_batch(cfg.sandbox.seed, "clip-heldout", 0, CLIP_HELDOUT_IMAGES, identities=world.ALL_IDENTITIES)
    image_emb = embedder.images([Image.fromarray(w.image) for w in held_out])            # (N, D)
    captions = [w.caption() for w in held_out]
    caption_top1 = _top1(image_emb, captions, sorted(set(captions)), embedder.texts)

    distinct = [i for i, w in enumerate(held_out) if len({o.shape for o in w.objects}) == len(w.objects)]
    prompts = [class_prompt(sorted((o.shape for o in held_out[i].objects), key=world.SHAPES.index),
                            held_out[i].background) for i in distinct]
    every_prompt = [class_prompt(shapes, background) for n in range(1, len(world.SHAPES) + 1)
                    for shapes in combinations(world.SHAPES, n) for background in world.BACKGROUNDS]
    class_top1 = _top1(image_emb[distinct], prompts, every_prompt, embedder.texts)
    # The two halves of a class prompt apart: the context given the true shapes (10 candidates)
    # and the set of shapes given the true context (31 candidates).
    prompt_emb = dict(zip(every_prompt, embedder.texts(every_prompt)))                   # prompt -> (D,)
    shape_sets = [s for n in range(1, len(world.SHAPES) + 1) for s in combinations(world.SHAPES, n)]
    context_right = shapes_right = 0
    for i in distinct:
        shapes = tuple(sorted((o.shape for o in held_out[i].objects), key=world.SHAPES.index))
        contexts = torch.stack([prompt_emb[class_prompt(shapes, b)] for b in world.BACKGROUNDS])        # (10, D)
        context_right += list(world.BACKGROUNDS)[int((image_emb[i] @ contexts.T).argmax())] == held_out[i].background
        sets = torch.stack([prompt_emb[class_prompt(s, held_out[i].background)] for s in shape_sets])   # (31, D)
        shapes_right += shape_sets[int((image_emb[i] @ sets.T).argmax())] == shapes
    return {"caption_top1": round(caption_top1, 4), "class_prompt_top1": round(class_top1, 4),
            "class_prompt_context_top1": round(context_right / len(distinct), 4),
            "class_prompt_shapes_top1": round(shapes_right / len(distinct), 4),
            "heldout_images": len(held_out), "caption_candidates": len(set(captions)),
            "class_prompt_images": len(distinct), "class_prompt_candidates": len(every_prompt)}


def _top1(image_emb: torch.Tensor, truths: Sequence[str], candidates: Sequence[str],
          embed_texts: Callable) -> float:
    """Share of images whose best-matching candidate text is their own."""
    text_emb = embed_texts(list(candidates))                           # (C, D)
    best = (image_emb @ text_emb.T).argmax(1).tolist()                 # (N,)
    return float(np.mean([candidates[b] == t for b, t in zip(best, truths)]))


# --------------------------------------------------------------------------- DINO


def train_dino(cfg: Config, work_dir: Path, out_dir: Path, *, checkpoint_every: int = 100,
               log_every: int = 50) -> dict:
    """Train the sandbox DINO, save it (fp16) into `out_dir` with its record; returns the record."""
    sb, stage = cfg.sandbox, cfg.sandbox.dino
    started = (time.time(), time.process_time())
    model, transform = build_dino(sb.seed + 3, cfg.scoring.dino_crop_pct)
    normalize = Normalizer(transform)
    seen = sorted(world.seen_identities(sb.seed))
    if stage.batch_size > len(seen):
        raise ConfigError(f"params: sandbox.dino.batch_size = {stage.batch_size}: a batch holds distinct seen "
                          f"identities, of which there are {len(seen)}")
    pool = render_views(sb.seed, "dino-pool", seen, DINO_POOL_VIEWS)   # (identities, views, 64, 64, 3)
    normalize.check(pool[:4, 0])
    log.info("dino: %d pool views rendered in %.0f s (%.0f s CPU)", pool.shape[0] * pool.shape[1],
             time.time() - started[0], time.process_time() - started[1])
    opt = torch.optim.AdamW(_param_groups(model), lr=stage.lr, betas=(0.9, 0.98), eps=1e-6)

    def step_loss(step: int) -> torch.Tensor:
        first, second = dino_batch(pool, sb.seed, step, stage.batch_size)
        emb = F.normalize(model(normalize(np.concatenate([first, second]))), dim=-1)   # (2B, D) CLS
        a, b = emb.chunk(2)
        return contrastive_loss(a, b, 1.0 / DINO_TEMPERATURE)

    outcome = _train(_Run("dino", model, opt, step_loss), stage, Path(work_dir), checkpoint_every, log_every)
    data = {"temperature": DINO_TEMPERATURE, "pool_views_per_identity": DINO_POOL_VIEWS,
            "identities": "seen", "max_side": DINO_MAX_SIDE, "mask_jitter": MASK_JITTER,
            "weight_decay": WEIGHT_DECAY, "crop_pct": cfg.scoring.dino_crop_pct}
    with atomic_dir(out_dir) as tmp:
        save_file(_half_state(model), tmp / registry.SANDBOX_DINO_WEIGHTS)
        (tmp / registry.SANDBOX_DINO_KWARGS).write_text(json.dumps(DINO_KWARGS) + "\n")
        validity = measure_dino(tmp, cfg)
        record = _record(cfg, "sandbox DINO (timm VisionTransformer, 64 px)", "dino", DINO_KWARGS, data, started,
                         {**outcome, "validity": validity})
        _write_record(tmp, record)
    log.info("dino: saved to %s; validity %s", out_dir, validity)
    return record


def load_sandbox_dino(directory: Path):
    """(model, transform) from a sandbox DINO directory, through the registry."""
    s = registry.sandbox_sources(Path(directory).parent, dino=Path(directory))
    return registry.load_dino(s)


def pair_auc(embeddings: torch.Tensor, labels: Sequence[int], negatives: Optional[np.ndarray] = None) -> float:
    """AUC of cosine similarity for telling same-label pairs from different-label pairs.

    Over every unordered pair of distinct items; `negatives` (N, N) bool, when given, keeps only
    those different-label pairs. Ties count half (Mann-Whitney).
    """
    from scipy.stats import rankdata

    sims = (embeddings @ embeddings.T).numpy()
    labels = np.asarray(labels)
    upper = np.triu(np.ones_like(sims, dtype=bool), k=1)
    same = labels[:, None] == labels[None, :]
    pos = sims[upper & same]
    neg_mask = upper & ~same & (negatives if negatives is not None else True)
    neg = sims[neg_mask]
    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def measure_dino(directory: Path, cfg: Config) -> dict:
    """Same-vs-different identity AUC of the saved DINO, through `bas.scoring`'s DINO embedder.

    DINO_HELDOUT_VIEWS renders of each identity, made as in training (masked on black) from
    seed streams no training step uses. `novel_auc`, the validity figure: the novel identities,
    never trained on; `novel_same_shape_auc`: the same, negatives only pairs of one shape (told
    apart by colour or pattern alone); `seen_auc`: new renders of the seen identities.
    """
    model, _ = load_sandbox_dino(directory)
    embedder = DinoEmbedder(SimpleNamespace(dino_model=model), torch.device("cpu"), cfg.scoring.dino_crop_pct)
    figures = {}
    for name, identities in (("novel", sorted(world.novel_identities(cfg.sandbox.seed))),
                             ("seen", sorted(world.seen_identities(cfg.sandbox.seed)))):
        views = render_views(cfg.sandbox.seed, f"dino-heldout-{name}", identities, DINO_HELDOUT_VIEWS)
        flat = views.reshape(-1, *views.shape[2:])
        emb = torch.cat([embedder.images([Image.fromarray(p) for p in flat[i: i + 64]])
                         for i in range(0, len(flat), 64)])
        labels = np.repeat(np.arange(len(identities)), DINO_HELDOUT_VIEWS)
        figures[f"{name}_auc"] = round(pair_auc(emb, labels), 4)
        if name == "novel":
            shapes = np.array([identities[i].shape for i in labels])
            figures["novel_same_shape_auc"] = round(pair_auc(emb, labels, shapes[:, None] == shapes[None, :]), 4)
    figures.update(novel_identities=len(world.novel_identities(cfg.sandbox.seed)), views_per_identity=DINO_HELDOUT_VIEWS)
    return figures
