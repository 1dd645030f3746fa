"""`bas rate serve|invite|export`: run the human rating study (BaS appendix B.3) yourself.

  bas rate invite --n 20            print 20 personal rater links (keep them: only hashes are stored)
  bas rate serve                    serve the questionnaires on 127.0.0.1:<ratings.port>
  bas rate export                   write every rating to Parquet for the report

`--run DIR` is the storage root (runs/ and scenes/ inside it; default: paths.storage_root).
The study's questions are sampled from the runs the first time any of these opens it.
"""

from __future__ import annotations

# The library is imported inside the command functions, so that `bas --help` and the other commands start fast.

import argparse
import dataclasses
import ipaddress
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("rate", help="human rating study: serve the questionnaires, invite raters, export")
    rate = parser.add_subparsers(dest="rate_command", metavar="ACTION")
    rate.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--run", metavar="DIR", help="storage root holding runs/ and scenes/ "
                                                    "(default: params paths.storage_root)")

    serve = rate.add_parser("serve", help="serve the rating web app")
    common(serve)
    serve.add_argument("--host", help="address to bind (default: params ratings.host, loopback)")
    serve.add_argument("--port", type=int, help="port (default: params ratings.port)")
    serve.set_defaults(func=run_serve)

    invite = rate.add_parser("invite", help="create raters and print their personal links")
    common(invite)
    invite.add_argument("--n", type=int, required=True, help="how many raters")
    invite.add_argument("--base-url", help="the address raters reach the server at "
                                           "(default: http://<ratings.host>:<ratings.port>)")
    invite.set_defaults(func=run_invite)

    export = rate.add_parser("export", help="write the ratings to Parquet")
    common(export)
    export.add_argument("--out", help="output file (default: <run>/<paths.ratings_export>)")
    export.set_defaults(func=run_export)


def _config(args: argparse.Namespace):
    from bas.cli import load_config

    cfg = load_config(args)
    if args.run:
        cfg = dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, storage_root=str(args.run)))
    return cfg


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from bas import paths
    from bas.ratings import open_study
    from bas.ratings.app import create_app

    cfg = _config(args)
    study = open_study(cfg)
    host = args.host or cfg.ratings.host
    port = args.port or cfg.ratings.port
    summary = study.summary()
    print(f"Rating study {study.db_path}: {summary['prompt']['pages']} prompt pages, "
          f"{summary['identity']['pages']} identity pages, {summary['raters']['invited']} rater(s) invited.")
    print(f"Serving on http://{host}:{port}/ ; rater links come from `bas rate invite`. Ctrl-C stops.")
    if not _is_loopback(host):
        print(f"Note: bound to {host}, so other machines can reach it.", file=sys.stderr)
    sys.stdout.flush()
    app = create_app(study, paths.storage_root(cfg), paths.scenes_dir(cfg))
    # No access log: request paths carry the raters' tokens.
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning")
    return 0


def run_invite(args: argparse.Namespace) -> int:
    from bas.errors import BasError
    from bas.ratings import open_study

    if args.n < 1:
        raise BasError(f"--n {args.n}: invite at least one rater")
    cfg = _config(args)
    study = open_study(cfg)
    base = (args.base_url or f"http://{cfg.ratings.host}:{cfg.ratings.port}").rstrip("/")
    for label, token in study.add_raters(args.n):
        print(f"{label}\t{base}/r/{token}")
    print(f"{args.n} rater link(s) created in {study.db_path}. Only a hash of each token is stored: "
          f"keep these links, they cannot be shown again.", file=sys.stderr)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from bas import paths
    from bas.errors import DataError
    from bas.io import atomic_write_parquet
    from bas.ratings.store import Study

    cfg = _config(args)
    r = cfg.ratings
    db = paths.ratings_db(cfg)
    if not Study.exists(db):
        raise DataError(f"{db}: no rating study here yet (start one with `bas rate invite` or `bas rate serve`)")
    study = Study(db, r.ratings_per_question, r.reservation_minutes, r.seed)
    out = Path(args.out) if args.out else paths.ratings_export(cfg)
    df = study.ratings_frame()
    atomic_write_parquet(out, df)
    summary = study.summary()
    print(f"{len(df)} ratings by {df['rater'].nunique()} raters -> {out}")
    for task in ("prompt", "identity"):
        s = summary[task]
        print(f"  {task}: {s['ratings']} ratings, {s['complete_pages']}/{s['pages']} pages with "
              f"{r.ratings_per_question} raters")
    return 0
