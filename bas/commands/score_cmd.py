"""`bas score`: score a run's images, or any folder of images, into a Parquet table."""

from __future__ import annotations

# The library is imported inside the command functions, so that `bas --help` and the other commands start fast.

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score", help="score generated images (CLIP, DINO, MaskFormer) into scores.parquet",
        description="Score a bas run directory (--run) or a folder of images made by anything (--images, "
                    "described by a manifest.parquet/.csv or by names <scene_id>/t<template>_c<subset>_"
                    "s<seed>.png; see bas/scoring/score.py).")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="run directory holding manifest.parquet and images/")
    source.add_argument("--images", help="folder of images bas did not make")
    parser.add_argument("--scenes", help="scenes directory (default: <storage_root>/scenes)")
    parser.add_argument("--out", help="output Parquet file (--images only; default <images>/scores.parquet)")
    parser.add_argument("--method", help="method name for --images (default: the folder's name)")
    parser.add_argument("--manifest", help="manifest file for --images (default: <images>/manifest.parquet|csv)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run_kind(cfg, run: Path) -> str:
    """The kind of the method whose run directory this is (its manifest names the method)."""
    import pandas as pd

    from bas import paths
    from bas.errors import DataError
    from bas.training.methods import method_kind

    manifest = paths.manifest_path(run)
    if not manifest.exists():
        raise DataError(f"no finished generation in {run}: {manifest.name} is missing (run `bas generate`)")
    methods = pd.read_parquet(manifest, columns=["method"])["method"].unique()
    return method_kind(cfg, str(methods[0]))


def run(args: argparse.Namespace) -> int:
    from bas import paths
    from bas.cli import load_config
    from bas.errors import BasError
    from bas.scoring.score import score_folder, score_run, summary

    cfg = load_config(args)
    progress = not args.no_progress
    if args.run:
        if args.out or args.method or args.manifest:
            raise BasError("--out, --method and --manifest go with --images, not --run")
        scores = score_run(cfg, args.run, args.scenes, kind=run_kind(cfg, Path(args.run)), progress=progress)
        out = paths.scores_path(Path(args.run))
    else:
        if not args.scenes:
            raise BasError("bas score --images needs --scenes DIR (the scenes the images were made from)")
        scores = score_folder(cfg, args.images, args.scenes, args.out, method=args.method,
                              manifest=args.manifest, progress=progress)
        out = Path(args.out) if args.out else paths.scores_path(Path(args.images))
    s = summary(scores)
    print(f"{s['images']} images, {s['rows']} rows -> {out}; detection rate {s['detected']:.3f}")
    return 0
