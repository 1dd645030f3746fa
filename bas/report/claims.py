"""The papers' central claims, each a function of the per-image results that says whether the
claim reproduces in them.

A claim is a registry entry (`CLAIMS`): the paper, where it says it, its words, what is tested
here, and the function that tests it on the per-image table of `bas.report.results.per_image`.
Its verdict is one of:

- `reproduced`: every comparison of the claim goes the claimed way, significantly;
- `direction only`: every comparison goes the claimed way, at least one not significantly;
- `not reproduced`: a comparison goes the other way (or ties); the reason says which and
  whether it is significant the other way;
- `not measured`: a method the claim needs has no results (or fewer than two scored images).

One rule for every pairwise comparison: the per-image values of two methods (NaNs dropped;
images are the independent samples, as in the rest of the report) give the difference of
means a - b and its percentile bootstrap interval at `report.confidence`, each method's
images resampled with replacement on their own `report.bootstrap_samples` times; the stream
is seeded from `report.bootstrap_seed` and the comparison's names, so a verdict does not
depend on which other methods are present. A comparison is significant when the interval
excludes 0: a two-sided test at level 1 - confidence.

References (the sandbox's measuring runs) never take part: a claim compares methods only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from bas.config import ReportConfig
from bas.report import stats
from bas.report.results import MethodKinds, load_results
from bas.schema import METRICS

REPRODUCED = "reproduced"
DIRECTION_ONLY = "direction only"
NOT_REPRODUCED = "not reproduced"
NOT_MEASURED = "not measured"
VERDICTS = (REPRODUCED, DIRECTION_ONLY, NOT_REPRODUCED, NOT_MEASURED)

MIN_IMAGES = 2  # scored images a method needs on a metric for its side of a comparison
MULTI_CONCEPT = "prompts with 2+ concepts"  # the part of the grid S&E's claim is about

LABELS = {"prompt_similarity": "prompt similarity", "identity_similarity": "identity similarity",
          "nsim_d": "NSIM-D", "detected": "detection rate"}

# The Pareto claim's axes, as the report's Fig. 5 draws them (bas.report.data X_METRIC, Y_METRIC).
PARETO_AXES = ("prompt_similarity", "identity_similarity")


@dataclass(frozen=True)
class Bootstrap:
    """How intervals are drawn: the report's `bootstrap_samples`, `confidence`, `bootstrap_seed`."""

    samples: int
    confidence: float
    seed: int


@dataclass(frozen=True)
class Comparison:
    """mean(a) against mean(b) on one metric; the claim is `mean_a <claimed> mean_b`."""

    metric: str
    method_a: str
    method_b: str
    claimed: str  # ">" or "<"
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    difference: float  # mean_a - mean_b
    ci_low: float  # bootstrap interval of the difference
    ci_high: float
    subset: str = ""  # "" = every image, else the part of the grid compared (MULTI_CONCEPT)

    @property
    def measured(self) -> bool:
        return self.n_a >= MIN_IMAGES and self.n_b >= MIN_IMAGES

    @property
    def holds(self) -> bool:
        """The means go the claimed way (a tie does not)."""
        return self.difference > 0 if self.claimed == ">" else self.difference < 0

    @property
    def significant(self) -> bool:
        """The interval excludes 0, in whichever direction."""
        return bool(self.ci_low > 0 or self.ci_high < 0)

    @property
    def verdict(self) -> str:
        if not self.measured:
            return NOT_MEASURED
        if not self.holds:
            return NOT_REPRODUCED
        return REPRODUCED if self.significant else DIRECTION_ONLY

    def name(self) -> str:
        where = f" ({self.subset})" if self.subset else ""
        return f"{LABELS.get(self.metric, self.metric)}{where}: {self.method_a} {self.claimed} {self.method_b}"

    def text(self) -> str:
        """The numbers: both means, the difference with its interval, the image counts."""
        where = f" ({self.subset})" if self.subset else ""
        return (f"{LABELS.get(self.metric, self.metric)}{where}: {self.method_a} {_fmt(self.mean_a)} vs "
                f"{self.method_b} {_fmt(self.mean_b)}, Δ {_signed(self.difference)} "
                f"[{_signed(self.ci_low)}, {_signed(self.ci_high)}], n {self.n_a}/{self.n_b}")


