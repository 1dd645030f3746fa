"""`bas deploy`: the GPU work pool, the controller pool and the deployments of prefect.yaml.

Needs a Prefect server (`PREFECT_API_URL`); see docs/ORCHESTRATION.md.
"""

from __future__ import annotations

# The library is imported inside the command functions, so that `bas --help` and the other commands start fast.

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "deploy", help="create the work pools and the Prefect deployments (prefect.yaml) on a Prefect server",
        description="Create or update the GPU process work pool (orchestration.work_pool, concurrency limit "
                    "orchestration.concurrency) and the controller pool, then deploy the flows of prefect.yaml: "
                    "the scene flows on the GPU pool and full_eval on a cron schedule (orchestration.schedule_cron).")
    parser.add_argument("--prefect-file", type=Path, default=Path("prefect.yaml"),
                        help="deployment file (default: %(default)s)")
    parser.add_argument("--pools-only", action="store_true", help="create the work pools, not the deployments")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bas.cli import load_config

    cfg = load_config(args)  # a params mistake is reported before Prefect is imported

    from flows.deploy import deploy, ensure_work_pools

    for pool, what in ensure_work_pools(cfg).items():
        print(f"work pool {pool}: {what}")
    if not args.pools_only:
        deploy(cfg, args.prefect_file, args.params)
        print(f"deployments of {args.prefect_file} applied; full_eval scheduled '{cfg.orchestration.schedule_cron}' "
              f"({cfg.orchestration.schedule_timezone}) on pool {cfg.orchestration.controller_pool}")
    return 0
