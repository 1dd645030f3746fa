"""The sandbox's two classifiers, trained on world renders whose every pixel's truth is known.

- `SandboxSegmenter`, in MaskFormer's role for identity similarity: a small convolutional
  encoder-decoder labels every pixel background or one of the five shapes (the world's COCO
  categories), and each connected component of a shape becomes one segment, so instances stay
  apart as MaskFormer's do. Components under `MIN_SEGMENT_FRACTION` of the image (20 px at
  64x64) are dropped: specks of a wrong class are noise, not objects.
- `Judge`, which says what a sample of the base model shows: one network with four heads,
  background (10), shape (5), colour (8) and pattern (3), trained on renders of one object on
  a background, as the validity probes' captions describe (`bas.sandbox.validity`).

Both train on all 120 identities, the novel ones included. Their classes are shapes and
attributes, not identities: colour and pattern are nuisances to the segmenter, and the judge
must name the novel probes' attributes too. Training on every identity keeps either from
being worse on exactly the objects the evaluation is about; nothing they are measured on
shares a seed stream with their training data.

Data is drawn fresh every step from (run seed, stream, step), as the base model's is
(`bas.sandbox.train_diffusion`), so runs are reproducible and a resumed run sees the batches
an uninterrupted one would. Light blur and noise are added in training only: the scorers
read the diffusion model's samples, which are softer and noisier than the renders.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from bas.config import Config, SandboxConfig, SandboxStage, to_dict
from bas.io import atomic_dir
from bas.paths import TRAINING_RECORD_FILE
from bas.sandbox import world
from bas.sandbox.devices import device_record
from bas.sandbox.loop import lr_at, stage_rng, train_steps
from bas.sandbox.train_diffusion import to_pixels
from bas.models.sandbox_segmenter import (CONFIG_FILE, IMAGE_SIZE, WEIGHTS_FILE, SandboxSegmenter, SegmenterNet,  # noqa: F401
                                          _conv, _load, _pixels_of, _save, as_saved, split_instances)

log = logging.getLogger(__name__)

SEGMENTER_CLASSES: tuple[str, ...] = ("background",) + world.SHAPES   # pixel label k -> name; 0 = no object
JUDGE_HEADS: dict[str, tuple[str, ...]] = {
    "background": tuple(world.BACKGROUNDS), "shape": world.SHAPES,
    "colour": tuple(world.COLOURS), "pattern": world.PATTERNS,
}
MIN_SEGMENT_FRACTION = 20 / (world.SIZE * world.SIZE)   # smallest kept component: 20 px at 64x64

# Object box sides (px). The segmenter sees the base-training range and the evaluation scenes'
# larger objects (34-49 px); the judge a margin around the base-training range its probes show.
SEGMENTER_SIDES = (world.MIN_SIDE, 50)
JUDGE_SIDES = (world.MIN_SIDE - 4, world.MAX_SIDE + 4)

OBJECT_WEIGHT_AREA = 400   # px; an object this large weighs 1 a pixel in the segmenter's loss (0: unweighted)

HELDOUT_SEGMENTER_IMAGES = 400
HELDOUT_JUDGE_IMAGES = 1000
CHECKPOINT_EVERY = 50


# --------------------------------------------------------------------------- data


def segmenter_scene(rng: np.random.Generator, identities: Sequence[world.Identity] = world.ALL_IDENTITIES,
                    max_tries: int = 20) -> world.WorldImage:
    """1-4 distinct identities, sides 16-50 px, each at least half visible (else fewer objects)."""
    count = int(rng.choice([1, 2, 3, 4], p=[0.2, 0.35, 0.3, 0.15]))
    background = str(rng.choice(list(world.BACKGROUNDS)))
    picks = [identities[j] for j in rng.choice(len(identities), size=count, replace=False)]
    while True:
        for _ in range(max_tries):
            boxes = [_random_box(rng, *SEGMENTER_SIDES) for _ in picks]
            # Placement is checked on the bare outlines (cheap) before anything is painted.
            full = [world._shape_mask(o.shape, *b) for o, b in zip(picks, boxes)]
            hidden = [np.logical_or.reduce(full[i + 1:]) if i + 1 < len(full) else np.zeros_like(full[i])
                      for i in range(len(full))]
            if all((m & ~h).sum() >= m.sum() / 2 for m, h in zip(full, hidden)):
                return world.compose(background, picks, boxes, rng)
        picks = picks[:-1]   # a single object is always fully visible


def judge_scene(rng: np.random.Generator) -> world.WorldImage:
    """One of the 120 identities on one of the 10 backgrounds, uniformly, anywhere, fully inside."""
    identity = world.ALL_IDENTITIES[int(rng.integers(len(world.ALL_IDENTITIES)))]
    background = str(rng.choice(list(world.BACKGROUNDS)))
    return world.compose(background, [identity], [_random_box(rng, *JUDGE_SIDES)], rng)


def _random_box(rng: np.random.Generator, low: int, high: int) -> tuple[int, int, int]:
    side = int(rng.integers(low, high + 1))
    return int(rng.integers(0, world.SIZE - side + 1)), int(rng.integers(0, world.SIZE - side + 1)), side


def class_map(scene: world.WorldImage) -> np.ndarray:
    """(SIZE, SIZE) int64 pixel labels: index into SEGMENTER_CLASSES."""
    labels = np.zeros((world.SIZE, world.SIZE), np.int64)
    for identity, mask in zip(scene.objects, scene.masks):
        labels[mask] = SEGMENTER_CLASSES.index(identity.shape)
    return labels


def judge_targets(scenes: Sequence[world.WorldImage]) -> dict[str, torch.Tensor]:
    """head -> (B,) class indices of each scene's (single) object and background."""
    values = {"background": [s.background for s in scenes], "shape": [s.objects[0].shape for s in scenes],
              "colour": [s.objects[0].colour for s in scenes], "pattern": [s.objects[0].pattern for s in scenes]}
    return {head: torch.tensor([JUDGE_HEADS[head].index(v) for v in vals]) for head, vals in values.items()}


