"""`bas slurm submit | status | cancel`: GPU workers of the work pool as Slurm jobs (bas.slurm)."""

from __future__ import annotations

# The library is imported inside the command functions, so that `bas --help` and the other commands start fast.

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "slurm", help="GPU workers of orchestration.work_pool as a Slurm job array: submit, status, cancel",
        description="Submit, list and cancel the GPU worker jobs (options: orchestration.slurm in params). "
                    "See docs/ORCHESTRATION.md, section Slurm.")
    actions = parser.add_subparsers(dest="slurm_action", metavar="ACTION")
    actions.required = True
    submit = actions.add_parser("submit", help="submit N worker jobs (one job array)",
                                description="Write the sbatch script to <root>/records/slurm/, print it and "
                                            "submit it (not with --dry-run).")
    submit.add_argument("--workers", type=int, required=True, help="number of GPU workers (array tasks)")
    submit.add_argument("--dry-run", action="store_true", help="print and save the script; submit nothing")
    submit.add_argument("--project-dir", type=Path, default=Path.cwd(),
                        help="the bas checkout on the shared filesystem the jobs run in (default: here)")
    submit.set_defaults(func=run_submit)
    status = actions.add_parser("status", help="the worker jobs, what each works on, the pool's queue")
    status.set_defaults(func=run_status)
    cancel = actions.add_parser("cancel", help="scancel the worker jobs (their runs are resubmitted)")
    cancel.add_argument("job_ids", nargs="*", help="jobs to cancel (default: every job of orchestration.slurm.job_name)")
    cancel.set_defaults(func=run_cancel)


def run_submit(args: argparse.Namespace) -> int:
    from bas import slurm
    from bas.cli import load_config

    cfg = load_config(args)
    script = slurm.batch_script(cfg, args.workers, args.project_dir.resolve(), str(Path(args.params).resolve()),
                                args.overrides)
    path = slurm.save_script(cfg, script)
    print(script)
    if args.dry_run:
        print(f"# saved to {path} (--dry-run: nothing submitted; `sbatch {path}` submits it)")
        return 0
    job_id = slurm.submit(path, args.workers)
    print(f"submitted job array {job_id} ({args.workers} workers of pool {cfg.orchestration.work_pool!r}); "
          f"script {path}, logs {slurm.slurm_dir(cfg) / 'logs'}")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from bas import slurm
    from bas.cli import load_config

    cfg = load_config(args)
    jobs = slurm.jobs(cfg)
    work = slurm.current_work(cfg)
    print(f"Slurm jobs named {cfg.orchestration.slurm.job_name!r}: {len(jobs)}")
    for job in jobs:
        doing = "; ".join(work.get(job.worker, [])) or ("idle" if job.state == "RUNNING" else "-")
        where = job.node if job.state == "RUNNING" else job.reason
        print(f"  {job.job_id:<14} {job.state:<10} {job.elapsed:>10}  {where:<16} {doing}")
    if cfg.orchestration.work_pool:
        try:
            queue = slurm.pool_queue(cfg)
        except Exception as err:  # no server reachable: the jobs above are still worth showing
            print(f"work pool {cfg.orchestration.work_pool!r}: Prefect API not reachable ({type(err).__name__}: {err})")
        else:
            total = sum(len(runs) for runs in queue.values())
            print(f"work pool {cfg.orchestration.work_pool!r}: {total} flow runs not finished")
            for state, runs in sorted(queue.items()):
                print(f"  {state}: {len(runs)}  ({', '.join(sorted(runs)[:8])}{', ...' if len(runs) > 8 else ''})")
    return 0


def run_cancel(args: argparse.Namespace) -> int:
    from bas import slurm
    from bas.cli import load_config

    targets = slurm.cancel(load_config(args), args.job_ids)
    print(f"scancel {' '.join(targets)}: their flow runs are resubmitted by the full evaluation that waits on them")
    return 0
