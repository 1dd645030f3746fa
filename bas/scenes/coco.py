"""COCO instances -> scenes (PROTOCOL.md sec. 1, BaS appendix B.2).

Reads a COCO root laid out as `annotations/instances_<split>.json` + `<split>/<file_name>`.
For each image, in a fixed seeded order:

1. crop the centre square of the shorter side;
2. concepts = non-crowd instance masks (polygons or RLE, decoded with pycocotools) whose
   area inside the crop is >= `min_area_fraction` of the crop, classes in
   `excluded_classes` dropped;
3. "distinct" (`exactly_one_large`): a class is a concept only if exactly one of its
   non-crowd instances passes the bar; two large people name no single person, so the
   class gives no concept (crowd annotations are neither concepts nor counted);
4. the image qualifies with >= 2 such classes; above `max_concepts`, the largest (area in
   the crop; ties: lower annotation id) are kept, and concepts are ordered that way;
5. the crop is resized to `resolution` (image Lanczos, masks nearest, binary).

Selection is stable: images are ranked by sha256(f"{selection_seed}:{image_id}") and the
first `num_scenes` qualifying ones are taken. An image's rank depends on its id alone, so
adding images to the source can only insert new scenes in the ranking; each chosen scene
that still ranks in the first `num_scenes` stays chosen and byte-identical.

Every COCO instances file holds only the 80 "thing" categories (stuff lives in separate
files), so every category here is a thing class.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils

from bas.config import ScenesConfig
from bas.errors import DataError
from bas.scenes.scene import Scene, make_scene

log = logging.getLogger(__name__)

DEMO_SPLIT = "demo"
SANDBOX_SPLIT = "sandbox"


def demo_root() -> Path:
    """The tiny COCO-format source shipped inside the package (see bas/data/demo/README.md)."""
    return Path(__file__).resolve().parents[1] / "data" / "demo"


@dataclass(frozen=True)
class CocoSource:
    root: Path
    split: str
    is_demo: bool = False

    @property
    def annotation_file(self) -> Path:
        return self.root / "annotations" / f"instances_{self.split}.json"

    @property
    def image_dir(self) -> Path:
        return self.root / self.split


def sandbox_world_root() -> Path:
    """The sandbox world's evaluation scenes, committed with bas (`bas sandbox world` rewrites them)."""
    return Path(__file__).resolve().parents[1] / "data" / "sandbox" / "world"


def resolve_coco_root(scenes_cfg: ScenesConfig) -> CocoSource:
    """The configured COCO root if it exists, else the demo source shipped with bas.

    `coco_root: demo` asks for the demo explicitly. The demo always uses split "demo".
    `coco_root: sandbox` is the sandbox world's evaluation scenes (split "sandbox").
    """
    if scenes_cfg.coco_root == SANDBOX_SPLIT:
        log.info("scenes: sandbox world %s, split %r", sandbox_world_root(), SANDBOX_SPLIT)
        return CocoSource(sandbox_world_root(), SANDBOX_SPLIT)
    if scenes_cfg.coco_root != DEMO_SPLIT:
        root = Path(scenes_cfg.coco_root)
        if root.is_dir():
            log.info("scenes: COCO root %s, split %s", root, scenes_cfg.split)
            return CocoSource(root, scenes_cfg.split)
        log.warning("scenes: COCO root %s not found; using the demo source shipped with bas (%s, "
                    "split %r). Set scenes.coco_root to a COCO download for the real protocol.",
                    root, demo_root(), DEMO_SPLIT)
    else:
        log.info("scenes: demo source %s, split %r", demo_root(), DEMO_SPLIT)
    return CocoSource(demo_root(), DEMO_SPLIT, is_demo=True)


# --------------------------------------------------------------------------- annotations


@dataclass(frozen=True)
class Skipped:
    """One input left out, and why (listed in StageReport.skipped and logged)."""

    kind: str  # "image" | "annotation"
    item: str  # e.g. "image 42 (000000000042.jpg)", "annotation 7 (image 42)"
    reason: str

    def __str__(self) -> str:
        return f"{self.item}: {self.reason}"