@dataclass(frozen=True)
class ClaimResult:
    claim: "Claim"
    verdict: str
    reason: str  # one line: why this verdict
    comparisons: tuple[Comparison, ...] = ()
    numbers: tuple[str, ...] = ()  # short lines with the numbers behind the verdict
    front: tuple[str, ...] = ()  # the Pareto claim only: the front of the compared methods


@dataclass(frozen=True)
class Claim:
    key: str
    paper: str  # BaS, MIFO, S&E
    source: str  # section / figure / table of the paper
    title: str  # the claim in a few words
    statement: str  # the paper's words
    tested: str  # what is tested here
    check: Callable[["Claim", pd.DataFrame, Bootstrap], ClaimResult] = field(repr=False, compare=False)

    def evaluate(self, images: pd.DataFrame, bootstrap: Bootstrap) -> ClaimResult:
        return self.check(self, images, bootstrap)


# --------------------------------------------------------------------------- evaluation


def compare(images: pd.DataFrame, metric: str, a: str, claimed: str, b: str, bootstrap: Bootstrap,
            subset: str = "") -> Comparison:
    """The comparison `a <claimed> b` on `metric` over the per-image values of `images`."""
    values_a = _values(images, a, metric, subset)
    values_b = _values(images, b, metric, subset)
    mean_a = float(values_a.mean()) if values_a.size else float("nan")
    mean_b = float(values_b.mean()) if values_b.size else float("nan")
    low = high = float("nan")
    if values_a.size >= MIN_IMAGES and values_b.size >= MIN_IMAGES:
        rng = stats.seeded_rng(bootstrap.seed, "claim", metric, a, b, subset)
        low, high = stats.bootstrap_difference_ci(values_a, values_b, bootstrap.samples, bootstrap.confidence, rng)
    return Comparison(metric, a, b, claimed, int(values_a.size), int(values_b.size), mean_a, mean_b,
                      mean_a - mean_b, low, high, subset)


def pairwise(claim: Claim, images: pd.DataFrame, bootstrap: Bootstrap,
             specs: tuple[tuple[str, str, str, str], ...], subset: str = "") -> ClaimResult:
    """A claim made of comparisons (metric, a, ">" or "<", b), all of which must hold."""
    images = compared_images(images)
    present = set(images["method"])
    needed = list(dict.fromkeys(m for _, a, _, b in specs for m in (a, b)))
    missing = [m for m in needed if m not in present]
    if missing:
        return ClaimResult(claim, NOT_MEASURED, f"no results of {', '.join(missing)}",
                           numbers=(f"missing: {', '.join(missing)}",))
    comparisons = tuple(compare(images, metric, a, claimed, b, bootstrap, subset)
                        for metric, a, claimed, b in specs)
    numbers = tuple(c.text() for c in comparisons)
    unmeasured = [c for c in comparisons if not c.measured]
    if unmeasured:
        reason = "; ".join(f"fewer than {MIN_IMAGES} scored images of "
                           f"{' and '.join(m for m, n in ((c.method_a, c.n_a), (c.method_b, c.n_b)) if n < MIN_IMAGES)}"
                           f" on {c.name()}" for c in unmeasured)
        return ClaimResult(claim, NOT_MEASURED, reason, comparisons, numbers)
    failed = [c for c in comparisons if not c.holds]
    if failed:
        return ClaimResult(claim, NOT_REPRODUCED, "; ".join(_against(c) for c in failed), comparisons, numbers)
    weak = [c for c in comparisons if not c.significant]
    if weak:
        return ClaimResult(claim, DIRECTION_ONLY, "holds; not significant: "
                           + "; ".join(c.name() for c in weak), comparisons, numbers)
    return ClaimResult(claim, REPRODUCED, "holds; significant on every comparison", comparisons, numbers)


