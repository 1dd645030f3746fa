"""`bas stage`: select COCO scenes and write them with the scene index (PROTOCOL.md sec. 1)."""

from __future__ import annotations

# The library is imported inside the command functions, so that `bas --help` and the other commands start fast.

import argparse
import dataclasses
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stage", help="stage COCO scenes (image + masks + index) from a COCO root",
        description="Select scenes from a COCO root (annotations/instances_<split>.json + <split>/*.jpg) "
                    "by the rules of params.yaml `scenes`, and write them with index.parquet. "
                    "Without a COCO root on this machine, the demo source shipped with bas is used.")
    parser.add_argument("--coco-root", help="COCO root directory, or 'demo' (default: params scenes.coco_root)")
    parser.add_argument("--split", help="split name, e.g. train2017 (default: params scenes.split)")
    parser.add_argument("--num-scenes", type=int, help="how many scenes (default: params scenes.num_scenes)")
    parser.add_argument("--out", type=Path, help="scenes directory (default: <storage_root>/<paths.scenes>)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bas import paths
    from bas.cli import load_config
    from bas.errors import DataError
    from bas.scenes import stage_coco

    cfg = load_config(args)
    changes = {key: value for key, value in (("coco_root", args.coco_root), ("split", args.split),
                                              ("num_scenes", args.num_scenes)) if value is not None}
    if args.coco_root not in (None, "demo") and not Path(args.coco_root).is_dir():
        raise DataError(f"--coco-root {args.coco_root}: no such directory")
    scenes_cfg = dataclasses.replace(cfg.scenes, **changes)
    report = stage_coco(scenes_cfg, args.out or paths.scenes_dir(cfg))
    print(report.summary())
    for item in report.skipped:
        print(f"  skipped {item}")
    return 0
