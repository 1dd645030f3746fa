"""Read a scene folder (`<root>/scenes/<scene_id>/`, format in docs/ARCHITECTURE.md).

Generation and scoring need only what the folder holds: the image, one boolean mask per
concept and the class names. This reader depends on the on-disk format alone, so it reads
scenes made by `bas` and scenes a researcher writes by hand (for scoring other methods'
outputs) alike. Its `Scene` has the attribute names of `bas.scenes.Scene`, so either can be
passed where a scene is expected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bas.errors import DataError

SCENE_FILE = "scene.json"


@dataclass
class Scene:
    scene_id: str
    image: Image.Image          # RGB
    masks: list[np.ndarray]     # one (H, W) bool array per concept, in concept-index order
    class_names: list[str]
    content_hash: str
    path: Path


def read_scene(scene_dir: str | Path) -> Scene:
    """The scene stored in `scene_dir`; DataError naming the file if anything is missing."""
    scene_dir = Path(scene_dir)
    meta_path = scene_dir / SCENE_FILE
    if not meta_path.exists():
        raise DataError(f"scene not found: {meta_path} does not exist")
    try:
        meta = json.loads(meta_path.read_text())
        concepts = sorted(meta["concepts"], key=lambda c: int(c["index"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise DataError(f"{meta_path}: not a scene description ({type(err).__name__}: {err})") from None
    if [int(c["index"]) for c in concepts] != list(range(len(concepts))):
        raise DataError(f"{meta_path}: concept indices must be 0..N-1, got {[c['index'] for c in concepts]}")
    image = _open(scene_dir / meta.get("image", "image.png"), "RGB")
    masks = []
    for concept in concepts:
        mask_path = scene_dir / concept.get("mask", f"mask_{concept['index']}.png")
        mask = np.asarray(_open(mask_path, "L")) > 127                    # (H, W) bool
        if mask.shape != (image.height, image.width):
            raise DataError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                            f"{image.width}x{image.height}")
        masks.append(mask)
    return Scene(scene_id=str(meta.get("scene_id", scene_dir.name)), image=image, masks=masks,
                 class_names=[str(c["class_name"]) for c in concepts],
                 content_hash=str(meta.get("content_hash", "")), path=scene_dir)


def _open(path: Path, mode: str) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert(mode)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