def pareto(claim: Claim, images: pd.DataFrame, bootstrap: Bootstrap, method: str = "bas") -> ClaimResult:
    """`method` on the Pareto front of mean (prompt, identity similarity) among the compared methods.

    The front is the report's (`stats.pareto_front` over method means; ablations and
    references left out). Significant when `method` is significantly ahead of every other
    compared method on at least one axis, so that none could dominate it within the noise.
    Off the front, the reason names the methods dominating it and those of them that are
    significantly better on both axes."""
    images = compared_images(images)
    kinds = MethodKinds.of(images) if len(images) else MethodKinds({})
    competitors = [m for m in kinds.order(images["method"]) if kinds.is_competitor(m)]
    x, y = PARETO_AXES
    if method not in competitors:
        return ClaimResult(claim, NOT_MEASURED, f"no results of {method}", numbers=(f"missing: {method}",))
    if len(competitors) < 2:
        return ClaimResult(claim, NOT_MEASURED, f"no other compared method than {method}")
    means = {m: (_mean(images, m, x), _mean(images, m, y)) for m in competitors}
    counts = {axis: int(_values(images, method, axis).size) for axis in PARETO_AXES}
    if min(counts.values()) < MIN_IMAGES:
        short = [LABELS[a] for a, n in counts.items() if n < MIN_IMAGES]
        return ClaimResult(claim, NOT_MEASURED, f"fewer than {MIN_IMAGES} scored images of {method} on "
                           f"{' and '.join(short)}")
    front = tuple(stats.pareto_front(means, METRICS[x].higher_is_better, METRICS[y].higher_is_better))
    others = [m for m in competitors if m != method and all(np.isfinite(means[m]))]
    ahead = {m: tuple(compare(images, axis, method, ">" if METRICS[axis].higher_is_better else "<", m, bootstrap)
                      for axis in PARETO_AXES) for m in others}
    comparisons = tuple(c for pair in ahead.values() for c in pair)
    numbers = [f"front: {', '.join(front) or 'none'}",
               f"{method}: {LABELS[x]} {_fmt(means[method][0])}, {LABELS[y]} {_fmt(means[method][1])} "
               f"(n {counts[x]}/{counts[y]})"]
    if method in front:
        numbers += [f"vs {m}: " + _best(pair).text() for m, pair in ahead.items()]
        unbeaten = [m for m, pair in ahead.items() if not any(c.holds and c.significant for c in pair)]
        if unbeaten:
            return ClaimResult(claim, DIRECTION_ONLY, f"on the front of means, not significantly ahead of "
                               f"{', '.join(unbeaten)} on either axis", comparisons, tuple(numbers), front)
        return ClaimResult(claim, REPRODUCED, "on the front, significantly ahead of every other compared "
                           "method on at least one axis", comparisons, tuple(numbers), front)
    dominating = [m for m in others if _dominates(means[m], means[method], x, y)]
    numbers += [f"{m}: " + "; ".join(c.text() for c in ahead[m]) for m in dominating]
    significant = [m for m in dominating if all(c.significant and not c.holds for c in ahead[m])]
    reason = f"off the front, dominated by {', '.join(dominating)}"
    reason += (f"; significantly better on both axes: {', '.join(significant)}" if significant
               else "; none significantly better on both axes")
    return ClaimResult(claim, NOT_REPRODUCED, reason, comparisons, tuple(numbers), front)


def compared_images(images: pd.DataFrame) -> pd.DataFrame:
    """The per-image rows of methods, references left out."""
    if images.empty:
        return images
    kinds = MethodKinds.of(images)
    return images[~images["method"].map(kinds.is_reference)]


def evaluate_claims(images: pd.DataFrame, samples: int, confidence: float, seed: int) -> list[ClaimResult]:
    """Every claim of `CLAIMS` on a per-image table (`bas.report.results.per_image`)."""
    bootstrap = Bootstrap(samples, confidence, seed)
    return [claim.evaluate(images, bootstrap) for claim in CLAIMS]


def claims_of_results(results_dir: str | Path, cfg: ReportConfig) -> list[ClaimResult]:
    """Every claim on the scored runs of a results directory (as `bas report --results` reads it),
    with the report's bootstrap settings (`cfg` = the config's `report` section)."""
    images = load_results(results_dir).images
    return evaluate_claims(images, cfg.bootstrap_samples, cfg.confidence, cfg.bootstrap_seed)


