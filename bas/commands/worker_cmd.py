"""`bas worker`: start a Prefect process worker for one GPU of this machine.

Sets what the scene flows need on a worker (the project directory the deployments run in,
the worker's name for the attempt records, the one GPU it owns) and replaces itself with
`prefect worker start --type process --limit 1`.
"""

from __future__ import annotations

# The library is imported inside the command functions, so that `bas --help` and the other commands start fast.

import argparse
import os
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "worker", help="start a Prefect worker of the GPU pool for one GPU (or of the controller pool)",
        description="Start `prefect worker start` on orchestration.work_pool with one flow run at a time. "
                    "Run one per GPU, each with its --gpu index.")
    parser.add_argument("--name", required=True, help="worker name, unique in the pool (shown in the records)")
    parser.add_argument("--gpu", help="CUDA device index this worker owns (sets CUDA_VISIBLE_DEVICES)")
    parser.add_argument("--controller", action="store_true",
                        help="serve the controller pool (scheduled full_eval runs) instead of the GPU pool")
    parser.add_argument("--project-dir", type=Path, default=Path.cwd(),
                        help="the bas checkout the flows run in (default: the current directory)")
    parser.add_argument("--idle-timeout", type=float, metavar="SECONDS",
                        help="exit after this long without a flow run (frees a Slurm job's GPU); "
                             "SIGTERM then also stops the flow run it holds, which full_eval resubmits")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bas.attempts import WORKER_ENV
    from bas.cli import load_config
    from bas.errors import BasError

    orch = load_config(args).orchestration
    pool = orch.controller_pool if args.controller else orch.work_pool
    if not pool:
        raise BasError("params: orchestration.work_pool is null: name the GPU work pool (and run `bas deploy`)")
    env = {**os.environ, WORKER_ENV: args.name, "BAS_PROJECT_DIR": str(args.project_dir.resolve())}
    if args.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = args.gpu
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process",
               "--name", args.name, "--limit", "1"]
    sys.stdout.flush()
    if args.idle_timeout is not None:
        from bas.worker_process import run_until_idle

        if args.idle_timeout <= 0:
            raise BasError(f"--idle-timeout {args.idle_timeout:g}: must be > 0 seconds")
        return run_until_idle(command, env, args.idle_timeout)
    os.execvpe(command[0], command, env)
    return 0  # not reached
