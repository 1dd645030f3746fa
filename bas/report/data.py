"""What the report shows, computed once (`ReportData`), and the metric choices its views share.

`bas.report.build` fills it; the renderers (`html`, `markdown`) only read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pandas as pd

from bas.config import ReportConfig
from bas.report import claims, pictures, plots, published, stats
from bas.report.results import MethodKinds

X_METRIC = "prompt_similarity"  # BaS Fig. 5 (left): prompt similarity across ...
Y_METRIC = "identity_similarity"  # ... identity similarity up
MIFO_COLUMNS = {"SIM-C": "prompt_similarity", "SIM-D": "identity_similarity", "NSIM-D": "nsim_d",
                "CS": "cs"}
BREAKDOWN_METRICS = (Y_METRIC, X_METRIC)
COMPARE_METRICS = ("identity_similarity", "prompt_similarity", "nsim_d", "cs", "clip_i", "detected")
TINY_BANNER = ("Tiny profile: these numbers come from random-weight models and mean nothing. "
               "They show that the pipeline runs, not how the methods compare.")
SANDBOX_BANNER = ("Sandbox profile: small models bas trained on its procedural world (docs/SANDBOX.md), "
                  "with every method at a quarter of its protocol steps and four times its learning rates. "
                  "The numbers compare methods inside that world; they are not SD 2.1 numbers and are not "
                  "comparable with the published ones.")


@dataclass
class PublishedView:
    table: published.PublishedTable
    ours: pd.DataFrame  # same columns as the table, rows = paper labels; NaN where we have no match
    matched: dict[str, str]  # paper label -> our method


@dataclass
class Comparison:
    label: str
    profiles: list[str]
    table: pd.DataFrame  # method, metric, this, other, delta, better ("yes"/"no"/"")


@dataclass
class ReportData:
    results_dir: str
    cfg: ReportConfig
    profiles: list[str]
    banner: Optional[str]
    methods: list[str]
    kinds: MethodKinds      # what each method is to the comparison, read from its scores
    overview: pd.DataFrame  # per method: scenes, images, scored concept rows
    incomplete: list[str]
    summary: pd.DataFrame  # stats.method_summary over every metric
    front: list[str]
    plots: dict[str, plots.Plot]
    by_subset: dict[str, pd.DataFrame]
    by_template: dict[str, pd.DataFrame]
    by_scene: dict[str, pd.DataFrame]
    detection_by_subset: pd.DataFrame
    templates: dict[int, str]
    mifo: pd.DataFrame
    kruskal: list[stats.KruskalResult]
    tukey: dict[str, pd.DataFrame]
    picture_rows: list[pictures.PictureRow]
    attention_rows: list[pictures.AttentionRow]
    published_views: list[PublishedView]
    tl_ours: dict[str, Optional[float]]
    comparison: Optional[Comparison] = None
    notes: list[str] = field(default_factory=list)
    human: Optional[dict] = None  # bas.ratings.analysis.human_results of the rating study, if any
    claims: list[claims.ClaimResult] = field(default_factory=list)  # the papers' claims on these results

    def mean(self, method: str, metric: str) -> float:
        row = self.summary[(self.summary["method"] == method) & (self.summary["metric"] == metric)]
        return float(row["mean"].iloc[0]) if not row.empty else float("nan")