def claims_table(results: list[ClaimResult]) -> pd.DataFrame:
    """One row per claim: what it is, its verdict and why, the numbers (for tables/claims.csv)."""
    return pd.DataFrame.from_records([{
        "claim": r.claim.key, "paper": r.claim.paper, "source": r.claim.source, "title": r.claim.title,
        "tested": r.claim.tested, "verdict": r.verdict, "reason": r.reason, "numbers": "; ".join(r.numbers),
    } for r in results], columns=["claim", "paper", "source", "title", "tested", "verdict", "reason", "numbers"])


def format_claims(results: list[ClaimResult], confidence: float, samples: int) -> str:
    """The verdicts as plain text, one block per claim (what `bas report --claims` prints)."""
    out = [f"Papers' claims: a comparison is significant when the {confidence:.0%} bootstrap interval of "
           f"the difference of means ({samples} resamples) excludes 0.", ""]
    for r in results:
        c = r.claim
        out += [f"{c.paper} {c.source}: {c.title}", f"  tested: {c.tested}",
                f"  verdict: {r.verdict} ({r.reason})"]
        out += [f"  {line}" for line in r.numbers]
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- helpers


def _values(images: pd.DataFrame, method: str, metric: str, subset: str = "") -> np.ndarray:
    rows = images[images["method"] == method]
    if subset == MULTI_CONCEPT:
        rows = rows[rows["subset_size"] >= 2]
    elif subset:
        raise ValueError(f"unknown subset {subset!r}")
    return rows[metric].dropna().to_numpy(dtype=np.float64)


def _mean(images: pd.DataFrame, method: str, metric: str) -> float:
    values = _values(images, method, metric)
    return float(values.mean()) if values.size else float("nan")


def _dominates(p: tuple[float, float], q: tuple[float, float], x: str, y: str) -> bool:
    """p at least as good as q on both axes and better on one, in the metrics' directions."""
    sx = 1.0 if METRICS[x].higher_is_better else -1.0
    sy = 1.0 if METRICS[y].higher_is_better else -1.0
    px, py, qx, qy = sx * p[0], sy * p[1], sx * q[0], sy * q[1]
    return px >= qx and py >= qy and (px > qx or py > qy)


def _margin(c: Comparison) -> float:
    """How far the interval lies on the claimed side of 0 (positive = significant that way)."""
    if not np.isfinite(c.ci_low):
        return float("-inf")
    return c.ci_low if c.claimed == ">" else -c.ci_high


def _best(pair: tuple[Comparison, ...]) -> Comparison:
    return max(pair, key=_margin)


def _against(c: Comparison) -> str:
    if c.difference == 0:
        return f"{c.name()} fails: equal means"
    return f"{c.name()} fails: the other way, " + ("significant" if c.significant else "not significant")


def _fmt(value: float) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.3f}"


def _signed(value: float) -> str:
    if value is None or not np.isfinite(value):
        return "—"
    text = f"{value:+.3f}"
    return text[1:] if float(text) == 0.0 else text


# --------------------------------------------------------------------------- the claims


def _tradeoff(claim: Claim, images: pd.DataFrame, bootstrap: Bootstrap) -> ClaimResult:
    return pairwise(claim, images, bootstrap, (("prompt_similarity", "ti_m", ">", "db_m"),
                                               ("identity_similarity", "ti_m", "<", "db_m")))


def _bas_on_front(claim: Claim, images: pd.DataFrame, bootstrap: Bootstrap) -> ClaimResult:
    return pareto(claim, images, bootstrap, "bas")


def _attention_loss_identity(claim: Claim, images: pd.DataFrame, bootstrap: Bootstrap) -> ClaimResult:
    return pairwise(claim, images, bootstrap, (("identity_similarity", "bas", ">", "bas_no_attn_loss"),))


def _attention_loss_entanglement(claim: Claim, images: pd.DataFrame, bootstrap: Bootstrap) -> ClaimResult:
    return pairwise(claim, images, bootstrap, (("nsim_d", "bas", "<", "bas_no_attn_loss"),))


def _mifo_identity(claim: Claim, images: pd.DataFrame, bootstrap: Bootstrap) -> ClaimResult:
    return pairwise(claim, images, bootstrap, (("identity_similarity", "mifo", ">", "bas"),
                                               ("identity_similarity", "mifo", ">", "ti_m"),
                                               ("identity_similarity", "mifo", ">", "db_m")))