@dataclass(frozen=True)
class ImageEntry:
    image_id: int
    file_name: str
    width: int
    height: int
    coco_url: str = ""      # where COCO serves the image (`bas coco fetch`)

    def label(self) -> str:
        return f"image {self.image_id} ({self.file_name})"


@dataclass
class CocoAnnotations:
    path: Path
    images: dict[int, ImageEntry]
    categories: dict[int, str]
    annotations_by_image: dict[int, list[dict]]
    skipped: list[Skipped] = field(default_factory=list)


def _require(entry: Any, keys: dict[str, tuple[type, ...]], where: str, path: Path) -> None:
    if not isinstance(entry, dict):
        raise DataError(f"{path}: {where} is not a JSON object")
    for key, types in keys.items():
        if key not in entry:
            raise DataError(f"{path}: {where} is missing key {key!r}")
        value = entry[key]
        if not isinstance(value, types) or isinstance(value, bool):
            raise DataError(f"{path}: {where}: {key} = {value!r} has the wrong type "
                            f"(expected {' or '.join(t.__name__ for t in types)})")


def read_annotations(source: CocoSource) -> CocoAnnotations:
    """Parse and check `instances_<split>.json`; errors name the file, the entry and the key."""
    path = source.annotation_file
    if not path.exists():
        found = sorted(p.name for p in (source.root / "annotations").glob("instances_*.json"))
        hint = f" (found: {', '.join(found)})" if found else ""
        raise DataError(f"COCO annotations not found: {path}{hint}")
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"COCO annotations {path} are not valid JSON: {err}") from None
    except OSError as err:
        raise DataError(f"COCO annotations {path} cannot be read: {err}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object at the top level")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(f"{path}: missing top-level key {key!r}")
        if not isinstance(data[key], list):
            raise DataError(f"{path}: {key!r} must be a list")

    categories: dict[int, str] = {}
    for i, cat in enumerate(data["categories"]):
        _require(cat, {"id": (int,), "name": (str,)}, f"categories[{i}]", path)
        categories[cat["id"]] = cat["name"]

    images: dict[int, ImageEntry] = {}
    for i, img in enumerate(data["images"]):
        _require(img, {"id": (int,), "file_name": (str,), "width": (int,), "height": (int,)},
                 f"images[{i}]", path)
        if img["id"] in images:
            raise DataError(f"{path}: images[{i}]: image id {img['id']} appears twice")
        if img["width"] <= 0 or img["height"] <= 0:
            raise DataError(f"{path}: images[{i}] (id {img['id']}): size {img['width']}x{img['height']}")
        images[img["id"]] = ImageEntry(img["id"], img["file_name"], img["width"], img["height"],
                                       img.get("coco_url") if isinstance(img.get("coco_url"), str) else "")

    result = CocoAnnotations(path, images, categories, {})
    for i, ann in enumerate(data["annotations"]):
        _require(ann, {"id": (int,), "image_id": (int,), "category_id": (int,),
                       "segmentation": (list, dict)}, f"annotations[{i}]", path)
        # iscrowd is optional in COCO-like exports: missing means 0, as in COCO itself.
        if ann.get("iscrowd", 0) not in (0, 1):
            raise DataError(f"{path}: annotations[{i}] (id {ann['id']}): iscrowd = {ann['iscrowd']!r}, "
                            "expected 0 or 1")
        if ann["image_id"] not in images:
            result.skipped.append(Skipped("annotation", f"annotation {ann['id']}",
                                          f"image_id {ann['image_id']} is not in {path.name}"))
            continue
        result.annotations_by_image.setdefault(ann["image_id"], []).append(ann)
    return result


# --------------------------------------------------------------------------- geometry


def crop_box(width: int, height: int) -> tuple[int, int, int]:
    """(left, top, side) of the centre square of the shorter side."""
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, side


