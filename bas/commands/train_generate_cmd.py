"""`bas train-generate`: train one method on the staged scenes and make their image grids.

The dvc.yaml stage `train_generate@<method>`. Runs the Prefect flow
`train-generate-method`: one scene flow run a scene, here or on the GPU work pool.
"""

from __future__ import annotations

# The library is imported inside the command functions, so that `bas --help` and the other commands start fast.

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-generate", help="train a method on the staged scenes and generate its image grids",
        description="For each scene (default: every staged scene), train the method unless finished, then "
                    "generate the missing images of its grid with the model still in memory.")
    parser.add_argument("--method", required=True, help="a method of params.yaml `methods:`")
    parser.add_argument("--scene", dest="scenes", action="append", metavar="ID",
                        help="only this scene (repeatable; default: every scene of the index)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bas.cli import load_config, parse_overrides
    from bas.commands.run_cmd import print_summary
    from bas.training.methods import get_recipe

    get_recipe(load_config(args), args.method)  # an unknown method is reported before Prefect is imported

    from flows.full_eval import train_generate_method

    summary = train_generate_method(method=args.method, params_file=args.params,
                                    overrides=parse_overrides(args.overrides), scene_ids=args.scenes)
    return print_summary(summary)
