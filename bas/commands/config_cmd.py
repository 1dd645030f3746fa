"""`bas config`: print the resolved params (after -S overrides) as YAML."""

from __future__ import annotations

# The library is imported inside the command functions, so that `bas --help` and the other commands start fast.

import argparse

import yaml


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="print the resolved params as YAML")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bas.cli import load_config

    cfg = load_config(args)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    return 0
