"""The `bas` console command.

Each subcommand lives next to the library code it drives, in a module that exposes
`register(subparsers)`; that function adds its parser and sets `func` to a callable taking
the parsed args. This file only collects them, loads params, and turns `BasError` into one
clear line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

from bas.errors import BasError, hide_user_error_tracebacks

# Modules that contribute subcommands, in the order `bas --help` lists them.
COMMAND_MODULES = [
    "bas.commands.config_cmd",
    "bas.commands.env_cmd",
    "bas.commands.stage_cmd",
    "bas.commands.scene_cmd",
    "bas.commands.rate_cmd",
    "bas.commands.run_cmd",
    "bas.commands.train_generate_cmd",
    "bas.commands.score_runs_cmd",
    "bas.commands.recipes_cmd",
    "bas.commands.deploy_cmd",
    "bas.commands.worker_cmd",
    "bas.commands.slurm_cmd",
    "bas.commands.generate_cmd",
    "bas.commands.score_cmd",
    "bas.commands.train_cmd",
    "bas.commands.report_cmd",
    "bas.commands.verify_cmd",
    "bas.commands.sandbox_cmd",
    "bas.commands.models_cmd",
    "bas.commands.coco_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bas", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument(
        "-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a params key, e.g. -S models.profile=tiny (repeatable; value parsed as YAML)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def parse_overrides(items: Sequence[str]) -> dict:
    import yaml   # only with -S: `bas --help` starts without it

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BasError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = yaml.safe_load(value)
    return overrides


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # Prefect's HTTP client logs every request at INFO; keep the terminal for progress.
    logging.getLogger("httpx").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    if not args.verbose:   # a BasError Prefect logs is its message, without the engine's traceback
        hide_user_error_tracebacks()
    try:
        result = args.func(args)
    except BasError as err:
        print(f"bas: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bas: interrupted; finished work is kept and a rerun resumes", file=sys.stderr)
        return 130
    return int(result or 0)


def load_config(args: argparse.Namespace):
    """The config for a subcommand: params file plus -S overrides."""
    from bas import config   # bas.config imports pandas (bas.schema): not for `bas --help`

    return config.load(args.params, parse_overrides(args.overrides))


if __name__ == "__main__":
    sys.exit(main())
