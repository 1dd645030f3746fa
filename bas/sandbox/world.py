"""The sandbox world: seeded procedural scenes whose every object's identity is known.

A scene is a 64x64 image: one of ten backgrounds, one per context of the protocol's prompt
templates (beach sand, jungle, snow, street, pink fabric, wooden floor, a city, a mountain,
the Eiffel tower, water), and 1-4 objects. An object's identity is shape x colour x pattern
(5 x 8 x 3 = 120 identities); its class, in the COCO sense, is its shape. Captions speak the
templates' language: "a photo of a red striped circle and a blue square at the beach".

A fixed, seeded fifth of the identities never appears in the base model's training data:
these "novel objects" are what personalization has to learn from a single image, and the
evaluation scenes (`write_coco_root(..., novel=True)`) are made of them.

Everything here is numpy + PIL and deterministic given a seed.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Optional, Sequence

import io as _io

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from bas.io import atomic_write_bytes, atomic_write_text

SIZE = 64

# key -> the context phrase of its protocol template ("a photo of {tokens} <phrase>").
BACKGROUNDS: dict[str, str] = {
    "beach": "at the beach",
    "jungle": "in the jungle",
    "snow": "in the snow",
    "street": "in the street",
    "pink_fabric": "on top of a pink fabric",
    "wooden_floor": "on top of a wooden floor",
    "city": "with a city in the background",
    "mountain": "with a mountain in the background",
    "eiffel_tower": "with the Eiffel tower in the background",
    "water": "floating on top of water",
}
SHAPES = ("circle", "square", "triangle", "star", "cross")
# No black: a masked concept is shown on black (bas.scenes.masking), where it would vanish.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (245, 225, 30),
    "green": (40, 190, 60),
    "blue": (30, 70, 225),
    "purple": (135, 40, 190),
    "pink": (250, 110, 190),
    "white": (250, 250, 250),
}
PATTERNS = ("plain", "striped", "dotted")

NOVEL_FRACTION = 0.2
MIN_SIDE, MAX_SIDE = 16, 40          # object box side (px) in base-training images
EVAL_MIN_AREA = 0.16                 # visible share of the image per evaluation object (staging needs 0.15)


@dataclass(frozen=True, order=True)
class Identity:
    shape: str
    colour: str
    pattern: str

    @property
    def phrase(self) -> str:
        """'red striped circle'; a plain object is just 'red circle'."""
        words = [self.colour] + ([] if self.pattern == "plain" else [self.pattern]) + [self.shape]
        return " ".join(words)

    @property
    def key(self) -> str:
        return f"{self.shape}-{self.colour}-{self.pattern}"


ALL_IDENTITIES: tuple[Identity, ...] = tuple(Identity(s, c, p) for s, c, p in product(SHAPES, COLOURS, PATTERNS))


def novel_identities(seed: int = 0) -> frozenset[Identity]:
    """The identities held out of base training: a seeded fifth, each attribute value still seen."""
    rng = random.Random(f"bas-sandbox-novel:{seed}")
    count = round(NOVEL_FRACTION * len(ALL_IDENTITIES))
    while True:
        novel = frozenset(rng.sample(ALL_IDENTITIES, count))
        seen = [i for i in ALL_IDENTITIES if i not in novel]
        # every shape, colour and pattern must stay learnable from the seen identities
        if all({getattr(i, a) for i in seen} == set(vals)
               for a, vals in (("shape", SHAPES), ("colour", COLOURS), ("pattern", PATTERNS))):
            return novel


def seen_identities(seed: int = 0) -> tuple[Identity, ...]:
    novel = novel_identities(seed)
    return tuple(i for i in ALL_IDENTITIES if i not in novel)


# --------------------------------------------------------------------------- drawing


def _noise(rng: np.random.Generator, scale: float) -> np.ndarray:
    return rng.normal(0.0, scale, size=(SIZE, SIZE, 1))


def _sky(img: np.ndarray, horizon: int, rng: np.random.Generator) -> None:
    top = np.array([120, 170, 235]) + rng.integers(-15, 16, 3)
    bottom = np.array([190, 215, 245]) + rng.integers(-10, 11, 3)
    t = np.linspace(0, 1, horizon)[:, None, None]
    img[:horizon] = top * (1 - t) + bottom * t


def paint_background(name: str, rng: np.random.Generator) -> np.ndarray:
    """(SIZE, SIZE, 3) uint8: one background, with seeded variation in tone, layout and texture."""
    img = np.zeros((SIZE, SIZE, 3), np.float64)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    if name == "beach":
        horizon = int(rng.integers(12, 22))
        _sky(img, horizon, rng)
        img[horizon:horizon + 5] = (40, 120, 200)
        img[horizon + 5:] = np.array([225, 200, 140]) + rng.integers(-15, 16, 3)
        img[horizon + 5:] += _noise(rng, 10)[horizon + 5:]
    elif name == "jungle":
        img[:] = np.array([25, 85, 30]) + rng.integers(-10, 11, 3)
        for _ in range(40):  # leaves: light and dark green blobs
            cx, cy, r = rng.integers(0, SIZE, 2).tolist() + [int(rng.integers(3, 8))]
            shade = np.array([40, 140, 40]) if rng.random() < 0.5 else np.array([10, 55, 15])
            img[(xx - cx) ** 2 + ((yy - cy) * 1.8) ** 2 < r * r] = shade
        img += _noise(rng, 8)
    elif name == "snow":
        horizon = int(rng.integers(8, 20))
        _sky(img, horizon, rng)
        img[horizon:] = np.array([238, 242, 250]) + rng.integers(-8, 9, 3)
        img[horizon:] += _noise(rng, 6)[horizon:]
    elif name == "street":
        img[:] = np.array([85, 85, 90]) + rng.integers(-10, 11, 3)
        img += _noise(rng, 7)
        lane = int(rng.integers(24, 40))
        dash = (xx // 8) % 2 == 0
        img[(abs(yy - lane) <= 1) & dash] = (240, 240, 240)
        img[:6] = (150, 140, 130)   # kerb
    elif name == "pink_fabric":
        img[:] = np.array([240, 170, 200]) + rng.integers(-10, 11, 3)
        weave = ((xx + yy) % 4 == 0) | ((xx - yy) % 4 == 0)
        img[weave] *= 0.88
        img += _noise(rng, 4)
    elif name == "wooden_floor":
        img[:] = np.array([150, 95, 50]) + rng.integers(-12, 13, 3)
        plank = int(rng.integers(8, 12))
        img[yy % plank == 0] = (90, 55, 25)
        img *= (1 + 0.08 * np.sin(xx / 3.0 + yy * 2.0))[..., None]  # grain
        img += _noise(rng, 5)
    elif name == "city":
        horizon = 40 + int(rng.integers(-4, 5))
        _sky(img, SIZE, rng)
        x = 0
        while x < SIZE:
            w, h = int(rng.integers(5, 12)), int(rng.integers(12, 34))
            img[max(0, horizon - h):, x:x + w] = np.array([70, 70, 85]) + rng.integers(-20, 21)
            x += w + int(rng.integers(0, 3))
        windows = (yy % 4 == 1) & (xx % 3 == 1) & (img[..., 0] < 110)
        img[windows] = (230, 210, 120)
        img[horizon:] = (60, 60, 65)
    elif name == "mountain":
        _sky(img, SIZE, rng)
        peak_x, peak_y = int(rng.integers(16, 48)), int(rng.integers(4, 14))
        slope = rng.uniform(0.9, 1.4)
        inside = yy > peak_y + slope * abs(xx - peak_x)
        img[inside] = (105, 100, 110)
        img[inside & (yy < peak_y + 9)] = (245, 245, 250)  # snow cap
        img[yy > 52] = (70, 120, 60)
    elif name == "eiffel_tower":
        _sky(img, SIZE, rng)
        cx = int(rng.integers(20, 44))
        half = 1.0 + (yy - 4) * 0.28   # the tower widens downwards
        body = (yy >= 4) & (abs(xx - cx) <= half) & (yy < 56)
        arch = (yy > 44) & (abs(xx - cx) < (yy - 44) * 0.6)
        img[body & ~arch] = (90, 70, 50)
        img[(yy == 22) | (yy == 36)] = np.where(body[(yy == 22) | (yy == 36)][:, None], (60, 45, 30), img[(yy == 22) | (yy == 36)])
        img[yy >= 56] = (90, 140, 70)
    elif name == "water":
        img[:] = np.array([30, 100, 180]) + rng.integers(-12, 13, 3)
        phase = rng.uniform(0, 6.3)
        waves = np.sin(xx / 2.5 + phase) * 1.5 + yy
        img[(waves % 7) < 1.2] = (140, 190, 235)
        img += _noise(rng, 5)
    else:
        raise KeyError(f"unknown sandbox background {name!r}; known: {', '.join(BACKGROUNDS)}")
    return np.clip(img, 0, 255).astype(np.uint8)


def _shape_mask(shape: str, x0: int, y0: int, side: int) -> np.ndarray:
    """(SIZE, SIZE) bool: `shape` drawn in the box (x0, y0, side)."""
    canvas = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(canvas)
    x1, y1 = x0 + side - 1, y0 + side - 1
    if shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=255)
    elif shape == "square":
        inset = side * 0.08
        draw.rectangle((x0 + inset, y0 + inset, x1 - inset, y1 - inset), fill=255)
    elif shape == "triangle":
        draw.polygon([(x0 + side / 2, y0), (x1, y1), (x0, y1)], fill=255)
    elif shape == "star":
        cx, cy, r_out, r_in = x0 + side / 2, y0 + side / 2 + side * 0.04, side / 2, side * 0.25
        points = []
        for k in range(10):
            r = r_out if k % 2 == 0 else r_in
            angle = -np.pi / 2 + k * np.pi / 5
            points.append((cx + r * np.cos(angle), cy + r * np.sin(angle)))
        draw.polygon(points, fill=255)
    elif shape == "cross":
        arm = side / 3
        draw.rectangle((x0 + arm, y0, x1 - arm, y1), fill=255)
        draw.rectangle((x0, y0 + arm, x1, y1 - arm), fill=255)
    else:
        raise KeyError(f"unknown sandbox shape {shape!r}; known: {', '.join(SHAPES)}")
    return np.asarray(canvas) > 0


def _second_colour(rgb: tuple[int, int, int]) -> np.ndarray:
    """The pattern's other colour: a darker shade for light colours, a lighter one for dark."""
    c = np.array(rgb, np.float64)
    luminance = (0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]) / 255
    return c * 0.45 if luminance > 0.45 else c * 0.4 + 150


