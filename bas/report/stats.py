"""Statistics of the report: method means with bootstrap intervals, the Pareto front,
Kruskal-Wallis and Tukey HSD, bootstrap intervals of differences, and breakdowns.

Every function takes the per-image table of `bas.report.results.per_image` (one row per
image, a column per metric); NaN scores (an image none of whose concepts was detected has no
identity similarity) are dropped per metric, and the count kept says how many remained.
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

import numpy as np
import pandas as pd
from scipy import stats as sps

from bas.report.results import MethodKinds
from bas.schema import METRICS


def bootstrap_ci(values: np.ndarray, samples: int, confidence: float,
                 rng: np.random.Generator) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: resample the values with replacement."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    draws = rng.integers(0, values.size, size=(samples, values.size))  # (B, n)
    means = values[draws].mean(axis=1)  # (B,)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def bootstrap_difference_ci(a: np.ndarray, b: np.ndarray, samples: int, confidence: float,
                            rng: np.random.Generator) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a) - mean(b) for two independent samples: each is
    resampled with replacement on its own, `samples` times."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return float("nan"), float("nan")
    means_a = a[rng.integers(0, a.size, size=(samples, a.size))].mean(axis=1)  # (B,)
    means_b = b[rng.integers(0, b.size, size=(samples, b.size))].mean(axis=1)  # (B,)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means_a - means_b, [tail, 1.0 - tail])
    return float(low), float(high)


def seeded_rng(seed: int, *names: str) -> np.random.Generator:
    """One stream per name tuple (e.g. (method, metric)), independent of which other methods are present."""
    return np.random.default_rng([seed] + [zlib.crc32(n.encode()) for n in names])


def method_summary(images: pd.DataFrame, metrics: Iterable[str], samples: int,
                   confidence: float, seed: int) -> pd.DataFrame:
    """One row per (method, metric): mean over images, bootstrap CI, n images, std."""
    records = []
    kinds = MethodKinds.of(images)
    for method in kinds.order(images["method"]):
        own = images[images["method"] == method]
        for metric in metrics:
            values = own[metric].dropna().to_numpy(dtype=np.float64)
            low, high = bootstrap_ci(values, samples, confidence, seeded_rng(seed, method, metric))
            records.append({
                "method": method, "kind": kinds.kinds[method], "metric": metric,
                "ablation": kinds.is_ablation(method),
                "mean": float(values.mean()) if values.size else float("nan"),
                "ci_low": low, "ci_high": high,
                "std": float(values.std(ddof=1)) if values.size > 1 else float("nan"),
                "n": int(values.size),
            })
    return pd.DataFrame.from_records(records)


def pareto_front(points: Mapping[str, tuple[float, float]], x_higher_is_better: bool = True,
                 y_higher_is_better: bool = True) -> list[str]:
    """Names of the points no other point dominates (at least as good on both axes and
    strictly better on one), in the given directions. Points with a NaN are never on it."""
    sign_x = 1.0 if x_higher_is_better else -1.0
    sign_y = 1.0 if y_higher_is_better else -1.0
    valid = {name: (sign_x * x, sign_y * y) for name, (x, y) in points.items()
             if np.isfinite(x) and np.isfinite(y)}
    front = []
    for name, (x, y) in valid.items():
        dominated = any(ox >= x and oy >= y and (ox > x or oy > y)
                        for other, (ox, oy) in valid.items() if other != name)
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda n: valid[n][0])


@dataclass(frozen=True)
class KruskalResult:
    metric: str
    methods: tuple[str, ...]
    statistic: float  # H
    pvalue: float
    n_total: int
    note: str = ""  # why no test was possible, when statistic is NaN


def kruskal(images: pd.DataFrame, metric: str) -> KruskalResult:
    """Kruskal-Wallis H test across methods on the per-image scores of `metric`."""
    groups = _groups(images, metric, min_size=1)
    n_total = sum(len(v) for v in groups.values())
    if len(groups) < 2:
        return KruskalResult(metric, tuple(groups), float("nan"), float("nan"), n_total,
                             "needs scores from at least two methods")
    if len(np.unique(np.concatenate(list(groups.values())))) < 2:
        return KruskalResult(metric, tuple(groups), float("nan"), float("nan"), n_total,
                             "all values are identical")
    try:
        result = sps.kruskal(*groups.values())
    except ValueError as err:
        return KruskalResult(metric, tuple(groups), float("nan"), float("nan"), n_total, str(err))
    return KruskalResult(metric, tuple(groups), float(result.statistic), float(result.pvalue), n_total)


def tukey_pairs(images: pd.DataFrame, metric: str, confidence: float = 0.95) -> pd.DataFrame:
    """Tukey HSD over all method pairs: one row per pair with the mean difference
    (method_b - method_a), its simultaneous CI and p-value, ordered by p."""
    groups = _groups(images, metric, min_size=2)
    columns = ["metric", "method_a", "method_b", "mean_a", "mean_b", "difference",
               "ci_low", "ci_high", "pvalue"]
    if len(groups) < 2:
        return pd.DataFrame(columns=columns)
    names = list(groups)
    with np.errstate(divide="ignore", invalid="ignore"):  # zero spread within every group: NaN p
        result = sps.tukey_hsd(*groups.values())
        interval = result.confidence_interval(confidence_level=confidence)
    records = []
    for i, j in itertools.combinations(range(len(names)), 2):
        # statistic[i, j] is mean_i - mean_j; report b - a so a positive difference means b is higher.
        records.append({
            "metric": metric, "method_a": names[i], "method_b": names[j],
            "mean_a": float(np.mean(groups[names[i]])), "mean_b": float(np.mean(groups[names[j]])),
            "difference": float(-result.statistic[i, j]),
            "ci_low": float(-interval.high[i, j]), "ci_high": float(-interval.low[i, j]),
            "pvalue": float(result.pvalue[i, j]),
        })
    return pd.DataFrame.from_records(records, columns=columns).sort_values(
        ["pvalue", "method_a", "method_b"], kind="stable").reset_index(drop=True)


def breakdown(images: pd.DataFrame, by: str, metric: str) -> pd.DataFrame:
    """Mean of `metric` per (value of `by`) x method: rows = `by`, columns = methods."""
    table = images.pivot_table(index=by, columns="method", values=metric, aggfunc="mean",
                               dropna=False, observed=True)
    return table.reindex(columns=[m for m in MethodKinds.of(images).order(images["method"]) if m in table.columns])


def counts(images: pd.DataFrame, by: str) -> pd.DataFrame:
    return images.pivot_table(index=by, columns="method", values="path", aggfunc="count",
                              fill_value=0, observed=True)


def best_methods(summary: pd.DataFrame, metric: str, include_ablations: bool = False) -> set[str]:
    """Methods with the best mean of `metric` (direction from the registry); none when all tie."""
    rows = summary[(summary["metric"] == metric) & summary["mean"].notna()]
    if not include_ablations:
        rows = rows[~rows["ablation"]]
    if rows["mean"].nunique() < 2:  # no method stands out when all tie
        return set()
    best = rows["mean"].max() if METRICS[metric].higher_is_better else rows["mean"].min()
    return set(rows.loc[rows["mean"] == best, "method"])


def relative_change(ours: float, baseline: float) -> Optional[float]:
    """(ours - baseline) / |baseline| in percent, as TL reports its CLIP gains."""
    if not (np.isfinite(ours) and np.isfinite(baseline)) or baseline == 0:
        return None
    return 100.0 * (ours - baseline) / abs(baseline)


def _groups(images: pd.DataFrame, metric: str, min_size: int) -> dict[str, np.ndarray]:
    groups = {}
    for method in MethodKinds.of(images).order(images["method"]):
        values = images.loc[images["method"] == method, metric].dropna().to_numpy(dtype=np.float64)
        if values.size >= min_size:
            groups[method] = values
    return groups
