import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import studentized_range

from bas.report import stats
from bas.report.results import load_results, per_image
from bas.schema import SCORE_COLUMNS, frame

from report_fixtures import CENTRES


def images_table(groups: dict[str, list[float]], metric: str = "prompt_similarity") -> pd.DataFrame:
    rows = [{"method": m, "kind": "method", "path": f"{m}-{i}.png", metric: v} for m, vs in groups.items() for i, v in enumerate(vs)]
    return pd.DataFrame(rows)


def score_row(path: str, concept: int, identity: float, detected: bool, prompt: float) -> dict:
    return {"method": "bas", "scene_id": "s", "template_id": 0, "template": "t", "subset": "0+1",
            "subset_size": 2, "seed_index": 0, "seed": 1, "prompt": "p", "prompt_classes": "p",
            "sampler": "ddim", "path": path, "kind": "method", "profile": "tiny", "concept_index": concept,
            "class_name": "dog", "prompt_similarity": prompt, "clip_i": 0.5, "detected": detected,
            "detected_area": 0.1, "identity_similarity": identity, "identity_similarity_fallback": 0.4,
            "nsim_d": 0.2, "cs": 0.1}


def test_per_image_averages_the_concepts_of_an_image_skipping_nan():
    rows = frame([score_row("a.png", 0, 0.6, True, 0.30), score_row("a.png", 1, float("nan"), False, 0.30),
                  score_row("b.png", 0, 0.2, True, 0.10), score_row("b.png", 1, 0.4, True, 0.10)], SCORE_COLUMNS)
    images = per_image(rows).set_index("path")
    assert len(images) == 2
    assert images.at["a.png", "identity_similarity"] == pytest.approx(0.6)  # NaN of concept 1 skipped
    assert images.at["a.png", "detected"] == pytest.approx(0.5)
    assert images.at["b.png", "identity_similarity"] == pytest.approx(0.3)
    assert images.at["a.png", "n_concepts_scored"] == 2


def test_kruskal_wallis_matches_the_hand_computed_h_and_p():
    # Ranks 1..9, no ties: R = 6, 15, 24; H = 12/(9*10) * (36 + 225 + 576)/3 - 3*10 = 7.2.
    # With 3 groups the chi-square has 2 degrees of freedom, whose survival function is exp(-H/2).
    images = images_table({"a": [0.1, 0.2, 0.3], "b": [0.4, 0.5, 0.6], "c": [0.7, 0.8, 0.9]})
    result = stats.kruskal(images, "prompt_similarity")
    assert result.statistic == pytest.approx(7.2)
    assert result.pvalue == pytest.approx(math.exp(-3.6))
    assert result.n_total == 9


def test_kruskal_wallis_says_why_when_it_cannot_test():
    single = stats.kruskal(images_table({"a": [0.1, 0.2]}), "prompt_similarity")
    assert math.isnan(single.pvalue) and "two methods" in single.note
    identical = stats.kruskal(images_table({"a": [0.5, 0.5], "b": [0.5, 0.5]}), "prompt_similarity")
    assert math.isnan(identical.pvalue) and "identical" in identical.note


