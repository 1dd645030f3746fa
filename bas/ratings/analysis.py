"""The human ratings, analysed as BaS appendix B.3 does: table 4, Kruskal-Wallis, Tukey HSD,
and the human Pareto plot (BaS figure 5, right).

Input: the ratings table `bas rate export` writes (`bas.ratings.store.RATINGS_COLUMNS`);
only its `task` ("prompt" | "identity"), `method` and `rating` (1-5) columns are used, plus
`rater` when present. Every rating of every image is one observation, as in BaS (three
raters per image).

    results = human_results(pd.read_parquet("data/ratings.parquet"))
    results["table"]     # table 4: per method, mean / variance / n of each task
    results["kruskal"]   # per task: H, p over all methods
    results["tukey"]     # per task and method pair: mean difference, p, 95% CI
    png = human_pareto_png(results["table"])
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

TASKS = ("identity", "prompt")  # table 4's column order
TASK_LABELS = {"identity": "Identity similarity", "prompt": "Prompt similarity"}


def _methods(ratings: pd.DataFrame, methods: Sequence[str] | None) -> list[str]:
    present = set(ratings["method"])
    return [m for m in methods if m in present] if methods is not None else sorted(present)


def means_table(ratings: pd.DataFrame, methods: Sequence[str] | None = None) -> pd.DataFrame:
    """BaS table 4: one row per method; `<task>_mean`, `<task>_variance` (sample variance,
    ddof=1; NaN with one rating) and `<task>_n` for identity, then prompt."""
    rows = []
    for method in _methods(ratings, methods):
        row = {"method": method}
        for task in TASKS:
            values = ratings.loc[(ratings["method"] == method) & (ratings["task"] == task), "rating"].to_numpy(float)
            row[f"{task}_mean"] = values.mean() if values.size else np.nan
            row[f"{task}_variance"] = values.var(ddof=1) if values.size > 1 else np.nan
            row[f"{task}_n"] = int(values.size)
        rows.append(row)
    columns = ["method"] + [f"{t}_{s}" for t in TASKS for s in ("mean", "variance", "n")]
    return pd.DataFrame(rows, columns=columns)


def _groups(ratings: pd.DataFrame, task: str, methods: list[str]) -> dict[str, np.ndarray]:
    """Each method's ratings in `task`, for methods with at least two (a variance to test)."""
    groups = {m: ratings.loc[(ratings["method"] == m) & (ratings["task"] == task), "rating"].to_numpy(float)
              for m in methods}
    return {m: g for m, g in groups.items() if g.size >= 2}


