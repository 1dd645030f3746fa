"""A scene: one square image, one binary mask per concept, and the concepts' class names.

On disk (docs/ARCHITECTURE.md, "Scenes"), a scene is a directory holding `image.png`,
`mask_<i>.png` (mode L, 0/255) and `scene.json`. Scenes are written whole through
`bas.io.atomic_dir`, so a directory either holds a complete scene or the previous one.

The content hash covers the pixels of the image, the masks and the class names, so two
scenes with the same hash train and score the same; where the scene came from (`source`)
is not part of it.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

from bas.errors import DataError
from bas.io import atomic_dir, sha256_bytes
from bas.paths import SCENE_IMAGE_FILE, SCENE_INDEX_FILE, SCENE_JSON
from bas.scenes.index import read_index

log = logging.getLogger(__name__)

# Scene ids become directory names: letters, digits, '.', '_', '-'; no leading dot.
SCENE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def mask_file(index: int) -> str:
    return f"mask_{index}.png"


@dataclass
class Scene:
    """One scene in memory. `masks[i]` and `class_names[i]` describe concept i."""

    scene_id: str
    image: Image.Image  # RGB, square
    masks: list[np.ndarray]  # each (H, W) bool
    class_names: list[str]
    category_ids: list[Optional[int]]  # COCO category id, None for a user's concept
    content_hash: str
    path: Optional[Path] = None  # the scene's directory once written or loaded
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def num_concepts(self) -> int:
        return len(self.masks)

    @property
    def resolution(self) -> int:
        return self.image.size[0]

    @property
    def coverages(self) -> list[float]:
        """Fraction of the image each concept's mask covers."""
        return [float(m.mean()) for m in self.masks]


