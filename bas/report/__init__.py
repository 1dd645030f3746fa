"""The comparison report: statistics, Pareto front, plots, HTML / Markdown / metrics.json.

`build_report(results_dir, out_dir, cfg.report, scenes_dir=None, compare=None)` reads every
`scores.parquet` under a results directory and writes `report.html` (self-contained),
`summary.md`, `metrics.json`, `plots/` (PNG + SVG) and `tables/` (CSV) into `out_dir`.
"""

from bas.report.build import ReportOutputs, build_report

__all__ = ["ReportOutputs", "build_report"]
