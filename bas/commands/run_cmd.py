"""`bas run`: the whole evaluation (Prefect flow `full_eval`), scenes to report.

Runs on the Prefect API the environment names (`PREFECT_API_URL`), else on Prefect's
ephemeral local API: no server needed. With `orchestration.work_pool` set, the
(method, scene) runs go to that pool's GPU workers (docs/ORCHESTRATION.md).
"""

from __future__ import annotations

# The library is imported inside the command functions, so that `bas --help` and the other commands start fast.

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="run the whole evaluation (stage, train + generate, score, report) as a Prefect flow",
        description="Stage the scenes, train and generate every (method, scene) of orchestration.methods, "
                    "score them and write the report. Finished work is skipped; a failed scene does not stop "
                    "the others and is listed in the summary (exit status 1).")
    parser.add_argument("--slurm-workers", type=int, metavar="N",
                        help="first submit N GPU worker jobs of orchestration.work_pool to Slurm "
                             "(as `bas slurm submit --workers N`)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bas.cli import load_config, parse_overrides

    cfg = load_config(args)  # a params mistake is reported before Prefect is even imported
    warn_if_short_of_space(cfg)

    from flows.full_eval import full_eval

    if args.slurm_workers:
        from pathlib import Path

        from bas import slurm

        script = slurm.batch_script(cfg, args.slurm_workers, Path.cwd(), str(Path(args.params).resolve()),
                                    args.overrides)
        path = slurm.save_script(cfg, script)
        print(f"submitted Slurm job array {slurm.submit(path, args.slurm_workers)} "
              f"({args.slurm_workers} workers; script {path})")
    summary = full_eval(params_file=args.params, overrides=parse_overrides(args.overrides))
    return print_summary(summary)


def warn_if_short_of_space(cfg) -> None:
    """Warn (one line, stderr) when the storage root has less free space than the run will write."""
    import sys

    from bas import space

    warning = space.room_warning(cfg, space.estimate(cfg))
    if warning:
        print(f"bas: warning: {warning}", file=sys.stderr, flush=True)


def print_summary(summary: dict) -> int:
    """Print the run summary; exit status 1 when something failed. A full disk stopped the run:
    its one line is raised as the error (exit status 2)."""
    from bas.errors import BasError
    from bas.pipeline import format_summary

    print(format_summary(summary))
    if summary.get("stopped"):
        raise BasError(summary["stopped"])
    return 1 if summary["failures"] else 0