def _polygon_area(coords: np.ndarray) -> float:
    x, y = coords[0::2], coords[1::2]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _valid_polygons(segmentation: list, label: str, skipped: list[Skipped]) -> list[list[float]]:
    """The polygon parts with >= 3 points and a non-zero area; the others are reported."""
    valid = []
    for k, part in enumerate(segmentation):
        if not isinstance(part, list) or not all(isinstance(v, (int, float)) for v in part):
            skipped.append(Skipped("annotation", f"{label} polygon {k}", "not a list of numbers"))
            continue
        if len(part) % 2 or len(part) < 6:
            skipped.append(Skipped("annotation", f"{label} polygon {k}",
                                   f"{len(part)} coordinates; a polygon needs >= 3 (x, y) points"))
            continue
        if _polygon_area(np.asarray(part, dtype=np.float64)) <= 0.0:
            skipped.append(Skipped("annotation", f"{label} polygon {k}", "zero area"))
            continue
        valid.append([float(v) for v in part])
    return valid


@dataclass
class _Instance:
    annotation_id: int
    category_id: int
    mask: np.ndarray  # (side, side) bool, the annotation inside the crop
    area: int  # pixels inside the crop


def _decode(segmentation: list | dict, image: ImageEntry, label: str,
            skipped: list[Skipped]) -> Optional[np.ndarray]:
    """Full-image (H, W) bool mask of valid polygons or an RLE, or None (reason in `skipped`)."""
    h, w = image.height, image.width
    try:
        if isinstance(segmentation, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
        else:
            size, counts = segmentation.get("size"), segmentation.get("counts")
            if list(size or []) != [h, w] or counts is None:
                skipped.append(Skipped("annotation", label,
                                       f"RLE size {size} does not match the image {h}x{w} or has no counts"))
                return None
            if isinstance(counts, list):
                rle = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
            else:
                rle = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        return mask_utils.decode(rle).astype(bool)  # (H, W)
    except (TypeError, ValueError, UnicodeError) as err:
        skipped.append(Skipped("annotation", label, f"segmentation cannot be decoded: {err}"))
        return None


def _upper_bound_in_crop(polygons: list[list[float]], box: tuple[int, int, int]) -> float:
    """An upper bound of the pixel area of `polygons` inside the crop, from their extent."""
    coords = np.concatenate([np.asarray(p) for p in polygons])
    xs, ys = coords[0::2], coords[1::2]
    left, top, side = box
    # +1 pixel each side: rasterisation may touch the pixel a vertex lies in.
    w = min(xs.max() + 1, left + side) - max(xs.min() - 1, left)
    h = min(ys.max() + 1, top + side) - max(ys.min() - 1, top)
    return max(w, 0.0) * max(h, 0.0)


# --------------------------------------------------------------------------- selection


@dataclass
class Candidate:
    """An image that qualifies on its annotations, with its chosen concepts."""

    image: ImageEntry
    box: tuple[int, int, int]
    concepts: list[_Instance]


def rank_key(selection_seed: int, image_id: int) -> str:
    return hashlib.sha256(f"{selection_seed}:{image_id}".encode()).hexdigest()


def ranked_image_ids(coco: CocoAnnotations, selection_seed: int) -> list[int]:
    return sorted(coco.images, key=lambda i: (rank_key(selection_seed, i), i))


def select_concepts(coco: CocoAnnotations, image: ImageEntry, cfg: ScenesConfig,
                    skipped: list[Skipped]) -> Optional[Candidate]:
    """The image's concepts by the protocol's rules, or None when it does not qualify."""
    if cfg.distinct != "exactly_one_large" or cfg.keep_when_too_many != "largest":
        raise NotImplementedError(f"scenes.distinct={cfg.distinct}, keep_when_too_many={cfg.keep_when_too_many}")
    annotations = coco.annotations_by_image.get(image.image_id, [])
    unknown = sorted({a["category_id"] for a in annotations if a["category_id"] not in coco.categories})
    if unknown:
        skipped.append(Skipped("image", image.label(),
                               f"annotation(s) with unknown category id {unknown} (not in {coco.path.name})"))
        return None
    box = crop_box(image.width, image.height)
    left, top, side = box
    threshold = cfg.min_area_fraction * side * side
    excluded = set(cfg.excluded_classes)

    large: dict[int, list[_Instance]] = {}
    for ann in annotations:
        if ann.get("iscrowd", 0) or coco.categories[ann["category_id"]] in excluded:
            continue
        label = f"annotation {ann['id']} (image {image.image_id})"
        segmentation = ann["segmentation"]
        if isinstance(segmentation, list):
            segmentation = _valid_polygons(segmentation, label, skipped)
            if not segmentation:
                skipped.append(Skipped("annotation", label, "no valid polygon"))
                continue
            if _upper_bound_in_crop(segmentation, box) < threshold:
                continue  # cannot reach the bar; no need to decode
        full = _decode(segmentation, image, label, skipped)
        if full is None:
            continue
        crop = full[top:top + side, left:left + side]  # (side, side)
        area = int(crop.sum())
        if area >= threshold:
            large.setdefault(ann["category_id"], []).append(_Instance(ann["id"], ann["category_id"], crop, area))

    concepts = [instances[0] for instances in large.values() if len(instances) == 1]
    if len(concepts) < 2:
        return None
    concepts.sort(key=lambda c: (-c.area, c.annotation_id))
    return Candidate(image, box, concepts[:cfg.max_concepts])


def build_scene(source: CocoSource, coco: CocoAnnotations, candidate: Candidate, cfg: ScenesConfig,
                skipped: list[Skipped]) -> Optional[Scene]:
    """Read the candidate's image, crop and resize it with its masks; None if the image is bad."""
    image = candidate.image
    path = source.image_dir / image.file_name
    try:
        with Image.open(path) as opened:
            opened.load()
            photo = opened.convert("RGB")
    except FileNotFoundError:
        skipped.append(Skipped("image", image.label(), f"file not found: {path}"))
        return None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        skipped.append(Skipped("image", image.label(), f"cannot read {path}: {err}"))
        return None
    if photo.size != (image.width, image.height):
        skipped.append(Skipped("image", image.label(), f"{path} is {photo.size[0]}x{photo.size[1]}, "
                               f"{coco.path.name} says {image.width}x{image.height}"))
        return None

    left, top, side = candidate.box
    size = (cfg.resolution, cfg.resolution)
    square = photo.crop((left, top, left + side, top + side)).resize(size, Image.Resampling.LANCZOS)
    masks = []
    for concept in candidate.concepts:
        mask = Image.fromarray(concept.mask.astype(np.uint8) * 255, mode="L")
        masks.append(np.asarray(mask.resize(size, Image.Resampling.NEAREST)) >= 128)  # (R, R) bool
    scene_source = {"kind": "coco", "coco_root": str(source.root), "split": source.split,
                    "image_id": image.image_id, "file_name": image.file_name}
    return make_scene(
        scene_id=f"coco-{source.split}-{image.image_id}",
        image=square,
        masks=masks,
        class_names=[coco.categories[c.category_id] for c in candidate.concepts],
        category_ids=[c.category_id for c in candidate.concepts],
        source=scene_source,
    )


def iter_scenes(source: CocoSource, coco: CocoAnnotations, cfg: ScenesConfig,
                skipped: list[Skipped]) -> Iterator[Scene]:
    """Qualifying scenes in rank order (all of them if the caller keeps asking)."""
    unknown_excluded = sorted(set(cfg.excluded_classes) - set(coco.categories.values()))
    if unknown_excluded:
        log.warning("scenes.excluded_classes: %s not a category of %s", ", ".join(unknown_excluded), coco.path)
    for image_id in ranked_image_ids(coco, cfg.selection_seed):
        candidate = select_concepts(coco, coco.images[image_id], cfg, skipped)
        if candidate is None:
            continue
        scene = build_scene(source, coco, candidate, cfg, skipped)
        if scene is not None:
            yield scene