def pixel_weights(scene: world.WorldImage) -> np.ndarray:
    """(SIZE, SIZE) loss weights: 1 on background, sqrt(OBJECT_WEIGHT_AREA / area) on an object.

    Plain per-pixel cross-entropy lets big objects outweigh small ones by their area; the
    validity figure (and identity similarity) counts each object once, whatever its size.
    """
    weights = np.ones((world.SIZE, world.SIZE), np.float32)
    if OBJECT_WEIGHT_AREA:
        for mask in scene.masks:
            weights[mask] = np.sqrt(OBJECT_WEIGHT_AREA / max(1, mask.sum()))
    return weights


def segmenter_batch(seed: int, stream: str, step: int, batch_size: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixels (B, 3, H, W), class labels (B, H, W) and loss weights (B, H, W) of one step's scenes."""
    rng = stage_rng(seed, stream, step)
    scenes = [segmenter_scene(rng) for _ in range(batch_size)]
    return (to_pixels(scenes), torch.from_numpy(np.stack([class_map(s) for s in scenes])),
            torch.from_numpy(np.stack([pixel_weights(s) for s in scenes])))


def judge_batch(seed: int, stream: str, step: int, batch_size: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    rng = stage_rng(seed, stream, step)
    scenes = [judge_scene(rng) for _ in range(batch_size)]
    return to_pixels(scenes), judge_targets(scenes)


def degrade(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Training-only blur and noise, per image, so generated samples look like familiar input.

    Half the images get a 3x3 Gaussian blur of random strength; all get Gaussian pixel noise
    with a random std up to 0.08 (on [-1, 1]). Labels are unchanged: neither moves an edge.
    """
    b = pixels.shape[0]
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :] / 16).expand(3, 1, 3, 3)          # (3, 1, 3, 3)
    blurred = F.conv2d(F.pad(pixels, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    amount = torch.rand(b, 1, 1, 1, generator=generator) * (torch.rand(b, 1, 1, 1, generator=generator) < 0.5)
    out = pixels + amount * (blurred - pixels)
    noise_std = torch.rand(b, 1, 1, 1, generator=generator) * 0.08
    return out + noise_std * torch.randn(pixels.shape, generator=generator)


def _augment_generator(seed: int, stream: str, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(stage_rng(seed, f"{stream}-augment", step).integers(2**62)))


# --------------------------------------------------------------------------- networks


class JudgeNet(nn.Module):
    """Four conv stages (64 -> 8 px), then average- and max-pooled features into four linear heads.

    Max pooling keeps a small object's colour and pattern from being averaged into the
    background; average pooling keeps the background's.
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 96)):
        super().__init__()
        w = list(widths)
        self.widths = w
        layers, cin = [], 3
        for i, cout in enumerate(w):
            layers += [_conv(cin, cout, 1 if i == 0 else 2), _conv(cout, cout)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({name: nn.Linear(2 * w[-1], len(values)) for name, values in JUDGE_HEADS.items()})

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.features(pixels)                                           # (B, w3, 8, 8)
        pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)  # (B, 2 w3)
        return {name: head(pooled) for name, head in self.heads.items()}    # name -> (B, classes)


# --------------------------------------------------------------------------- segments


# --------------------------------------------------------------------------- saved models


class Judge:
    """Says which background, shape, colour and pattern an image of one object shows."""

    def __init__(self, net: JudgeNet):
        self.net = net.eval()

    @classmethod
    def load(cls, directory: str | Path) -> "Judge":
        net, config = _load(Path(directory), "judge", lambda c: JudgeNet(c["widths"]))
        if config["heads"] != {k: list(v) for k, v in JUDGE_HEADS.items()}:
            raise ValueError(f"{directory}: the judge's heads are not this world's attributes")
        return cls(net)

    @torch.no_grad()
    def predict(self, images: Sequence[Image.Image]) -> list[dict[str, str]]:
        """One {'background', 'shape', 'colour', 'pattern'} of the world's key names per image."""
        if not images:
            return []
        device = next(self.net.parameters()).device
        logits = self.net(_pixels_of(images).to(device))
        picks = {head: logits[head].argmax(1).tolist() for head in JUDGE_HEADS}
        return [{head: JUDGE_HEADS[head][picks[head][b]] for head in JUDGE_HEADS} for b in range(len(images))]


# --------------------------------------------------------------------------- training


def _torch_seed(seed: int, stream: str) -> int:
    return int(stage_rng(seed, stream, 0).integers(2**62))


def _fit(name: str, net: nn.Module, stage: SandboxStage, loss_at: Callable[[nn.Module, int], torch.Tensor],
         work_dir: Path, checkpoint_every: int, log_every: int = 25) -> nn.Module:
    """AdamW with `lr_at`'s schedule over `stage.steps`; resumes from `work_dir/<name>.pt`."""
    opt = torch.optim.AdamW(net.parameters(), lr=stage.lr, weight_decay=1e-4)
    net.train()
    train_steps(name, {"model": net, "opt": opt}, opt, stage.steps, functools.partial(lr_at, stage),
                lambda step, _: loss_at(net, step), Path(work_dir), checkpoint_every=checkpoint_every,
                log_every=log_every)
    return net.eval()


def fit_segmenter(cfg: SandboxConfig, work_dir: Path, checkpoint_every: int = CHECKPOINT_EVERY) -> SegmenterNet:
    """Train the segmenter's network (per-pixel cross-entropy) from `cfg.seed`; resumable."""
    torch.manual_seed(_torch_seed(cfg.seed, "segmenter-init"))
    net = SegmenterNet()

    def loss_at(model: nn.Module, step: int) -> torch.Tensor:
        pixels, labels, weights = segmenter_batch(cfg.seed, "segmenter", step, cfg.segmenter.batch_size)
        pixels = degrade(pixels, _augment_generator(cfg.seed, "segmenter", step))
        per_pixel = F.cross_entropy(model(pixels), labels, reduction="none")     # (B, H, W)
        return (per_pixel * weights).sum() / weights.sum()

    return _fit("segmenter", net, cfg.segmenter, loss_at, work_dir, checkpoint_every)


def fit_judge(cfg: SandboxConfig, work_dir: Path, checkpoint_every: int = CHECKPOINT_EVERY) -> JudgeNet:
    """Train the judge's network (sum of the four heads' cross-entropies) from `cfg.seed`; resumable."""
    torch.manual_seed(_torch_seed(cfg.seed, "judge-init"))
    net = JudgeNet()

    def loss_at(model: nn.Module, step: int) -> torch.Tensor:
        pixels, targets = judge_batch(cfg.seed, "judge", step, cfg.judge.batch_size)
        logits = model(degrade(pixels, _augment_generator(cfg.seed, "judge", step)))
        return sum(F.cross_entropy(logits[head], targets[head]) for head in JUDGE_HEADS)

    return _fit("judge", net, cfg.judge, loss_at, work_dir, checkpoint_every)


def segmenter_config(net: SegmenterNet) -> dict:
    return {"kind": "segmenter", "widths": net.widths, "classes": list(SEGMENTER_CLASSES),
            "min_segment_fraction": MIN_SEGMENT_FRACTION, "image_size": world.SIZE}


def judge_config(net: JudgeNet) -> dict:
    return {"kind": "judge", "widths": net.widths, "heads": {k: list(v) for k, v in JUDGE_HEADS.items()},
            "image_size": world.SIZE}


def _train_and_save(cfg: Config, name: str, fit, make_config, measure, description: str,
                    work_dir: Path, out_dir: Path) -> dict:
    sb = cfg.sandbox
    started = time.time()
    net = fit(sb, Path(work_dir))
    wall = round(time.time() - started, 1)
    with atomic_dir(out_dir) as tmp:
        config = make_config(net)
        _save(tmp, net, config)
        record = {"model": description, "seed": sb.seed, "params": to_dict(getattr(sb, name)),
                  "steps": getattr(sb, name).steps, "config": config, "device": device_record(),
                  "wall_time_s": wall, "validity": measure(tmp, cfg)}   # measured on the saved (fp16) weights
        (tmp / TRAINING_RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    log.info("%s: %s", name, json.dumps(record["validity"]))
    return record


def train_segmenter(cfg: Config, work_dir: Path, out_dir: Path) -> dict:
    """Train, save into `out_dir` atomically with its training record; returns the record."""
    return _train_and_save(cfg, "segmenter", fit_segmenter, segmenter_config, measure_segmenter,
                           "sandbox segmenter (per-pixel shape classifier, U-Net; one segment per component)",
                           work_dir, out_dir)


def train_judge(cfg: Config, work_dir: Path, out_dir: Path) -> dict:
    """Train, save into `out_dir` atomically with its training record; returns the record."""
    return _train_and_save(cfg, "judge", fit_judge, judge_config, measure_judge,
                           "sandbox judge (CNN, heads: background, shape, colour, pattern)", work_dir, out_dir)


# --------------------------------------------------------------------------- validity


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def measure_segmenter(directory: str | Path, cfg: Config, images: int | None = None) -> dict:
    """Mask IoU per class of the saved segmenter on held-out world images (seed stream never trained on).

    For each image and each shape in it: IoU of the union of the class's segments (what
    identity similarity keeps, `Segmentation.class_mask`) with the true union mask; averaged
    per class over the images that hold it. Also: how often a shape absent from an image gets
    a segment anyway (`false_detection_rate`), and the share of pixels labelled right.
    """
    images = images or HELDOUT_SEGMENTER_IMAGES
    segmenter = SandboxSegmenter.load(directory)
    rng = stage_rng(cfg.sandbox.seed, "segmenter-heldout", 0)
    scenes = [segmenter_scene(rng) for _ in range(images)]
    found = []
    for start in range(0, images, 100):
        found += segmenter([Image.fromarray(s.image) for s in scenes[start:start + 100]])
    ious: dict[str, list[float]] = {name: [] for name in world.SHAPES}
    false, absent, correct = 0, 0, 0
    for scene, segmentation in zip(scenes, found):
        truth = class_map(scene)
        predicted = np.zeros_like(truth)
        for name in world.SHAPES:
            mask = segmentation.class_mask(name)
            predicted[mask] = SEGMENTER_CLASSES.index(name)
            true_mask = truth == SEGMENTER_CLASSES.index(name)
            if true_mask.any():
                ious[name].append(_mask_iou(mask, true_mask))
            else:
                absent += 1
                false += bool(mask.any())
        correct += int((predicted == truth).sum())
    per_class = {name: round(float(np.mean(v)), 4) for name, v in ious.items()}
    return {"heldout_images": images, "mask_iou": per_class, "mean_mask_iou": round(float(np.mean(list(per_class.values()))), 4),
            "false_detection_rate": round(false / max(1, absent), 4),
            "pixel_accuracy": round(correct / (images * world.SIZE * world.SIZE), 4)}


ROBUSTNESS_IMAGES = 200   # the first held-out renders, degraded


def stripes(image: np.ndarray, amplitude: float = 18.0, period: int = 4) -> np.ndarray:
    """Diagonal stripes of +-`amplitude` grey levels, like the ripples of an undertrained
    diffusion model's samples."""
    y, x = np.mgrid[:image.shape[0], :image.shape[1]]
    wave = np.where(((x + y) % period) < period / 2, amplitude, -amplitude)[..., None]
    return np.clip(image.astype(np.float32) + wave, 0, 255).astype(np.uint8)


def blurred(image: np.ndarray, sigma: float) -> np.ndarray:
    from PIL import ImageFilter

    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius=sigma)))