def kruskal_table(ratings: pd.DataFrame, methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Kruskal-Wallis H test (tie-corrected) across methods, per task; `note` says why a test
    could not run (fewer than two methods with two ratings, or every rating equal)."""
    rows = []
    for task in TASKS:
        groups = _groups(ratings, task, _methods(ratings, methods))
        row = {"task": task, "statistic": np.nan, "p_value": np.nan, "num_methods": len(groups),
               "num_ratings": int(sum(g.size for g in groups.values())), "note": ""}
        if len(groups) < 2:
            row["note"] = "needs two methods with at least two ratings each"
        elif np.unique(np.concatenate(list(groups.values()))).size < 2:
            row["note"] = "every rating is the same value"
        else:
            result = stats.kruskal(*groups.values())
            row["statistic"], row["p_value"] = float(result.statistic), float(result.pvalue)
        rows.append(row)
    return pd.DataFrame(rows)


def tukey_table(ratings: pd.DataFrame, methods: Sequence[str] | None = None,
                confidence: float = 0.95) -> pd.DataFrame:
    """Tukey's HSD over all method pairs, per task: `mean_difference` = mean(method_1) -
    mean(method_2), its family-wise p-value and confidence interval."""
    rows = []
    for task in TASKS:
        groups = _groups(ratings, task, _methods(ratings, methods))
        if len(groups) < 2 or np.unique(np.concatenate(list(groups.values()))).size < 2:
            continue
        names = list(groups)
        result = stats.tukey_hsd(*groups.values())
        ci = result.confidence_interval(confidence_level=confidence)
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                rows.append({"task": task, "method_1": names[i], "method_2": names[j],
                             "mean_difference": float(result.statistic[i, j]), "p_value": float(result.pvalue[i, j]),
                             "ci_low": float(ci.low[i, j]), "ci_high": float(ci.high[i, j])})
    return pd.DataFrame(rows, columns=["task", "method_1", "method_2", "mean_difference", "p_value",
                                       "ci_low", "ci_high"])


def table4(table: pd.DataFrame) -> pd.DataFrame:
    """Table 4 as BaS prints it: "mean ± variance" per task, two decimals."""
    out = pd.DataFrame({"Method": table["method"]})
    for task in TASKS:
        out[TASK_LABELS[task]] = [f"{m:.2f} ± {v:.2f}" if np.isfinite(m) and np.isfinite(v) else
                                  (f"{m:.2f}" if np.isfinite(m) else "–")
                                  for m, v in zip(table[f"{task}_mean"], table[f"{task}_variance"])]
    return out


def human_results(ratings: pd.DataFrame, methods: Sequence[str] | None = None) -> dict:
    """Everything the report shows about the human ratings.

    `methods` fixes the order (and selection) of methods; default: sorted names.
    Returns {"table": means_table, "table4": table4 (formatted strings), "kruskal":
    kruskal_table, "tukey": tukey_table, "num_ratings": {task: n}, "num_raters": int | None}.
    """
    missing = {"task", "method", "rating"} - set(ratings.columns)
    if missing:
        raise ValueError(f"ratings table lacks column(s) {', '.join(sorted(missing))}")
    bad = ~ratings["rating"].between(1, 5)
    if bad.any():
        raise ValueError(f"ratings table has ratings outside 1-5: {sorted(ratings.loc[bad, 'rating'].unique())[:5]}")
    table = means_table(ratings, methods)
    return {
        "table": table,
        "table4": table4(table),
        "kruskal": kruskal_table(ratings, methods),
        "tukey": tukey_table(ratings, methods),
        "num_ratings": {task: int((ratings["task"] == task).sum()) for task in TASKS},
        "num_raters": int(ratings["rater"].nunique()) if "rater" in ratings.columns else None,
    }


def pareto_front(table: pd.DataFrame) -> list[str]:
    """Methods no other method beats on both mean ratings (at least as high on both, higher on one)."""
    points = {r.method: (r.prompt_mean, r.identity_mean) for r in table.itertuples()
              if np.isfinite(r.prompt_mean) and np.isfinite(r.identity_mean)}
    front = [m for m, (x, y) in points.items()
             if not any(ox >= x and oy >= y and (ox > x or oy > y) for o, (ox, oy) in points.items() if o != m)]
    return sorted(front, key=lambda m: points[m][0])


def human_pareto_png(table: pd.DataFrame, title: str = "Human ratings: identity vs prompt (1-5)") -> bytes:
    """BaS figure 5 (right) from `human_results(...)["table"]`: each method at its mean
    ratings (x prompt, y identity), 95% normal-approximation CI bars, the Pareto front dashed."""
    # matplotlib: only when the figure is drawn; the tables and tests here need no plotting library
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no global figure state, Agg for PNG

    fig = Figure(figsize=(6.4, 5.0))
    ax = fig.subplots()
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, r in enumerate(table.itertuples()):
        if not (np.isfinite(r.prompt_mean) and np.isfinite(r.identity_mean)):
            continue
        err = [1.96 * np.sqrt(v / n) if n > 1 and np.isfinite(v) else 0.0
               for v, n in ((r.prompt_variance, r.prompt_n), (r.identity_variance, r.identity_n))]
        ax.errorbar([r.prompt_mean], [r.identity_mean], xerr=[err[0]], yerr=[err[1]], marker="o", markersize=9,
                    capsize=3, linestyle="none", color=colors[i % len(colors)], label=r.method)
        ax.annotate(r.method, (r.prompt_mean, r.identity_mean), xytext=(6, 6), textcoords="offset points",
                    fontsize=9)
    front = pareto_front(table)
    if front:
        by_method = table.set_index("method")
        ax.plot(by_method.loc[front, "prompt_mean"], by_method.loc[front, "identity_mean"], linestyle="--",
                color="#444444", linewidth=1.2, zorder=0, label="Pareto front")
    ax.set_xlabel("Prompt similarity rating, 1-5 (higher is better)")
    ax.set_ylabel("Identity similarity rating, 1-5 (higher is better)")
    ax.set_title(title + "\nmeans with 95% CI", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.margins(0.15)
    if len(table):
        ax.legend(fontsize=8, loc="best", framealpha=0.9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return buffer.getvalue()