def compute_content_hash(image: Image.Image, masks: list[np.ndarray], class_names: list[str]) -> str:
    """sha256 over the image pixels, the masks and the class names (each length-prefixed)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)  # (H, W, 3)
    chunks = [b"bas-scene-v1", repr(pixels.shape).encode(), pixels.tobytes()]
    for mask, name in zip(masks, class_names, strict=True):
        mask = np.asarray(mask, dtype=bool)  # (H, W)
        chunks += [repr(mask.shape).encode(), np.packbits(mask).tobytes(), name.encode("utf-8")]
    return sha256_bytes(*chunks)


def make_scene(
    scene_id: str,
    image: Image.Image,
    masks: list[np.ndarray],
    class_names: list[str],
    category_ids: list[Optional[int]],
    source: dict[str, Any],
) -> Scene:
    """A Scene with its content hash computed; checks the parts fit together."""
    check_scene_id(scene_id)
    image = image.convert("RGB")
    width, height = image.size
    if width != height:
        raise ValueError(f"scene {scene_id}: image is {width}x{height}, not square")
    if not (len(masks) == len(class_names) == len(category_ids)) or not masks:
        raise ValueError(f"scene {scene_id}: {len(masks)} masks, {len(class_names)} names, "
                         f"{len(category_ids)} category ids")
    masks = [np.asarray(m, dtype=bool) for m in masks]
    for i, mask in enumerate(masks):
        if mask.shape != (height, width):
            raise ValueError(f"scene {scene_id}: mask {i} is {mask.shape}, image is {(height, width)}")
    return Scene(scene_id, image, masks, list(class_names), list(category_ids),
                 compute_content_hash(image, masks, class_names), None, dict(source))


def check_scene_id(scene_id: str) -> str:
    if not isinstance(scene_id, str) or not SCENE_ID_PATTERN.match(scene_id):
        raise DataError(
            f"scene id {scene_id!r} is not allowed: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit")
    return scene_id


def scene_json(scene: Scene) -> dict[str, Any]:
    return {
        "scene_id": scene.scene_id,
        "source": scene.source,
        "resolution": scene.resolution,
        "content_hash": scene.content_hash,
        "concepts": [
            {"index": i, "class_name": name, "category_id": cat, "mask": mask_file(i),
             "coverage": round(cov, 6)}
            for i, (name, cat, cov) in enumerate(zip(scene.class_names, scene.category_ids, scene.coverages))
        ],
    }


def _mask_image(mask: np.ndarray) -> Image.Image:
    return Image.fromarray(mask.astype(np.uint8) * 255, mode="L")


def write_scene(scene: Scene, directory: str | Path) -> bool:
    """Write `scene` into `directory` as a whole; returns False when nothing had to change.

    A directory that already holds a valid scene with the same content hash is left alone
    (same files, same mtimes), so re-staging unchanged inputs rewrites nothing.
    """
    directory = Path(directory)
    if (directory / SCENE_JSON).exists():
        try:
            existing = load_scene(directory)
        except DataError as err:
            log.info("rewriting scene %s: the existing one does not load (%s)", directory, err)
        else:
            if existing.content_hash == scene.content_hash:
                scene.path = directory
                return False
    with atomic_dir(directory) as tmp:
        # compress_level 1: scenes are written once and read by every run; PNG level 6 is
        # several times slower to write for ~10% smaller files.
        scene.image.save(tmp / SCENE_IMAGE_FILE, format="PNG", compress_level=1)
        for i, mask in enumerate(scene.masks):
            _mask_image(mask).save(tmp / mask_file(i), format="PNG", compress_level=1)
        (tmp / SCENE_JSON).write_text(json.dumps(scene_json(scene), indent=2, sort_keys=True) + "\n")
    scene.path = directory
    return True


# --------------------------------------------------------------------------- loading


def _open_png(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except FileNotFoundError:
        raise DataError(f"scene file missing: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"scene file {path} is not a readable image: {err}") from None


def load_scene(directory: str | Path) -> Scene:
    """Read and check one scene directory; errors name the file at fault."""
    directory = Path(directory)
    meta_path = directory / SCENE_JSON
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise DataError(f"not a scene directory: {meta_path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{meta_path} is not valid JSON: {err}") from None
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path}: expected a JSON object")
    for key in ("scene_id", "source", "resolution", "content_hash", "concepts"):
        if key not in meta:
            raise DataError(f"{meta_path}: missing key {key!r}")
    concepts = meta["concepts"]
    if not isinstance(concepts, list) or not concepts:
        raise DataError(f"{meta_path}: 'concepts' must be a non-empty list")
    resolution = meta["resolution"]

    image_path = directory / SCENE_IMAGE_FILE
    image = _open_png(image_path)
    if image.mode != "RGB":
        raise DataError(f"{image_path}: mode {image.mode}, expected RGB")
    if image.size != (resolution, resolution):
        raise DataError(f"{image_path}: size {image.size[0]}x{image.size[1]}, "
                        f"{meta_path} says {resolution}x{resolution}")

    masks, names, categories = [], [], []
    for i, concept in enumerate(concepts):
        for key in ("class_name", "category_id", "mask"):
            if not isinstance(concept, dict) or key not in concept:
                raise DataError(f"{meta_path}: concepts[{i}] is missing key {key!r}")
        mask_path = directory / concept["mask"]
        mask_image = _open_png(mask_path)
        if mask_image.mode != "L":
            raise DataError(f"{mask_path}: mode {mask_image.mode}, expected L (0/255)")
        if mask_image.size != image.size:
            raise DataError(f"{mask_path}: size {mask_image.size}, image is {image.size}")
        values = np.asarray(mask_image)  # (H, W) uint8
        if not np.isin(values, (0, 255)).all():
            raise DataError(f"{mask_path}: values other than 0 and 255")
        mask = values == 255
        if not mask.any():
            raise DataError(f"{mask_path}: empty mask")
        masks.append(mask)
        names.append(concept["class_name"])
        categories.append(concept["category_id"])

    content_hash = compute_content_hash(image, masks, names)
    if content_hash != meta["content_hash"]:
        raise DataError(f"{directory}: files do not match the content_hash in {meta_path} "
                        "(edited by hand? re-stage or re-add the scene)")
    scene_id = check_scene_id(meta["scene_id"])
    if scene_id != directory.name:
        raise DataError(f"{meta_path}: scene_id {scene_id!r} differs from its directory name")
    return Scene(scene_id, image, masks, names, categories, content_hash, directory, meta["source"])


def scene_dirs(scenes_dir: str | Path) -> list[Path]:
    """Scene directories under `scenes_dir`: those in its index, else every one with a scene.json.

    The index is the truth: a directory of a scene that an earlier staging chose but the
    current one dropped stays on disk, and is not a scene of this selection.
    """
    scenes_dir = Path(scenes_dir)
    index_path = scenes_dir / SCENE_INDEX_FILE
    if index_path.exists():
        ids = sorted(set(read_index(index_path)["scene_id"]))
        return [scenes_dir / scene_id for scene_id in ids]
    if not scenes_dir.is_dir():
        raise DataError(f"scenes directory not found: {scenes_dir} (run `bas stage` first)")
    return sorted(p for p in scenes_dir.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / SCENE_JSON).exists())


def load_scenes(scenes_dir: str | Path) -> list[Scene]:
    """Every scene of `scenes_dir` (see `scene_dirs`), sorted by scene id."""
    scenes = [load_scene(d) for d in scene_dirs(scenes_dir)]
    return sorted(scenes, key=lambda s: s.scene_id)