# What the judge must still read on renders degraded as the base model's samples are (blurred,
# rippled); the VAE round trip is the diffusion model's `vae_judged`.
DEGRADATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "blur_1px": lambda im: blurred(im, 1.0),
    "blur_2px": lambda im: blurred(im, 2.0),
    "stripes_18": stripes,
    "blur_1px_stripes_18": lambda im: stripes(blurred(im, 1.0)),
}


def measure_judge(directory: str | Path, cfg: Config, images: int | None = None) -> dict:
    """Per-head accuracy of the saved judge on held-out renders (seed stream never trained on),
    clean and, on the first `ROBUSTNESS_IMAGES`, under each of `DEGRADATIONS`."""
    images = images or HELDOUT_JUDGE_IMAGES
    judge = Judge.load(directory)
    rng = stage_rng(cfg.sandbox.seed, "judge-heldout", 0)
    scenes = [judge_scene(rng) for _ in range(images)]

    def judged_of(pictures: list[np.ndarray]) -> list[dict[str, str]]:
        out = []
        for start in range(0, len(pictures), 250):
            out += judge.predict([Image.fromarray(p) for p in pictures[start:start + 250]])
        return out

    degraded = scenes[:min(ROBUSTNESS_IMAGES, images)]
    robustness = {name: judge_accuracy(judged_of([degrade(s.image) for s in degraded]), degraded)
                  for name, degrade in DEGRADATIONS.items()}
    return {"heldout_images": images, "accuracy": judge_accuracy(judged_of([s.image for s in scenes]), scenes),
            "robustness_images": len(degraded), "robustness": robustness}


def judge_accuracy(judged: Sequence[dict[str, str]], scenes: Sequence[world.WorldImage]) -> dict[str, float]:
    """Per head, the share of `judged` (Judge.predict's output) that names the scene's truth."""
    truth = judge_targets(scenes)
    return {head: round(float(np.mean([JUDGE_HEADS[head].index(j[head]) == int(t)
                                       for j, t in zip(judged, truth[head])])), 4) for head in JUDGE_HEADS}
