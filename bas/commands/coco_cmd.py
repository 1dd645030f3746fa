"""`bas coco fetch`: the COCO annotations and only the images the scene selection picks."""

from __future__ import annotations

# The library is imported inside the command functions, so that `bas --help` and the other commands start fast.

import argparse
import dataclasses
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("coco", help="download the COCO annotations and the images the scenes need",
                                   description="fetch: COCO's annotations zip, then only the images the scene "
                                               "selection (params `scenes`) picks, by their coco_url; resumable. "
                                               "`bas stage` on the same root then gives these scenes.")
    sub = parser.add_subparsers(dest="coco_command", metavar="ACTION")
    sub.required = True
    fetch = sub.add_parser("fetch", help="annotations + the picked images into a COCO root")
    fetch.add_argument("--split", default=None, help="train2017 or val2017 (default: params scenes.split)")
    fetch.add_argument("--root", type=Path, help="COCO root to fill (default: params scenes.coco_root)")
    fetch.add_argument("--num-scenes", type=int, help="scenes to find images for (default: params scenes.num_scenes)")
    fetch.add_argument("--base-url", help="COCO server or mirror (default: params scenes.fetch.base_url)")
    fetch.set_defaults(func=run_fetch)


def run_fetch(args: argparse.Namespace) -> int:
    from bas.cli import load_config
    from bas.errors import ConfigError
    from bas.scenes.coco import DEMO_SPLIT, SANDBOX_SPLIT
    from bas.scenes.coco_fetch import fetch_coco

    cfg = load_config(args)
    scenes = cfg.scenes
    if args.num_scenes is not None:
        scenes = dataclasses.replace(scenes, num_scenes=args.num_scenes)
    if args.base_url:
        scenes = dataclasses.replace(scenes, fetch=dataclasses.replace(scenes.fetch, base_url=args.base_url))
    root = args.root or Path(scenes.coco_root)
    if str(root) in (DEMO_SPLIT, SANDBOX_SPLIT):
        raise ConfigError(f"scenes.coco_root = {root}: the bundled {root} scenes need no download; "
                          "pass --root DIR for a COCO root")
    report = fetch_coco(scenes, root, args.split or scenes.split)
    print(report.summary())
    for item in report.failed:
        print(f"  skipped {item}")
    return 0
