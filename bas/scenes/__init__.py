"""Scenes: COCO images or a user's photo, each with one binary mask per concept.

Public API:
- `Scene`, `load_scene(dir)`, `load_scenes(scenes_dir)`, `write_scene(scene, dir)`
- `stage_coco(cfg.scenes, out_dir) -> StageReport`, `resolve_coco_root(cfg.scenes)`, `demo_root()`
- `make_user_scene(...)`, `add_scene(scene, scenes_dir)`
"""

from bas.scenes.coco import CocoSource, Skipped, demo_root, resolve_coco_root
from bas.scenes.scene import Scene, load_scene, load_scenes, write_scene
from bas.scenes.stage import StageReport, add_scene, stage_coco
from bas.scenes.user import make_user_scene

__all__ = [
    "CocoSource", "Scene", "Skipped", "StageReport", "add_scene", "demo_root", "load_scene",
    "load_scenes", "make_user_scene", "resolve_coco_root", "stage_coco", "write_scene",
]
