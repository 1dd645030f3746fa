"""`bas recipes`: write each evaluated method's resolved recipe (dvc.yaml stage `recipes`)."""

from __future__ import annotations

# The library is imported inside the command functions, so that `bas --help` and the other commands start fast.

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "recipes", help="write <storage_root>/recipes/<method>.json, each method's recipe with includes merged",
        description="A method's train stage in dvc.yaml depends on its resolved recipe file, so editing a "
                    "recipe that others include reruns exactly the methods that include it.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bas import paths, pipeline
    from bas.cli import load_config

    cfg = load_config(args)
    result = pipeline.write_recipes(cfg)
    print(f"{len(result['methods'])} recipes in {paths.recipes_dir(cfg)} "
          f"({len(result['written'])} written: {', '.join(result['written']) or 'none'})")
    return 0
