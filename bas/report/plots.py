"""The report's plots (matplotlib, Agg): saved as PNG and SVG, PNG bytes kept for embedding.

Axis directions come from the metric registry (`bas.schema.METRICS`); every axis
label says which way is better. Each method keeps one colour across all plots; ablations of
`bas` are drawn with open markers so they read apart from the competitors.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bas.io import atomic_write_bytes  # noqa: E402
from bas.report.published import PublishedTable  # noqa: E402
from bas.report.results import MethodKinds  # noqa: E402
from bas.schema import METRICS  # noqa: E402

# Same bytes for the same inputs (DVC sees an unchanged output as unchanged).
plt.rcParams["svg.hashsalt"] = "bas-report"
plt.rcParams["font.size"] = 10
_PNG_META = {"Software": None}
_SVG_META = {"Date": None, "Creator": None}
DPI = 120

ABLATION_MARKERS = ("D", "s", "^", "v", "P", "X", "*", "h")


@dataclass(frozen=True)
class Plot:
    name: str  # file stem under plots/
    png: bytes


def method_colors(kinds: MethodKinds, methods: Sequence[str]) -> dict[str, str]:
    """A colour per method: competitors take the tab10 cycle in order; each ablation shares
    the colour of `bas` (its parent) and is told apart by its marker."""
    palette = plt.get_cmap("tab10").colors
    ordered = kinds.order(methods)
    colors = {}
    main = [m for m in ordered if not kinds.is_ablation(m) and not kinds.is_reference(m)]
    for i, method in enumerate(main):
        colors[method] = matplotlib.colors.to_hex(palette[i % len(palette)])
    parent = colors.get("bas", "#555555")
    for method in ordered:
        if kinds.is_ablation(method):
            colors[method] = parent
        elif kinds.is_reference(method):   # ground truth black, its floor grey
            colors[method] = "#000000" if method == "ground_truth" else "#888888"
    return colors


def axis_label(metric: str) -> str:
    spec = METRICS[metric]
    return f"{spec.label} ({'higher' if spec.higher_is_better else 'lower'} is better)"


def save(fig: plt.Figure, plots_dir: Path, name: str, svg: bool = True) -> Plot:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata=_PNG_META)
    png = buffer.getvalue()
    atomic_write_bytes(plots_dir / f"{name}.png", png)
    if svg:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata=_SVG_META)
        atomic_write_bytes(plots_dir / f"{name}.svg", buffer.getvalue())
    plt.close(fig)
    return Plot(name, png)


def pareto_plot(summary: pd.DataFrame, front: Sequence[str], x_metric: str, y_metric: str,
                confidence: float, colors: dict[str, str]) -> plt.Figure:
    """BaS Fig. 5 (left): one point per method at its mean, bootstrap CI bars, front dashed."""
    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    means = summary.pivot(index="method", columns="metric", values="mean")
    low = summary.pivot(index="method", columns="metric", values="ci_low")
    high = summary.pivot(index="method", columns="metric", values="ci_high")
    ablation_index = 0
    kinds = MethodKinds.of(summary)
    for method in kinds.order(means.index):
        x, y = means.at[method, x_metric], means.at[method, y_metric]
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        xerr = [[x - low.at[method, x_metric]], [high.at[method, x_metric] - x]]
        yerr = [[y - low.at[method, y_metric]], [high.at[method, y_metric] - y]]
        if kinds.is_ablation(method):
            marker = ABLATION_MARKERS[ablation_index % len(ABLATION_MARKERS)]
            ablation_index += 1
            style = dict(marker=marker, markersize=8, markerfacecolor="white", markeredgewidth=1.6,
                         label=f"{method} (ablation)")
        elif kinds.is_reference(method):
            style = dict(marker="*", markersize=12, label=f"{method} (reference)")
        else:
            style = dict(marker="o", markersize=9, label=method)
        ax.errorbar([x], [y], xerr=xerr, yerr=yerr, color=colors[method], ecolor=colors[method],
                    elinewidth=1.0, capsize=3, linestyle="none", **style)
        ax.annotate(method, (x, y), xytext=(6, 6), textcoords="offset points", fontsize=9,
                    color="#222222")
    front_points = sorted((means.at[m, x_metric], means.at[m, y_metric]) for m in front)
    if len(front_points) >= 1:
        xs, ys = zip(*front_points)
        ax.plot(xs, ys, linestyle="--", color="#444444", linewidth=1.2, zorder=0,
                label="Pareto front")
    ax.set_xlabel(axis_label(x_metric))
    ax.set_ylabel(axis_label(y_metric))
    ax.set_title(f"Identity vs prompt similarity, means with {confidence:.0%} bootstrap CI")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best", framealpha=0.9)
    return fig


def published_user_study_plot(table: PublishedTable) -> plt.Figure:
    """BaS Fig. 5 (right) redrawn from its Table 4: published human ratings, not ours."""
    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    for label, (identity, prompt) in table.rows.items():
        ax.scatter([prompt], [identity], marker="s", s=60, facecolors="none",
                   edgecolors="#7a4a00", linewidths=1.5)
        ax.annotate(label, (prompt, identity), xytext=(6, 4), textcoords="offset points", fontsize=9)
    ax.set_xlabel("Prompt similarity rating, 1-5 (higher is better)")
    ax.set_ylabel("Identity similarity rating, 1-5 (higher is better)")
    ax.set_title("PUBLISHED: BaS user study (BaS Table 4)", color="#7a4a00")
    ax.grid(True, alpha=0.3)
    ax.margins(0.15)
    return fig


def breakdown_plot(images: pd.DataFrame, by: str, metrics: Sequence[str], colors: dict[str, str],
                   xlabel: str) -> plt.Figure:
    """Mean per-image score against `by` (e.g. number of concepts), one line per method."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.0 * len(metrics), 3.8), squeeze=False)
    kinds = MethodKinds.of(images)
    for ax, metric in zip(axes[0], metrics):
        table = images.groupby(["method", by])[metric].mean().unstack(by)
        for method in kinds.order(table.index):
            series = table.loc[method].dropna()
            ax.plot(series.index, series.to_numpy(), color=colors[method],
                    marker="o" if not kinds.is_ablation(method) else "D",
                    markerfacecolor="white" if kinds.is_ablation(method) else colors[method],
                    linestyle="--" if kinds.is_ablation(method) else "-", label=method)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(axis_label(metric))
        ax.set_xticks(sorted(images[by].unique()))
        ax.grid(True, alpha=0.3)
    if axes[0][-1].get_legend_handles_labels()[0]:
        axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def template_plot(images: pd.DataFrame, metrics: Sequence[str], colors: dict[str, str]) -> plt.Figure:
    """Dot plot: one row per template, one marker per method, a panel per metric."""
    templates = images.groupby("template_id")["template"].first().sort_index()
    labels = [t.replace("a photo of {tokens} ", "… ") for t in templates]
    height = max(2.6, 0.38 * len(templates) + 1.2)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.4 * len(metrics), height), squeeze=False,
                             sharey=True)
    rows = np.arange(len(templates))
    kinds = MethodKinds.of(images)
    for ax, metric in zip(axes[0], metrics):
        table = images.groupby(["method", "template_id"])[metric].mean().unstack("template_id")
        table = table.reindex(columns=templates.index)
        for method in kinds.order(table.index):
            ax.scatter(table.loc[method].to_numpy(), rows, color=colors[method], s=28,
                       marker="D" if kinds.is_ablation(method) else "o",
                       facecolors="white" if kinds.is_ablation(method) else colors[method], label=method)
        ax.set_xlabel(axis_label(metric))
        ax.grid(True, axis="x", alpha=0.3)
    axes[0][0].set_yticks(rows)
    axes[0][0].set_yticklabels(labels, fontsize=8)
    axes[0][0].invert_yaxis()
    if axes[0][-1].get_legend_handles_labels()[0]:
        axes[0][-1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def detection_plot(summary: pd.DataFrame, colors: dict[str, str], confidence: float) -> plt.Figure:
    """Detection rate per method with its bootstrap CI."""
    rows = summary[summary["metric"] == "detected"].set_index("method")
    kinds = MethodKinds.of(summary)
    methods = kinds.order(rows.index)
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(methods) + 1.4))
    ys = np.arange(len(methods))
    means = rows.loc[methods, "mean"].to_numpy()
    err = np.vstack([means - rows.loc[methods, "ci_low"].to_numpy(),
                     rows.loc[methods, "ci_high"].to_numpy() - means])
    ax.barh(ys, means, xerr=err, color=[colors[m] for m in methods], capsize=3,
            hatch=None, edgecolor="#333333", linewidth=0.6)
    for y, method in zip(ys, methods):
        if kinds.is_ablation(method):
            ax.patches[y].set_hatch("//")
            ax.patches[y].set_facecolor("white")
            ax.patches[y].set_edgecolor(colors[method])
    ax.set_yticks(ys)
    ax.set_yticklabels(methods)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.0)
    ax.set_xlabel(f"{axis_label('detected')}; {confidence:.0%} bootstrap CI")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
