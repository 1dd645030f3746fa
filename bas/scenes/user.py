"""A user's own scene: one photo and one mask file per concept.

The same rules as COCO scenes: centre square crop of the shorter side, image resized with
Lanczos, masks with nearest and binarised. A mask file is read as its alpha channel when it
has a non-opaque one (a cut-out saved with transparency), else as grey levels; pixels
>= 128 are the concept. EXIF orientation is applied to the photo and the masks, so a phone
photo is used the way viewers show it. Concept names default to the mask file names
(`cat.png` -> "cat").
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from bas.errors import DataError
from bas.scenes.coco import crop_box
from bas.scenes.scene import Scene, check_scene_id, make_scene

log = logging.getLogger(__name__)

RESERVED_PREFIX = "coco-"  # COCO scene ids; a user's id must not collide with them


def _open(path: Path, what: str) -> Image.Image:
    try:
        with Image.open(path) as opened:
            opened.load()
            return ImageOps.exif_transpose(opened)
    except FileNotFoundError:
        raise DataError(f"{what} file not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"{what} file {path} is not a readable image: {err}") from None


def _binary_mask(mask: Image.Image) -> np.ndarray:
    if mask.mode in ("RGBA", "LA", "PA") or (mask.mode == "P" and "transparency" in mask.info):
        alpha = np.asarray(mask.convert("RGBA"))[..., 3]  # (H, W)
        if (alpha < 255).any():
            return alpha >= 128
    return np.asarray(mask.convert("L")) >= 128  # (H, W) bool


def default_scene_id(image_path: str | Path) -> str:
    """A safe scene id from a photo's file name (unsafe characters become '-')."""
    stem = Path(image_path).stem
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "-" for c in stem).strip(".-_")
    safe = safe or "scene"
    if safe.startswith(RESERVED_PREFIX):
        safe = "user-" + safe
    return safe[:128]


def make_user_scene(image_path: str | Path, mask_paths: Sequence[str | Path], scene_id: str,
                    resolution: int, names: Optional[Sequence[str]] = None) -> Scene:
    """Build a scene from a photo and its concept masks; errors name the file at fault."""
    image_path = Path(image_path)
    mask_paths = [Path(p) for p in mask_paths]
    check_scene_id(scene_id)
    if scene_id.startswith(RESERVED_PREFIX):
        raise DataError(f"scene id {scene_id!r}: ids starting with {RESERVED_PREFIX!r} are kept for COCO scenes")
    if not mask_paths:
        raise DataError(f"{image_path}: give at least one mask file")
    if names is None:
        names = [p.stem for p in mask_paths]
    names = [str(n).strip() for n in names]
    if len(names) != len(mask_paths):
        raise DataError(f"{image_path}: {len(names)} name(s) ({', '.join(names)}) for {len(mask_paths)} "
                        f"mask file(s) ({', '.join(str(p) for p in mask_paths)}); give one name per mask")
    for name, path in zip(names, mask_paths):
        if not name:
            raise DataError(f"{path}: empty concept name")

    photo = _open(image_path, "image").convert("RGB")
    left, top, side = crop_box(*photo.size)
    size = (resolution, resolution)
    square = photo.crop((left, top, left + side, top + side)).resize(size, Image.Resampling.LANCZOS)

    masks = []
    for path in mask_paths:
        mask_image = _open(path, "mask")
        if mask_image.size != photo.size:
            raise DataError(f"mask {path} is {mask_image.size[0]}x{mask_image.size[1]}, the image "
                            f"{image_path} is {photo.size[0]}x{photo.size[1]}; masks must match the image")
        mask = _binary_mask(mask_image)  # (H, W)
        if not mask.any():
            raise DataError(f"mask {path} is empty (no pixel >= 128)")
        crop = mask[top:top + side, left:left + side]  # (side, side)
        if not crop.any():
            raise DataError(f"mask {path} lies outside the centre square crop of {image_path}")
        resized = Image.fromarray(crop.astype(np.uint8) * 255, mode="L").resize(size, Image.Resampling.NEAREST)
        mask = np.asarray(resized) >= 128  # (R, R) bool
        if not mask.any():
            raise DataError(f"mask {path} vanishes when resized to {resolution}x{resolution}")
        masks.append(mask)
    source = {"kind": "user", "image": str(image_path), "masks": [str(p) for p in mask_paths]}
    return make_scene(scene_id, square, masks, names, [None] * len(masks), source)