def test_tukey_pairs_order_sign_and_p_from_the_studentized_range():
    images = images_table({"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0], "c": [7.0, 8.0, 9.0]})
    pairs = stats.tukey_pairs(images, "prompt_similarity")
    assert (pairs.iloc[0]["method_a"], pairs.iloc[0]["method_b"]) == ("a", "c")  # largest gap first
    by_pair = pairs.set_index(["method_a", "method_b"])
    assert by_pair.at[("a", "c"), "difference"] == pytest.approx(6.0)  # b - a orientation
    assert by_pair.at[("a", "b"), "difference"] == pytest.approx(3.0)
    # Pooled within-group variance is 1, n = 3 a group: q = |diff| / sqrt(1/3), df = 9 - 3.
    for (a, b), diff in {("a", "c"): 6.0, ("a", "b"): 3.0, ("b", "c"): 3.0}.items():
        q = diff / math.sqrt(1.0 / 3.0)
        assert by_pair.at[(a, b), "pvalue"] == pytest.approx(studentized_range.sf(q, 3, 6), rel=1e-3)
        assert by_pair.at[(a, b), "ci_low"] < diff < by_pair.at[(a, b), "ci_high"]
    assert by_pair.at[("a", "c"), "pvalue"] < by_pair.at[("a", "b"), "pvalue"]


def test_bootstrap_interval_hand_cases():
    rng = np.random.default_rng(0)
    assert stats.bootstrap_ci(np.full(7, 0.4), 200, 0.95, rng) == pytest.approx((0.4, 0.4))
    # Mean of 2 draws from {0, 1}: 0 w.p. 1/4, 0.5 w.p. 1/2, 1 w.p. 1/4 -> 2.5% and 97.5% points 0 and 1.
    assert stats.bootstrap_ci(np.array([0.0, 1.0]), 4000, 0.95, rng) == pytest.approx((0.0, 1.0))
    low, high = stats.bootstrap_ci(np.array([0.0, 1.0]), 4000, 0.40, rng)
    assert (low, high) == pytest.approx((0.5, 0.5))
    assert all(math.isnan(v) for v in stats.bootstrap_ci(np.array([]), 10, 0.95, rng))


def test_tukey_with_no_spread_gives_nan_not_an_error():
    pairs = stats.tukey_pairs(images_table({"a": [0.5, 0.5], "b": [0.5, 0.5]}), "prompt_similarity")
    assert len(pairs) == 1 and math.isnan(pairs.at[0, "pvalue"])
    assert stats.tukey_pairs(images_table({"a": [0.5, 0.6]}), "prompt_similarity").empty


def test_pareto_front_respects_directions():
    points = {"a": (0.3, 0.5), "b": (0.2, 0.8), "c": (0.25, 0.45), "d": (0.28, 0.7), "nan": (float("nan"), 1.0)}
    assert stats.pareto_front(points) == ["b", "d", "a"]
    # Lower-is-better on x: the smallest x wins; c is then beaten only by b (0.2 < 0.25, 0.8 > 0.45).
    assert stats.pareto_front(points, x_higher_is_better=False) == ["b"]
    # A tie on both axes dominates neither point.
    assert stats.pareto_front({"p": (1.0, 1.0), "q": (1.0, 1.0)}) == ["p", "q"]


def test_method_summary_of_the_synthetic_run(synthetic_results):
    images = load_results(synthetic_results).images
    summary = stats.method_summary(images, ["prompt_similarity", "identity_similarity", "detected"],
                                   samples=200, confidence=0.95, seed=0).set_index(["method", "metric"])
    for method, (prompt, identity) in CENTRES.items():
        assert summary.at[(method, "prompt_similarity"), "mean"] == pytest.approx(prompt)
        assert summary.at[(method, "identity_similarity"), "mean"] == pytest.approx(identity)
        row = summary.loc[(method, "prompt_similarity")]
        assert row["ci_low"] <= row["mean"] <= row["ci_high"]
    # cd_m misses concept 0. Per-image detected shares, scene 1 subsets {0},{1},{0,1}: 0, 1, 1/2;
    # scene 2 subsets of {0,1,2}: 0, 1, 1, 1/2, 1/2, 1, 2/3; each 4 times (2 templates x 2 seeds):
    # (1.5 + 14/3) / 10 = 37/60.
    assert summary.at[("cd_m", "detected"), "mean"] == pytest.approx(37 / 60)
    # Images whose only concept is 0 have no identity score: 2 scenes x 4 of 40 images dropped.
    assert summary.at[("cd_m", "identity_similarity"), "n"] == 32
    assert summary.at[("bas", "identity_similarity"), "n"] == 40
    again = stats.method_summary(images, ["prompt_similarity"], samples=200, confidence=0.95, seed=0)
    again = again.set_index(["method", "metric"])
    for key in again.index:  # same seed, same intervals, whichever other metrics are computed
        assert again.at[key, "ci_low"] == summary.at[key, "ci_low"]
        assert again.at[key, "ci_high"] == summary.at[key, "ci_high"]


def test_breakdowns_by_template_and_subset_size(synthetic_results):
    images = load_results(synthetic_results).images
    by_template = stats.breakdown(images, "template_id", "prompt_similarity")
    assert by_template.at[0, "ti_m"] == pytest.approx(0.305)  # template 0 is shifted up by 0.005
    assert by_template.at[1, "ti_m"] == pytest.approx(0.295)
    assert list(by_template.columns)[-1] == "bas_no_union"  # ablations last
    by_size = stats.breakdown(images, "subset_size", "detected")
    assert by_size.at[1, "cd_m"] == pytest.approx(3 / 5)  # {0} missed of {0},{1} | {0},{1},{2}
    assert by_size.at[3, "cd_m"] == pytest.approx(2 / 3)
    assert by_size.at[1, "bas"] == pytest.approx(1.0)
