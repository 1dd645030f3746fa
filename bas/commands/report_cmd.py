"""`bas report`: the comparison report of a results directory (optionally against another run);
`--claims` prints the papers' claims and their verdicts instead."""

from __future__ import annotations

# The library is imported inside the command functions, so that `bas --help` and the other commands start fast.

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="write the comparison report (HTML, Markdown, plots, metrics.json)",
        description="Read every scores.parquet under a results directory and write report.html "
                    "(self-contained), summary.md, metrics.json, plots/ and tables/.")
    parser.add_argument("--results", metavar="DIR",
                        help="storage root holding runs/, scores/ and scenes/, or a runs directory; "
                             "default: the runs and scenes directories of params `paths`")
    parser.add_argument("--scenes", metavar="DIR",
                        help="scenes directory for the picture grid; default: <results>/scenes")
    parser.add_argument("--out", metavar="DIR", help="output directory; default: params paths.reports")
    parser.add_argument("--compare", metavar="OTHER",
                        help="another results directory, or a metrics.json (e.g. of a DVC experiment), "
                             "shown side by side with deltas")
    parser.add_argument("--claims", action="store_true",
                        help="print the papers' claims and whether each reproduces in the results "
                             "(the report's 'Papers' claims' table) and write nothing")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bas import paths
    from bas.cli import load_config
    from bas.report import build_report

    cfg = load_config(args)
    if args.results is None:  # this project's own runs and scenes, wherever params put them
        results, scenes = paths.storage_root(cfg), args.scenes or paths.scenes_dir(cfg)
    else:
        results, scenes = args.results, args.scenes
    if args.claims:
        from bas.report.claims import claims_of_results, format_claims

        verdicts = claims_of_results(results, cfg.report)
        print(format_claims(verdicts, cfg.report.confidence, cfg.report.bootstrap_samples), end="")
        return 0
    outputs = build_report(
        results_dir=results,
        out_dir=args.out or paths.reports_dir(cfg),
        cfg=cfg.report,
        scenes_dir=scenes,
        compare=args.compare,
    )
    print(outputs.html)
    return 0
