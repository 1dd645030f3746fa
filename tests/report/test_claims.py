"""The papers' claims (bas/report/claims.py) on constructed per-image tables with known answers.

Each method's values are its centre plus offsets that cancel in the mean (a symmetric spread),
so every mean is its centre and whether a gap is significant is set by the gap and the spread:
a gap of 0.2 with a spread of 0.01 always is, a gap of 0.002 with a spread of 0.3 never is.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bas import cli
from bas.report import build_report, claims, stats
from bas.report.claims import (BY_KEY, CLAIMS, DIRECTION_ONLY, MULTI_CONCEPT, NOT_MEASURED, NOT_REPRODUCED,
                               REPRODUCED, Bootstrap, evaluate_claims)
from tests import params_defaults

from report_fixtures import write_results

ROOT = Path(__file__).resolve().parents[2]
BOOT = Bootstrap(samples=400, confidence=0.95, seed=0)
METRICS = ("prompt_similarity", "identity_similarity", "nsim_d", "detected")
KINDS = {"bas": "method", "bas_no_attn_loss": "ablation", "bas_no_union_sampling": "ablation",
         "ti_m": "baseline", "db_m": "baseline", "cd_m": "baseline", "mifo": "successor", "sne": "successor",
         "tl_hard": "successor", "ground_truth": "reference", "other_identity": "reference"}

# What each pairwise claim compares: (metric, a, claimed, b), and the part of the grid.
SPECS = {
    "bas_tradeoff": ((("prompt_similarity", "ti_m", ">", "db_m"), ("identity_similarity", "ti_m", "<", "db_m")), ""),
    "bas_attn_loss_identity": ((("identity_similarity", "bas", ">", "bas_no_attn_loss"),), ""),
    "bas_attn_loss_entanglement": ((("nsim_d", "bas", "<", "bas_no_attn_loss"),), ""),
    "mifo_identity": ((("identity_similarity", "mifo", ">", "bas"), ("identity_similarity", "mifo", ">", "ti_m"),
                       ("identity_similarity", "mifo", ">", "db_m")), ""),
    "mifo_leakage": ((("nsim_d", "mifo", "<", "bas"),), ""),
    "sne_neglect_mixing": ((("detected", "sne", ">", "bas"), ("nsim_d", "sne", "<", "bas")), MULTI_CONCEPT),
}


def table(centres: dict[str, dict[str, float]], n: int = 20, spread: float = 0.01,
          subset_size: int = 2) -> pd.DataFrame:
    """Per-image rows: `n` images a method, each metric its centre (0.5 when not given) +/- spread."""
    offsets = spread * np.linspace(-1.0, 1.0, n)
    rows = []
    for method, own in centres.items():
        for i in range(n):
            rows.append({"method": method, "kind": KINDS[method], "path": f"{method}/{subset_size}/{i}.png",
                         "scene_id": "s", "subset_size": subset_size,
                         **{m: own.get(m, 0.5) + offsets[i] for m in METRICS}})
    return pd.DataFrame(rows)


def scenario(key: str, gap: float, spread: float, flip_first: bool = False) -> pd.DataFrame:
    """Results for a pairwise claim: every comparison the claimed way by `gap`; with
    `flip_first` its first comparison the other way by `gap` (the others unchanged)."""
    specs, _ = SPECS[key]
    centres: dict[str, dict[str, float]] = {}
    for metric, a, claimed, _b in specs:  # a's side first, so a method shared by comparisons agrees
        sign = 1.0 if claimed == ">" else -1.0
        centres.setdefault(a, {})[metric] = 0.5 + sign * gap / 2
    for i, (metric, a, claimed, b) in enumerate(specs):
        sign = 1.0 if claimed == ">" else -1.0
        beyond = flip_first and i == 0
        centres.setdefault(b, {})[metric] = 0.5 + sign * (1.5 * gap if beyond else -gap / 2)
    centres["ground_truth"] = {m: 1.0 for m in METRICS}  # a reference: never compared
    return table(centres, spread=spread)


def verdict(key: str, images: pd.DataFrame) -> claims.ClaimResult:
    return BY_KEY[key].evaluate(images, BOOT)


def test_every_claim_is_specified_cites_its_paper_and_has_a_unique_key():
    assert [c.key for c in CLAIMS] == ["bas_tradeoff", "bas_pareto", "bas_attn_loss_identity",
                                       "bas_attn_loss_entanglement", "mifo_identity", "mifo_leakage",
                                       "sne_neglect_mixing"]
    assert set(SPECS) == {c.key for c in CLAIMS} - {"bas_pareto"}
    for c in CLAIMS:
        assert c.paper in ("BaS", "MIFO", "S&E") and c.source and c.statement and c.tested and c.title
        assert any(word in c.source for word in ("Sec.", "Fig.", "Tab.", "Abstract"))


@pytest.mark.parametrize("key", sorted(SPECS))
def test_pairwise_claim_reproduced_when_every_comparison_holds_significantly(key):
    result = verdict(key, scenario(key, gap=0.2, spread=0.01))
    specs, subset = SPECS[key]
    assert result.verdict == REPRODUCED, result.reason
    assert [(c.metric, c.method_a, c.claimed, c.method_b, c.subset) for c in result.comparisons] == \
        [spec + (subset,) for spec in specs]
    for c in result.comparisons:
        assert c.n_a == c.n_b == 20
        assert c.difference == pytest.approx(0.2 if c.claimed == ">" else -0.2)
        assert c.ci_low <= c.difference <= c.ci_high and c.significant
    assert len(result.numbers) == len(specs) and "Δ" in result.numbers[0] and "n 20/20" in result.numbers[0]


@pytest.mark.parametrize("key", sorted(SPECS))
def test_pairwise_claim_direction_only_when_a_comparison_is_not_significant(key):
    result = verdict(key, scenario(key, gap=0.002, spread=0.3))
    assert result.verdict == DIRECTION_ONLY, result.reason
    assert result.reason.startswith("holds; not significant: ")
    assert all(c.holds and not c.significant for c in result.comparisons)


@pytest.mark.parametrize("key", sorted(SPECS))
def test_pairwise_claim_not_reproduced_says_whether_the_other_way_is_significant(key):
    significant = verdict(key, scenario(key, gap=0.2, spread=0.01, flip_first=True))
    assert significant.verdict == NOT_REPRODUCED
    first = significant.comparisons[0]
    assert significant.reason == f"{first.name()} fails: the other way, significant"
    assert not first.holds and first.significant
    assert all(c.holds for c in significant.comparisons[1:])  # only the flipped one is named
    weak = verdict(key, scenario(key, gap=0.002, spread=0.3, flip_first=True))
    assert weak.verdict == NOT_REPRODUCED
    assert weak.reason.startswith(f"{weak.comparisons[0].name()} fails: the other way,")
    assert weak.reason.endswith(", not significant")


@pytest.mark.parametrize("key", sorted(SPECS))
def test_pairwise_claim_not_measured_without_a_needed_method_or_enough_scored_images(key):
    images = scenario(key, gap=0.2, spread=0.01)
    specs, _ = SPECS[key]
    needed = specs[0][3]
    result = verdict(key, images[images["method"] != needed])
    assert result.verdict == NOT_MEASURED
    assert result.reason == f"no results of {needed}" and result.comparisons == ()
    metric = specs[0][0]
    one_scored = images.copy()
    rows = one_scored.index[one_scored["method"] == needed]
    one_scored.loc[rows[1:], metric] = np.nan  # NaNs are dropped: one scored image is left
    result = verdict(key, one_scored)
    assert result.verdict == NOT_MEASURED and result.reason.startswith(f"fewer than 2 scored images of {needed}")


def test_a_tie_is_not_reproduced():
    images = table({"bas": {"nsim_d": 0.4}, "mifo": {"nsim_d": 0.4}})
    result = verdict("mifo_leakage", images)
    assert result.verdict == NOT_REPRODUCED and result.reason == "NSIM-D: mifo < bas fails: equal means"


def test_a_reference_is_never_compared():
    # The reference beats every method: with it or without it, the verdicts are the same.
    images = scenario("mifo_identity", gap=0.2, spread=0.01)
    without = images[images["method"] != "ground_truth"]
    assert [r.verdict for r in evaluate_claims(images, 100, 0.95, 0)] == \
        [r.verdict for r in evaluate_claims(without, 100, 0.95, 0)]


def test_sne_claim_compares_only_prompts_of_two_or_more_concepts():
    multi = scenario("sne_neglect_mixing", gap=0.2, spread=0.01)
    # One-concept prompts where sne neglects and mixes everything: not part of S&E's claim.
    single = table({"sne": {"detected": 0.0, "nsim_d": 0.99}, "bas": {"detected": 1.0, "nsim_d": 0.1}},
                   n=40, subset_size=1)
    result = verdict("sne_neglect_mixing", pd.concat([multi, single], ignore_index=True))
    assert result.verdict == REPRODUCED
    assert all(c.n_a == 20 and c.subset == MULTI_CONCEPT for c in result.comparisons)
    only_single = verdict("sne_neglect_mixing", single)
    assert only_single.verdict == NOT_MEASURED and "fewer than 2 scored images" in only_single.reason


# The Pareto claim: (prompt, identity) centres; bas's front is db_m, bas, ti_m as in BaS Fig. 5.
FRONT = {"ti_m": (0.30, 0.50), "db_m": (0.20, 0.80), "cd_m": (0.25, 0.45), "bas": (0.28, 0.70)}


def pareto_table(centres: dict[str, tuple[float, float]], spread: float = 0.01) -> pd.DataFrame:
    return table({m: {"prompt_similarity": x, "identity_similarity": y} for m, (x, y) in centres.items()},
                 spread=spread)


def test_pareto_reproduced_ignoring_ablations_and_references():
    # Both would dominate bas; an ablation and a reference are off the front.
    centres = dict(FRONT, bas_no_attn_loss=(0.35, 0.75), ground_truth=(0.9, 0.9))
    result = verdict("bas_pareto", pareto_table(centres))
    assert result.verdict == REPRODUCED, result.reason
    assert result.front == ("db_m", "bas", "ti_m")
    assert result.numbers[0] == "front: db_m, bas, ti_m"
    assert {c.method_b for c in result.comparisons} == {"ti_m", "db_m", "cd_m"}
    # The front is the report's: stats.pareto_front over the compared methods' means.
    assert list(result.front) == stats.pareto_front(FRONT)


def test_pareto_direction_only_when_a_method_is_not_significantly_behind_on_either_axis():
    centres = dict(FRONT, ti_m=(0.281, 0.699))  # a hair ahead on prompt, a hair behind on identity
    result = verdict("bas_pareto", pareto_table(centres, spread=0.3))
    assert result.verdict == DIRECTION_ONLY
    assert "bas" in result.front and "ti_m" in result.reason.split("ahead of ")[1]


def test_pareto_not_reproduced_names_the_dominating_method_and_the_significance():
    significant = verdict("bas_pareto", pareto_table(dict(FRONT, db_m=(0.30, 0.80))))
    assert significant.verdict == NOT_REPRODUCED and "bas" not in significant.front
    assert significant.reason == ("off the front, dominated by db_m; significantly better on both axes: db_m")
    weak = verdict("bas_pareto", pareto_table(dict(FRONT, db_m=(0.281, 0.701)), spread=0.3))
    assert weak.verdict == NOT_REPRODUCED
    assert weak.reason.startswith("off the front, dominated by")
    assert weak.reason.endswith("none significantly better on both axes")


def test_pareto_not_measured():
    without_bas = verdict("bas_pareto", pareto_table({m: p for m, p in FRONT.items() if m != "bas"}))
    assert without_bas.verdict == NOT_MEASURED and without_bas.reason == "no results of bas"
    alone = verdict("bas_pareto", pareto_table({"bas": FRONT["bas"], "bas_no_attn_loss": (0.3, 0.9),
                                                "ground_truth": (0.9, 0.9)}))
    assert alone.verdict == NOT_MEASURED and alone.reason == "no other compared method than bas"
    images = pareto_table(FRONT)
    images.loc[images["method"] == "bas", "identity_similarity"] = np.nan  # bas never detected
    undetected = verdict("bas_pareto", images)
    assert undetected.verdict == NOT_MEASURED and "identity similarity" in undetected.reason


def test_verdicts_are_deterministic_and_a_comparison_ignores_the_other_methods():
    images = scenario("mifo_identity", gap=0.002, spread=0.3)
    first = evaluate_claims(images, 200, 0.95, 3)
    again = evaluate_claims(images, 200, 0.95, 3)
    assert first == again
    more = pd.concat([images, table({"tl_hard": {}, "sne": {}})], ignore_index=True)
    by_name = {(c.metric, c.method_a, c.method_b): c for r in evaluate_claims(more, 200, 0.95, 3)
               for c in r.comparisons}
    for c in BY_KEY["mifo_identity"].evaluate(images, Bootstrap(200, 0.95, 3)).comparisons:
        assert by_name[(c.metric, c.method_a, c.method_b)] == c


def test_bootstrap_difference_interval():
    rng = stats.seeded_rng(0, "test")
    assert stats.bootstrap_difference_ci(np.full(5, 0.7), np.full(7, 0.2), 100, 0.95, rng) == \
        pytest.approx((0.5, 0.5))
    a, b = np.linspace(0.0, 1.0, 50), np.linspace(0.0, 1.0, 60)
    low, high = stats.bootstrap_difference_ci(a, b, 2000, 0.95, stats.seeded_rng(0, "test"))
    se = np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert low < 0 < high and (high - low) == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_report_and_cli_show_the_claims(tmp_path, capsys):
    # The report fixtures' run: ti_m, db_m, cd_m, bas and the ablation bas_no_union.
    results = write_results(tmp_path / "results")
    outputs = build_report(results, tmp_path / "out", params_defaults.report(bootstrap_samples=100,
                                                                             picture_scene_count=0))
    html = outputs.html.read_text()
    assert '<section id="claims">' in html and "Papers&#x27; claims" in html
    assert "TI-m follows the prompt, DB-m keeps the identities" in html
    assert "no results of bas_no_attn_loss" in html and "The papers' words" in html
    markdown = outputs.markdown.read_text()
    assert "## Papers' claims" in markdown and "**not measured** (no results of mifo)" in markdown
    csv = pd.read_csv(outputs.tables_dir / "claims.csv").set_index("claim")
    assert csv.at["bas_tradeoff", "verdict"] == REPRODUCED and csv.at["bas_pareto", "verdict"] == REPRODUCED
    assert (csv.loc[["bas_attn_loss_identity", "mifo_identity", "sne_neglect_mixing"], "verdict"] == NOT_MEASURED).all()
    capsys.readouterr()
    code = cli.main(["--params", str(ROOT / "params.yaml"), "-S", "report.bootstrap_samples=100", "report",
                     "--results", str(results), "--claims", "--out", str(tmp_path / "not-written")])
    assert code == 0
    out = capsys.readouterr().out
    assert "BaS Sec. 4, Fig. 5 (left): BaS lies on the Pareto front" in out
    assert "  verdict: reproduced (on the front" in out and "  front: db_m, bas, ti_m" in out
    assert "  verdict: not measured (no results of sne)" in out
    assert not (tmp_path / "not-written").exists()
