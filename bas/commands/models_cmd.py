"""`bas models fetch` and `bas models check`: download a profile's models, and check the machine."""

from __future__ import annotations

# The library is imported inside the command functions, so that `bas --help` and the other commands start fast.

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="download the models a profile needs, or check what is here",
                                   description="fetch: download every model the profile needs into the Hugging "
                                               "Face cache (resumable). check: which models are present, the "
                                               "device, free disk and what each method needs in memory.")
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION")
    sub.required = True
    fetch = sub.add_parser("fetch", help="download the profile's models into the Hugging Face cache")
    fetch.add_argument("--profile", default="sd21", help="model profile (default: %(default)s)")
    fetch.set_defaults(func=run_fetch)
    check = sub.add_parser("check", help="models present, device, VRAM, disk, memory options per method, "
                                         "and what a run will write against the storage root's free space")
    check.add_argument("--profile", default="sd21", help="model profile (default: %(default)s)")
    check.add_argument("--method", action="append", help="only these methods (default: orchestration.methods)")
    check.set_defaults(func=run_check)


def _config(args: argparse.Namespace):
    from bas import config
    from bas.cli import parse_overrides

    return config.load(args.params, {**parse_overrides(args.overrides), "models.profile": args.profile})


def run_fetch(args: argparse.Namespace) -> int:
    from bas.errors import ModelNotAvailableError
    from bas.models.fetch import fetch_one, hf_cache_dir, human_size, sd21_models

    cfg = _config(args)
    if cfg.models.profile != "sd21":
        print(f"profile {cfg.models.profile}: nothing to download (its models are built or bundled locally)")
        return 0
    done, failed = [], []
    for model in sd21_models(cfg.models):
        print(f"{model.what}: {model.source}", flush=True)
        try:
            done.append(fetch_one(model))
        except ModelNotAvailableError as err:
            failed.append(str(err))
            print(f"bas: error: {err}", flush=True)
    print(f"\ncache: {hf_cache_dir()}")
    for f in done:
        pinned = f"@{f.commit}" if f.commit else " (local copy)"
        print(f"  {human_size(f.size):>9}  {f.model.what}: {f.model.repo_id or f.model.local}{pinned}\n"
              f"             in {f.where}")
        if f.commit and f.commit != f.model.revision:
            print(f"             (revision {f.model.revision!r}; pin it with -S models.sd21.{f.model.key.split('_')[0]}"
                  f"_revision={f.commit} or in params.yaml)")
    print(f"  {human_size(sum(f.size for f in done)):>9}  in all")
    return 1 if failed else 0


def run_check(args: argparse.Namespace) -> int:
    from bas.models.doctor import check
    from bas.training.methods import get_recipe

    from bas import space

    cfg = _config(args)
    methods = (args.method or cfg.orchestration.methods) if cfg.models.profile == "sd21" else ()
    report = check(cfg, {m: get_recipe(cfg, m) for m in methods})
    print(report.text())
    need = space.estimate(cfg, list(args.method or cfg.orchestration.methods))
    print("\n" + need.text())
    warning = space.room_warning(cfg, need)
    if warning:
        print(f"WARNING: {warning}")
    return 0 if report.ok else 1
