"""`summary.md`: the report's headline numbers in Markdown, plots linked from `plots/`."""

from __future__ import annotations

import numpy as np

from bas.report import published
from bas.report.data import COMPARE_METRICS, MIFO_COLUMNS, ReportData
from bas.report.results import MethodKinds
from bas.schema import METRICS


def _fmt(value, digits: int = 3) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _p(p: float) -> str:
    if not np.isfinite(p):
        return "—"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def _signed(value: float) -> str:
    if not np.isfinite(value):
        return "—"
    text = f"{value:+.3f}"
    return text[1:] if float(text) == 0.0 else text


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _name(kinds: MethodKinds, method: str) -> str:
    kind = kinds.label(method)
    return f"*{method}* ({kind})" if kind else method


def render_markdown(data: ReportData) -> str:
    cfg = data.cfg
    out = ["# Comparison report", ""]
    if data.banner:
        out += [f"> **{data.banner}**", ""]
    out += [f"Profile: **{', '.join(data.profiles)}**. Results: `{data.results_dir}`. "
            f"{len(data.methods)} methods, {int(data.overview['images'].sum())} images. "
            "Full report with every section: `report.html`.", ""]
    out += [f"- {n}" for n in data.notes]
    if data.incomplete:
        out += [f"- Left out (no scores yet): {', '.join(data.incomplete)}"]
    out += ["", "## Identity vs prompt similarity (BaS Fig. 5)", "",
            "![identity vs prompt similarity](plots/pareto.png)", "",
            f"Pareto front (both higher is better; ablations and references excluded): **{', '.join(data.front) or 'none'}**.",
            ""]
    metrics = list(METRICS)
    header = ["method", "images"] + [f"{METRICS[m].label} {'↑' if METRICS[m].higher_is_better else '↓'}"
                                     for m in metrics]
    rows = []
    for method in data.methods:
        own = data.summary[data.summary["method"] == method].set_index("metric")
        rows.append([_name(data.kinds, method), str(int(own.at["prompt_similarity", "n"]))] +
                    [f"{_fmt(own.at[m, 'mean'])} [{_fmt(own.at[m, 'ci_low'])}, {_fmt(own.at[m, 'ci_high'])}]"
                     for m in metrics])
    out += ["## Means per method", "",
            f"Mean over images, {cfg.confidence:.0%} bootstrap CI in brackets "
            f"({cfg.bootstrap_samples} resamples).", "", _table(header, rows), ""]
    columns = list(MIFO_COLUMNS) + ["CS of means"]
    rows = [[_name(data.kinds, m)] + [_fmt(v) for v in data.mifo.loc[m, columns]] for m in data.mifo.index]
    out += ["## MIFO metrics", "", _table(["method"] + columns, rows), ""]
    out += ["## Significance", ""]
    rows = [[METRICS[k.metric].label, str(len(k.methods)), _fmt(k.statistic, 2), _p(k.pvalue)]
            for k in data.kruskal]
    out += ["Kruskal-Wallis across methods (per-image scores):", "",
            _table(["metric", "methods", "H", "p"], rows), ""]
    for metric, pairs in data.tukey.items():
        rows = [[r.method_a, r.method_b, _signed(r.difference), _p(r.pvalue),
                 "yes" if r.pvalue < cfg.alpha else "no"] for r in pairs.itertuples()]
        out += [f"Tukey HSD, {METRICS[metric].label}:", "",
                _table(["A", "B", "B − A", "p", f"p < {cfg.alpha:g}"], rows) if rows else "not computable", ""]
    rows = [[f"{r.claim.paper} {r.claim.source}: {r.claim.title}", r.claim.tested,
             f"**{r.verdict}** ({r.reason})", "<br>".join(r.numbers)] for r in data.claims]
    out += ["## Papers' claims", "",
            f"Significant: the {cfg.confidence:.0%} bootstrap interval of the difference of means "
            f"({cfg.bootstrap_samples} resamples) excludes 0; Δ = first − second method; references left out.", "",
            _table(["claim", "tested", "verdict", "numbers"], rows), ""]
    out += ["## Published figures (not ours)", ""]
    for t in published.TABLES:
        rows = [[label] + [published.formatted(t, v) for v in values] for label, values in t.rows.items()]
        out += [f"**PUBLISHED — {t.title}.** Source: {t.source}.", "",
                _table(["method"] + list(t.columns), rows), ""]
    if data.comparison is not None:
        c = data.comparison
        header = ["method"] + [f"{METRICS[m].label} (this / other / Δ)" for m in COMPARE_METRICS]
        rows = []
        for method in dict.fromkeys(c.table["method"]):
            own = c.table[c.table["method"] == method].set_index("metric")
            rows.append([_name(data.kinds, method)] + [
                f"{_fmt(own.at[m, 'this'])} / {_fmt(own.at[m, 'other'])} / {_signed(own.at[m, 'delta'])}"
                for m in COMPARE_METRICS])
        out += ["## Comparison with another run", "", f"Other: `{c.label}`; Δ = this − other.", "",
                _table(header, rows), ""]
    if data.banner:
        out += [f"> **{data.banner}**", ""]
    return "\n".join(out)
