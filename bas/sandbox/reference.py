"""Ground-truth references: what a perfect method would draw, scored like every method.

The sandbox knows each evaluation object's identity, so for every cell of a scene's grid
(template, concept subset, seed) the world can render the scene's own objects, the exact
identities the methods learn, in the template's context at random places and sizes. Scored
by the same scorers, these images are the *ceiling* of each metric in this world. A second
reference, `other_identity`, renders objects of the same shapes in the next colour (same
pattern): the *floor* of identity similarity for an object that is the right kind of thing
but not the right one. A method's numbers read against these two, not against 0 and 1.

No real-data pipeline can do this (nobody has the ground truth of a personalized image);
it is what the sandbox is for (docs/SANDBOX.md).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image

from bas.errors import DataError
from bas.generation.grid import build_grid
from bas.generation.run import manifest_frame
from bas.io import atomic_write_bytes, atomic_write_parquet
from bas.kinds import GROUND_TRUTH, OTHER_IDENTITY, REFERENCES
from bas.paths import MANIFEST_FILE
from bas.sandbox import world
from bas.scenes.coco import sandbox_world_root


SAMPLER = "sandbox_render"


def scene_identities(scene) -> list[world.Identity]:
    """The world identity of each concept of a scene staged from a sandbox-world COCO root."""
    source = scene.source or {}
    recorded = Path(source.get("coco_root", ""))
    root = recorded if (recorded / "annotations").is_dir() else sandbox_world_root()
    ann_file = root / "annotations" / f"instances_{source.get('split', '')}.json"
    if source.get("kind") != "coco" or not ann_file.exists():
        raise DataError(f"scene {scene.scene_id}: not staged from a sandbox world COCO root "
                        f"(source {source or 'unknown'}); references need the world's identities")
    annotations = json.loads(ann_file.read_text())["annotations"]
    by_category = {a["category_id"]: a for a in annotations if a["image_id"] == source.get("image_id")}
    identities = []
    for name, category in zip(scene.class_names, scene.category_ids):
        ann = by_category.get(category)
        if ann is None or "sandbox_identity" not in ann:
            raise DataError(f"{ann_file}: image {source.get('image_id')} has no sandbox_identity for "
                            f"concept {name!r} of scene {scene.scene_id}")
        shape, colour, pattern = ann["sandbox_identity"].split("-")
        identities.append(world.Identity(shape, colour, pattern))
    return identities


def other_identity(identity: world.Identity) -> world.Identity:
    """The same shape in the next colour (same pattern): a different object of the same class."""
    colours = list(world.COLOURS)
    return world.Identity(identity.shape, colours[(colours.index(identity.colour) + 1) % len(colours)],
                          identity.pattern)


def background_of(template: str) -> str:
    """The world background whose context phrase the template ends with."""
    for key, phrase in world.BACKGROUNDS.items():
        if template.endswith(phrase):
            return key
    raise DataError(f"template {template!r}: no sandbox background has its context "
                    f"(known: {', '.join(world.BACKGROUNDS.values())})")


def require_reference(reference: str) -> None:
    """One clear error unless `reference` is one of REFERENCES."""
    if reference not in REFERENCES:
        raise DataError(f"unknown reference {reference!r} (known: {', '.join(REFERENCES)})")


def render_reference(cfg, scene, reference: str, out_dir: Path) -> pd.DataFrame:
    """Render the reference's images of one scene's grid into `out_dir`; returns its manifest."""
    require_reference(reference)
    identities = scene_identities(scene)
    if reference == OTHER_IDENTITY:
        identities = [other_identity(i) for i in identities]
    tokens = [f"<asset{i}>" for i in range(scene.num_concepts)]
    items = build_grid(scene.scene_id, tokens, scene.class_names, cfg.generation, cfg.seed)
    manifest = manifest_frame(items, reference, SAMPLER)
    for item, rel in zip(items, manifest["path"]):
        target = out_dir / rel
        if target.exists():
            continue
        rng = np.random.default_rng(item.seed)
        picture = world.place_objects(rng, background_of(item.template), [identities[i] for i in item.subset])
        buffer = io.BytesIO()
        Image.fromarray(picture.image).save(buffer, format="PNG")
        atomic_write_bytes(target, buffer.getvalue())
    atomic_write_parquet(out_dir / MANIFEST_FILE, manifest)
    return manifest
