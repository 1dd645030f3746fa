"""`bas env`: the environment bas runs in (bas.environment), as shell `export` lines.

Every bas process sets these itself; a shell that runs Prefect or DVC directly (`prefect
server start`, `prefect worker start`) takes them with `eval "$(bas env)"`.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "env", help="print the environment bas runs in (Prefect, Hugging Face, DVC settings) as export lines",
        description="Print each variable bas sets for itself before Prefect is imported, with the value it "
                    "runs with (yours where you set one), as `export NAME=VALUE` lines: "
                    "eval \"$(bas env)\" gives a shell the same.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import shlex

    from bas.environment import APPLIED, DEFAULTS

    for name in DEFAULTS:
        mark = "bas default" if name in APPLIED else "yours"
        print(f"export {name}={shlex.quote(os.environ[name])}  # {mark}")
    return 0