def _mifo_leakage(claim: Claim, images: pd.DataFrame, bootstrap: Bootstrap) -> ClaimResult:
    return pairwise(claim, images, bootstrap, (("nsim_d", "mifo", "<", "bas"),))


def _sne_neglect_and_mixing(claim: Claim, images: pd.DataFrame, bootstrap: Bootstrap) -> ClaimResult:
    return pairwise(claim, images, bootstrap, (("detected", "sne", ">", "bas"), ("nsim_d", "sne", "<", "bas")),
                    subset=MULTI_CONCEPT)


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "bas_tradeoff", "BaS", "Sec. 4, Fig. 5 (left)", "TI-m follows the prompt, DB-m keeps the identities",
        "\"DB-m preserves the identities, while compromising the prompt similarity. TI-m and CD-m follow "
        "the prompt, while sacrificing identity similarity.\"",
        "prompt similarity: ti_m > db_m; identity similarity: ti_m < db_m", _tradeoff),
    Claim(
        "bas_pareto", "BaS", "Sec. 4, Fig. 5 (left)", "BaS lies on the Pareto front",
        "\"Our method lies on the Pareto front by balancing between the two extremes.\"",
        "bas on the Pareto front of mean (prompt, identity similarity), ablations and references left "
        "out; significant: bas significantly ahead of each other compared method on an axis", _bas_on_front),
    Claim(
        "bas_attn_loss_identity", "BaS", "Sec. 4 (Ablation study), Fig. 5 (left)",
        "the cross-attention loss raises identity similarity",
        "\"Removing the cross-attention loss yields a degradation of identity similarities, because the "
        "model does not learn to disentangle the concepts.\"",
        "identity similarity: bas > bas_no_attn_loss", _attention_loss_identity),
    Claim(
        "bas_attn_loss_entanglement", "BaS", "Sec. 4 (Ablation study), Fig. 7",
        "without the cross-attention loss the concepts entangle",
        "\"Removing the cross-attention loss causes the model to entangle between the concepts\"; Fig. 7: "
        "\"Without the cross-attention loss, the model tends to entangle the concepts or replicate one of "
        "them.\" (shown in pictures, not measured in the paper)",
        "NSIM-D (a generated concept's similarity to the scene's other concepts): bas < bas_no_attn_loss",
        _attention_loss_entanglement),
    Claim(
        "mifo_identity", "MIFO", "Sec. 4.2 (Quantitative comparison), Tab. 1",
        "MIFO has the highest identity similarity (SIM-D)",
        "\"Our method achieves the highest level of instance consistency (SIM-D) [...] Although BaS "
        "demonstrates comparable performance on NSIM-D, our approach consistently outperforms it on "
        "SIM-D\" (Tab. 1 SIM-D: MIFO .7918, BaS .7781, DB-m .7685, TI-m .7525)",
        "identity similarity: mifo > bas, mifo > ti_m, mifo > db_m", _mifo_identity),
    Claim(
        "mifo_leakage", "MIFO", "Sec. 4.2 (Qualitative comparison), Fig. 6",
        "MIFO leaks less between concepts than BaS",
        "\"BaS struggles with semantic leakage\" (Fig. 6). MIFO claims no NSIM-D win: its Tab. 1 has "
        "MIFO .7258 against BaS .7253 (\"comparable\"), TI-m .7094 and DB-m .7220 lower still",
        "NSIM-D: mifo < bas", _mifo_leakage),
    Claim(
        "sne_neglect_mixing", "S&E", "Abstract, Sec. 1",
        "separate + enhance: fewer neglected and fewer mixed concepts",
        "\"pinpointing issues related to low attention activation scores and mask overlaps [...] the "
        "Separate loss and the Enhance loss, that reduce object mask overlaps and maximize attention "
        "scores\". S&E compares text-to-image models without its losses, none of which runs here; sne "
        "shares bas's phase-1 tokens, so bas is the baseline",
        f"on {MULTI_CONCEPT}: detection rate: sne > bas; NSIM-D: sne < bas", _sne_neglect_and_mixing),
)


BY_KEY: dict[str, Claim] = {c.key: c for c in CLAIMS}
