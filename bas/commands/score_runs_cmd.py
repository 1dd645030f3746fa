"""`bas score-runs`: score one method's image grids into <root>/scores/<method>/.

The dvc.yaml stage `score@<method>`. Runs the Prefect flow `score-method`: one scene flow
run a scene, here or on the GPU work pool.
"""

from __future__ import annotations

# The library is imported inside the command functions, so that `bas --help` and the other commands start fast.

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score-runs", help="score a method's generated grids (one Parquet file a scene)",
        description="Score every scene's grid of the method into <storage_root>/scores/<method>/<scene_id>.parquet; "
                    "scenes already scored with the same inputs and scoring params are skipped.")
    parser.add_argument("--method", required=True, help="a method of params.yaml `methods:`")
    parser.add_argument("--scene", dest="scenes", action="append", metavar="ID",
                        help="only this scene (repeatable; default: every scene of the index)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bas.cli import load_config, parse_overrides
    from bas.commands.run_cmd import print_summary
    from bas.training.methods import method_kind

    # a params mistake or an unknown method is reported before Prefect is imported
    method_kind(load_config(args), args.method)

    from flows.full_eval import score_method

    summary = score_method(method=args.method, params_file=args.params,
                           overrides=parse_overrides(args.overrides), scene_ids=args.scenes)
    return print_summary(summary)
