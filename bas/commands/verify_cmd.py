"""`bas verify [--hash]`: are the finished outputs under the storage root what their markers recorded?"""

from __future__ import annotations

# The library is imported inside the command functions, so that `bas --help` and the other commands start fast.

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verify", help="check every finished output under the storage root against its record",
        description="Each finished stage records its outputs' sizes, mtimes and SHA-256 (done.json of a run, "
                    "scores/<method>/<scene>.json, images.json of the class images). verify compares them "
                    "with the files: sizes, and the content of a file whose mtime moved; --hash re-hashes "
                    "every file and every staged scene. Each difference is one line; exit status 1 when "
                    "something differs (`bas run` makes it again with what depends on it).")
    parser.add_argument("--hash", action="store_true", help="re-hash every recorded file (slower: reads them all)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bas import paths
    from bas.cli import load_config
    from bas.done import verify

    cfg = load_config(args)
    found = verify(cfg, rehash=args.hash)
    for line in found.differences + found.unrecorded:
        print(line)
    how = "sizes, SHA-256 of every file and scene" if args.hash else "sizes, SHA-256 where an mtime moved"
    root = paths.storage_root(cfg)
    if found.ok:
        print(f"{root}: {found.checked} recorded outputs as recorded ({how})")
        return 0
    print(f"{root}: {len(found.differences)} difference(s) among {found.checked} recorded outputs ({how}); "
          "`bas run` makes them again with what depends on them")
    return 1