def paint_object(img: np.ndarray, identity: Identity, x0: int, y0: int, side: int) -> np.ndarray:
    """Draw `identity` into `img` (in place); return its full (unoccluded) mask."""
    mask = _shape_mask(identity.shape, x0, y0, side)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    colour = np.array(COLOURS[identity.colour], np.float64)
    if identity.pattern == "plain":
        second = np.zeros((SIZE, SIZE), bool)
    elif identity.pattern == "striped":
        second = ((xx - x0 + yy - y0) // 3) % 2 == 1          # diagonal stripes, period 6 px
    elif identity.pattern == "dotted":
        second = ((xx - x0) % 6 - 2.5) ** 2 + ((yy - y0) % 6 - 2.5) ** 2 < 2.3
    else:
        raise KeyError(f"unknown sandbox pattern {identity.pattern!r}; known: {', '.join(PATTERNS)}")
    fill = np.where(second[..., None], _second_colour(COLOURS[identity.colour]), colour)
    img[mask] = fill[mask].astype(np.uint8)
    return mask


# --------------------------------------------------------------------------- scenes


@dataclass
class WorldImage:
    image: np.ndarray                 # (SIZE, SIZE, 3) uint8
    masks: list[np.ndarray]           # one (SIZE, SIZE) bool visible mask per object
    objects: list[Identity]
    boxes: list[tuple[int, int, int]]  # (x0, y0, side) per object
    background: str

    def caption(self, rng: Optional[random.Random] = None, drop_attribute: float = 0.0,
                drop_background: float = 0.0) -> str:
        """'a photo of a red striped circle and a blue square at the beach'.

        With `rng`, objects are named in random order and each colour/pattern word or the
        background phrase is dropped with the given probabilities (caption augmentation).
        """
        order = list(range(len(self.objects)))
        if rng is not None:
            rng.shuffle(order)
        names = []
        for i in order:
            ident = self.objects[i]
            words = []
            if rng is None or rng.random() >= drop_attribute:
                words.append(ident.colour)
            if ident.pattern != "plain" and (rng is None or rng.random() >= drop_attribute):
                words.append(ident.pattern)
            words.append(ident.shape)
            names.append(article(words[0]) + " " + " ".join(words))
        text = "a photo of " + " and ".join(names)
        if rng is None or rng.random() >= drop_background:
            text += " " + BACKGROUNDS[self.background]
        return text


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def compose(background: str, objects: Sequence[Identity], boxes: Sequence[tuple[int, int, int]],
            rng: np.random.Generator) -> WorldImage:
    """Paint `objects` in their boxes over `background`, later ones on top; masks = visible parts."""
    img = paint_background(background, rng)
    full = [paint_object(img, ident, *box) for ident, box in zip(objects, boxes)]
    visible = []
    for i, mask in enumerate(full):
        covered = np.zeros_like(mask)
        for later in full[i + 1:]:
            covered |= later
        visible.append(mask & ~covered)
    return WorldImage(img, visible, list(objects), list(boxes), background)


def sample_training_image(rng: np.random.Generator, identities: Sequence[Identity], max_tries: int = 20,
                          counts: Sequence[int] = (1, 2, 3, 4), count_probs: Sequence[float] = (0.3, 0.35, 0.25, 0.1),
                          sides: tuple[int, int] = (MIN_SIDE, MAX_SIDE)) -> WorldImage:
    """A base-training image: `counts` distinct identities (drawn with `count_probs`) of `sides`
    pixels, each at least half visible."""
    count = int(rng.choice(list(counts), p=list(count_probs)))
    background = str(rng.choice(list(BACKGROUNDS)))
    picks = [identities[j] for j in rng.choice(len(identities), size=count, replace=False)]
    for _ in range(max_tries):
        boxes = []
        for _obj in picks:
            side = int(rng.integers(sides[0], sides[1] + 1))
            boxes.append((int(rng.integers(0, SIZE - side + 1)), int(rng.integers(0, SIZE - side + 1)), side))
        world = compose(background, picks, boxes, rng)
        full = [_shape_mask(o.shape, *b).sum() for o, b in zip(picks, boxes)]
        if all(m.sum() >= full_area / 2 for m, full_area in zip(world.masks, full)):
            return world
    return compose(background, picks[:1], boxes[:1], rng)


def sample_eval_image(rng: np.random.Generator, identities: Sequence[Identity], count: int,
                      max_tries: int = 2000) -> WorldImage:
    """An evaluation scene: `count` objects of distinct shapes, each >= EVAL_MIN_AREA visible."""
    background = str(rng.choice(list(BACKGROUNDS)))
    for _ in range(max_tries):
        shapes = rng.choice(SHAPES, size=count, replace=False)
        picks = []
        for shape in shapes:
            options = [i for i in identities if i.shape == shape]
            if not options:
                break
            picks.append(options[int(rng.integers(len(options)))])
        if len(picks) < count:
            continue
        picture = _try_eval_placement(rng, background, picks)
        if picture is not None:
            return picture
    raise RuntimeError(f"could not place {count} objects of >= {EVAL_MIN_AREA:.0%} each in {max_tries} tries")


def place_objects(rng: np.random.Generator, background: str, objects: Sequence[Identity],
                  max_tries: int = 2000) -> WorldImage:
    """`objects` at random places and evaluation sizes over `background`, each >= EVAL_MIN_AREA visible."""
    for _ in range(max_tries):
        picture = _try_eval_placement(rng, background, objects)
        if picture is not None:
            return picture
    raise RuntimeError(f"could not place {len(objects)} objects of >= {EVAL_MIN_AREA:.0%} each in {max_tries} tries")


def _try_eval_placement(rng: np.random.Generator, background: str,
                        objects: Sequence[Identity]) -> Optional[WorldImage]:
    """One draw of evaluation-size boxes (34-49 px) for `objects`; None unless each is >= EVAL_MIN_AREA visible."""
    boxes = []
    for _obj in objects:
        side = int(rng.integers(34, 50))
        boxes.append((int(rng.integers(0, SIZE - side + 1)), int(rng.integers(0, SIZE - side + 1)), side))
    picture = compose(background, objects, boxes, rng)
    return picture if all(m.mean() >= EVAL_MIN_AREA for m in picture.masks) else None


# --------------------------------------------------------------------------- COCO export


def write_coco_root(root: Path, split: str, count: int, seed: int, novel: bool = True,
                    objects_per_image: Sequence[int] = (2, 2, 3)) -> Path:
    """Write `count` evaluation scenes as a COCO root: `<split>/*.png` + instances JSON.

    Categories are the shapes. Each annotation also carries the object's full identity
    (`sandbox_identity`) and each image its background, which COCO readers ignore and the
    sandbox's own checks use. Identities are the novel ones when `novel` (else the seen ones).
    """
    identities = sorted(novel_identities(seed) if novel else seen_identities(seed))
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"coco:{seed}:{split}".encode()).digest()[:8], "little"))
    categories = [{"id": k + 1, "name": s, "supercategory": "shape"} for k, s in enumerate(SHAPES)]
    cat_id = {c["name"]: c["id"] for c in categories}
    images, annotations = [], []
    (root / split).mkdir(parents=True, exist_ok=True)
    for n in range(count):
        world = sample_eval_image(rng, identities, int(objects_per_image[n % len(objects_per_image)]))
        file_name = f"sandbox_{n:05d}.png"
        image_id = n + 1
        buf = _io.BytesIO()
        Image.fromarray(world.image).save(buf, format="PNG")
        atomic_write_bytes(root / split / file_name, buf.getvalue())
        images.append({"id": image_id, "file_name": file_name, "width": SIZE, "height": SIZE,
                       "sandbox_background": world.background})
        for ident, mask in zip(world.objects, world.masks):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": cat_id[ident.shape],
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                "area": float(mask.sum()), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": 0, "sandbox_identity": ident.key,
            })
    payload = {"info": {"description": f"bas sandbox world, seed {seed}, novel={novel}"},
               "images": images, "annotations": annotations, "categories": categories}
    atomic_write_text(root / "annotations" / f"instances_{split}.json", json.dumps(payload) + "\n")
    return root
