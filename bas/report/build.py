"""Build the comparison report: compute everything once, then write HTML, Markdown,
metrics.json, the plots (PNG + SVG) and CSV tables into the output directory.

Outputs are written atomically: `plots/` and `tables/` are each built in a temporary
sibling and renamed into place, then `metrics.json`, `summary.md` and last `report.html`
(the marker that the report is complete). Other files in the output directory are left alone.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from bas.config import ReportConfig
from bas.errors import DataError
from bas.io import atomic_write_bytes, atomic_dir, atomic_write_json, atomic_write_text
from bas.ratings.analysis import human_pareto_png, human_results
from bas.report import claims, pictures, plots, published, stats
from bas.report.data import (BREAKDOWN_METRICS, COMPARE_METRICS, MIFO_COLUMNS, SANDBOX_BANNER, TINY_BANNER,
                             X_METRIC, Y_METRIC, Comparison, PublishedView, ReportData)
from bas.report.html import render_html
from bas.report.markdown import render_markdown
from bas.report.results import MethodKinds, Results, load_results
from bas.schema import METRICS

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ReportOutputs:
    out_dir: Path
    html: Path
    markdown: Path
    metrics: Path
    plots_dir: Path
    tables_dir: Path


def build_report(results_dir: str | Path, out_dir: str | Path, cfg: ReportConfig,
                 scenes_dir: str | Path | None = None,
                 compare: str | Path | None = None) -> ReportOutputs:
    """Read `results_dir`, write the report into `out_dir`; `compare` is another results
    dir or a metrics.json (e.g. a DVC experiment's) shown side by side with deltas."""
    results = load_results(results_dir, scenes_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out_dir / "plots") as plots_tmp:
        data = collect(results, cfg, plots_tmp, str(results_dir))
        data.human = human_ratings(results.runs_dir.parent, data, plots_tmp)
    if compare is not None:
        data.comparison = compare_runs(data, compare)
    with atomic_dir(out_dir / "tables") as tables_tmp:
        write_tables(data, tables_tmp)
    outputs = ReportOutputs(out_dir, out_dir / "report.html", out_dir / "summary.md",
                            out_dir / "metrics.json", out_dir / "plots", out_dir / "tables")
    atomic_write_json(outputs.metrics, metrics_json(data.summary))
    atomic_write_text(outputs.markdown, render_markdown(data))
    atomic_write_text(outputs.html, render_html(data))
    log.info("report written to %s", outputs.html)
    return outputs


def human_ratings(root: Path, data: ReportData, plots_dir: Path) -> Optional[dict]:
    """The human rating study's results (`bas rate export` -> <root>/ratings.parquet), if run."""
    export = Path(root) / "ratings.parquet"
    if not export.exists():
        return None
    ratings = pd.read_parquet(export)
    if ratings.empty:
        return None
    human = human_results(ratings)
    png = human_pareto_png(human["table"])
    atomic_write_bytes(plots_dir / "human_pareto.png", png)
    data.plots["human_pareto"] = plots.Plot("human_pareto", png)
    return human


def collect(results: Results, cfg: ReportConfig, plots_dir: Path, results_label: str) -> ReportData:
    images = results.images
    methods = results.methods
    kinds = results.kinds
    colors = plots.method_colors(kinds, methods)
    summary = stats.method_summary(images, list(METRICS), cfg.bootstrap_samples, cfg.confidence,
                                   cfg.bootstrap_seed)
    means = summary.pivot(index="method", columns="metric", values="mean")
    # References (sandbox ground truth) are a ceiling and a floor, never on the front.
    candidates = [m for m in methods
                  if not kinds.is_reference(m) and (cfg.pareto_include_ablations or not kinds.is_ablation(m))]
    front = stats.pareto_front(
        {m: (means.at[m, X_METRIC], means.at[m, Y_METRIC]) for m in candidates},
        METRICS[X_METRIC].higher_is_better, METRICS[Y_METRIC].higher_is_better)

    compared = images[~images["method"].map(kinds.is_reference)]   # tests compare methods only
    made = {}
    made["pareto"] = plots.save(plots.pareto_plot(summary, front, X_METRIC, Y_METRIC, cfg.confidence,
                                                  colors), plots_dir, "pareto")
    made["published_user_study"] = plots.save(
        plots.published_user_study_plot(published.BAS_USER_STUDY), plots_dir, "published_bas_user_study")
    made["by_subset_size"] = plots.save(
        plots.breakdown_plot(images, "subset_size", BREAKDOWN_METRICS, colors,
                             "Number of concepts in the prompt"), plots_dir, "by_subset_size")
    made["by_template"] = plots.save(plots.template_plot(images, BREAKDOWN_METRICS, colors),
                                     plots_dir, "by_template")
    made["detection"] = plots.save(plots.detection_plot(summary, colors, cfg.confidence),
                                   plots_dir, "detection_rate")

    picture_rows, attention_rows = [], []
    for scene_id in pictures.choose_scenes(results, cfg):
        row, shown = pictures.picture_row(results, scene_id, methods, cfg, plots_dir)
        picture_rows.append(row)
        class_names = pictures.load_input_scene(results.scenes_dir, scene_id).class_names
        attention_rows.append(pictures.attention_row(results, scene_id, shown, methods, class_names,
                                                     plots_dir))

    profiles = results.profiles
    banner = None
    if "tiny" in profiles:
        banner = TINY_BANNER
    elif "sandbox" in profiles:
        banner = SANDBOX_BANNER
    notes = []
    if len(profiles) > 1:
        notes.append(f"Scores come from more than one model profile ({', '.join(profiles)}); "
                     "numbers from different profiles are not comparable.")
    overview = pd.DataFrame({
        "scenes": images.groupby("method")["scene_id"].nunique(),
        "images": images.groupby("method").size(),
        "concept rows": results.rows.groupby("method").size(),
    }).reindex(methods)

    return ReportData(
        results_dir=results_label, cfg=cfg, profiles=profiles, banner=banner, methods=methods, kinds=kinds,
        overview=overview, incomplete=results.incomplete, summary=summary, front=front, plots=made,
        by_subset={m: stats.breakdown(images, "subset_size", m) for m in BREAKDOWN_METRICS},
        by_template={m: stats.breakdown(images, "template_id", m) for m in BREAKDOWN_METRICS},
        by_scene={m: stats.breakdown(images, "scene_id", m) for m in BREAKDOWN_METRICS},
        detection_by_subset=stats.breakdown(images, "subset_size", "detected"),
        templates=images.groupby("template_id")["template"].first().to_dict(),
        mifo=mifo_table(summary, methods),
        kruskal=[stats.kruskal(compared, m) for m in cfg.test_metrics],
        tukey={m: stats.tukey_pairs(compared, m, cfg.confidence) for m in cfg.test_metrics},
        picture_rows=picture_rows, attention_rows=attention_rows,
        published_views=[published_view(t, summary, methods) for t in published.TABLES
                         if t.metric_of_column and t is not published.TL_VS_CUSTOM_DIFFUSION],
        tl_ours=tl_relative(images), notes=notes,
        claims=claims.evaluate_claims(images, cfg.bootstrap_samples, cfg.confidence, cfg.bootstrap_seed),
    )


def mifo_table(summary: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    means = summary.pivot(index="method", columns="metric", values="mean").reindex(methods)
    table = pd.DataFrame({label: means[metric] for label, metric in MIFO_COLUMNS.items()})
    # MIFO's published CS equals the product of its published means; give that form too.
    table["CS of means"] = table["SIM-C"] * table["SIM-D"] * (1.0 - table["NSIM-D"])
    return table


def published_view(table: published.PublishedTable, summary: pd.DataFrame,
                   methods: list[str]) -> PublishedView:
    means = summary.pivot(index="method", columns="metric", values="mean")
    matched, rows = {}, {}
    for label in table.rows:
        ours = published.match_method(label, methods)
        if ours is not None:
            matched[label] = ours
        rows[label] = [means.at[ours, table.metric_of_column[c]] if ours and c in table.metric_of_column
                       else np.nan for c in table.columns]
    return PublishedView(table, pd.DataFrame.from_dict(rows, orient="index", columns=list(table.columns)),
                         matched)


def tl_relative(images: pd.DataFrame) -> dict[str, Optional[float]]:
    """Our counterpart of TL's published gains over Custom Diffusion (None without both runs)."""
    method, baseline = published.TL_METHODS
    out = {}
    for column, metric in published.TL_VS_CUSTOM_DIFFUSION.metric_of_column.items():
        single = column.endswith("single")
        part = images[(images["subset_size"] == 1) if single else (images["subset_size"] >= 2)]
        ours = part.loc[part["method"] == method, metric].mean()
        base = part.loc[part["method"] == baseline, metric].mean()
        out[column] = stats.relative_change(ours, base)
    return out


def metrics_json(summary: pd.DataFrame) -> dict:
    """{method: {metric: mean, n_images: n}} for `dvc metrics show`; NaN means are left out."""
    out = {}
    for method in MethodKinds.of(summary).order(summary["method"]):
        rows = summary[summary["method"] == method]
        entry = {r.metric: round(float(r.mean), 6) for r in rows.itertuples() if np.isfinite(r.mean)}
        entry["n_images"] = int(rows.loc[rows["metric"] == "prompt_similarity", "n"].iloc[0])
        out[method] = entry
    return out


def other_means(other: str | Path) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Method means of another run: a results dir (computed as ours) or a metrics.json."""
    other = Path(other)
    if other.is_file():
        try:
            data = json.loads(other.read_text())
        except ValueError as err:
            raise DataError(f"--compare {other}: not a JSON metrics file: {err}") from None
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise DataError(f"--compare {other}: expected {{method: {{metric: mean}}}} as in metrics.json")
        return {m: {k: float(v) for k, v in d.items() if k in METRICS} for m, d in data.items()}, []
    results = load_results(other)
    means = results.images.groupby("method")[list(METRICS)].mean()  # same per-image means as ours
    return ({m: means.loc[m].to_dict() for m in results.methods}, results.profiles)


def compare_runs(data: ReportData, other: str | Path) -> Comparison:
    theirs, profiles = other_means(other)
    records = []
    for method in data.kinds.order(set(data.methods) | set(theirs)):
        for metric in COMPARE_METRICS:
            this = data.mean(method, metric) if method in data.methods else float("nan")
            that = theirs.get(method, {}).get(metric, float("nan"))
            delta = this - that
            better = ""
            if np.isfinite(delta) and abs(delta) > 1e-9:  # float noise is no change
                better = "yes" if (delta > 0) == METRICS[metric].higher_is_better else "no"
            records.append({"method": method, "metric": metric, "this": this, "other": that,
                            "delta": delta, "better": better})
    if profiles and profiles != data.profiles:
        data.notes.append(f"The comparison run's profile ({', '.join(profiles)}) differs from this run's "
                          f"({', '.join(data.profiles)}).")
    return Comparison(str(other), profiles, pd.DataFrame.from_records(records))


def write_tables(data: ReportData, tables_dir: Path) -> None:
    data.summary.to_csv(tables_dir / "method_means.csv", index=False, float_format="%.6g")
    data.mifo.to_csv(tables_dir / "mifo_table.csv", index_label="method", float_format="%.6g")
    pd.DataFrame([vars(k) | {"methods": "+".join(k.methods)} for k in data.kruskal]).to_csv(
        tables_dir / "kruskal_wallis.csv", index=False, float_format="%.6g")
    pd.concat(list(data.tukey.values()), ignore_index=True).to_csv(
        tables_dir / "tukey_hsd.csv", index=False, float_format="%.6g")
    for metric in BREAKDOWN_METRICS:
        data.by_subset[metric].to_csv(tables_dir / f"{metric}_by_subset_size.csv", float_format="%.6g")
        data.by_template[metric].to_csv(tables_dir / f"{metric}_by_template.csv", float_format="%.6g")
        data.by_scene[metric].to_csv(tables_dir / f"{metric}_by_scene.csv", float_format="%.6g")
    data.detection_by_subset.to_csv(tables_dir / "detected_by_subset_size.csv", float_format="%.6g")
    claims.claims_table(data.claims).to_csv(tables_dir / "claims.csv", index=False)
    if data.comparison is not None:
        data.comparison.table.to_csv(tables_dir / "comparison.csv", index=False, float_format="%.6g")
