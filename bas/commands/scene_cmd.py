"""`bas scene add`: turn a user's photo and concept masks into a scene."""

from __future__ import annotations

# The library is imported inside the command functions, so that `bas --help` and the other commands start fast.

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("scene", help="manage scenes (add your own photo)")
    actions = parser.add_subparsers(dest="scene_command", metavar="ACTION")
    actions.required = True
    add = actions.add_parser(
        "add", help="add a scene from a photo and one mask per concept",
        description="Centre-crop the photo to a square, resize it to scenes.resolution, and write it "
                    "with its masks into the scenes directory; the scene index is updated.")
    add.add_argument("--image", type=Path, required=True, help="the photo")
    add.add_argument("--mask", type=Path, action="append", required=True, dest="masks",
                     help="a mask of one concept, same size as the photo (repeat per concept)")
    add.add_argument("--names", help="comma-separated concept names, one per --mask "
                                     "(default: the mask file names)")
    add.add_argument("--id", dest="scene_id", help="scene id (default: from the photo's file name)")
    add.add_argument("--replace", action="store_true", help="replace a scene of the same id")
    add.add_argument("--out", type=Path, help="scenes directory (default: <storage_root>/<paths.scenes>)")
    add.set_defaults(func=run_add)


def run_add(args: argparse.Namespace) -> int:
    from bas import paths
    from bas.cli import load_config
    from bas.scenes import add_scene, make_user_scene
    from bas.scenes.user import default_scene_id

    cfg = load_config(args)
    names = [n for n in args.names.split(",")] if args.names is not None else None
    scene_id = args.scene_id or default_scene_id(args.image)
    scene = make_user_scene(args.image, args.masks, scene_id, cfg.scenes.resolution, names)
    scenes_dir = args.out or paths.scenes_dir(cfg)
    changed = add_scene(scene, scenes_dir, replace=args.replace)
    state = "written" if changed else "unchanged"
    print(f"scene {scene.scene_id} ({', '.join(scene.class_names)}) {state} in {scenes_dir / scene.scene_id}")
    return 0
