"""`bas run`: the whole evaluation (Prefect flow `full_eval`), scenes to report.

Runs on the Prefect API the environment names (`PREFECT_API_URL`), else on Prefect's
ephemeral local API: no server needed. With `orchestration.work_pool` set, the
(method, scene) runs go to that pool's GPU workers (docs/ORCHESTRATION.md).
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="run the whole evaluation (stage, train + generate, score, report) as a Prefect flow",
        description="Stage the scenes, train and generate every (method, scene) of orchestration.methods, "
                    "score them and write the report. Finished work is skipped; a failed scene does not stop "
                    "the others and is listed in the summary (exit status 1).")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bas.cli import load_config, parse_overrides
    from flows.full_eval import full_eval

    load_config(args)  # a params mistake is reported before Prefect starts
    summary = full_eval(params_file=args.params, overrides=parse_overrides(args.overrides))
    return print_summary(summary)


def print_summary(summary: dict) -> int:
    from bas.pipeline import format_summary

    print(format_summary(summary))
    return 1 if summary["failures"] else 0
