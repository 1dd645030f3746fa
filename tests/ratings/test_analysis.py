"""Analysis of a synthetic ratings table against values computed by hand."""

import io
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bas.ratings.analysis import human_pareto_png, human_results, pareto_front


def _table(spec: dict[str, dict[str, list[int]]]) -> pd.DataFrame:
    rows = [{"rater": f"r{k % 3:03d}", "task": task, "method": method, "rating": v}
            for task, by_method in spec.items() for method, values in by_method.items()
            for k, v in enumerate(values)]
    return pd.DataFrame(rows)


# identity: A = [1, 2], B = [3, 4], C = [5, 5];  prompt: A = [1, 2], B = [4, 5], C unrated.
RATINGS = _table({"identity": {"A": [1, 2], "B": [3, 4], "C": [5, 5]},
                  "prompt": {"A": [1, 2], "B": [4, 5]}})


def test_means_and_variances_in_table4_layout():
    results = human_results(RATINGS)
    table = results["table"].set_index("method")
    # Means; sample variances (ddof=1): [1, 2] -> ((-.5)^2 + .5^2) / 1 = 0.5, [5, 5] -> 0.
    assert table.loc["A", ["identity_mean", "identity_variance", "identity_n"]].tolist() == [1.5, 0.5, 2]
    assert table.loc["B", ["identity_mean", "identity_variance"]].tolist() == [3.5, 0.5]
    assert table.loc["C", ["identity_mean", "identity_variance"]].tolist() == [5.0, 0.0]
    assert table.loc["B", ["prompt_mean", "prompt_variance", "prompt_n"]].tolist() == [4.5, 0.5, 2]
    assert np.isnan(table.loc["C", "prompt_mean"]) and table.loc["C", "prompt_n"] == 0
    assert list(results["table"].columns[1:4]) == ["identity_mean", "identity_variance", "identity_n"]
    t4 = results["table4"].set_index("Method")
    assert list(t4.columns) == ["Identity similarity", "Prompt similarity"]  # BaS table 4 order
    assert t4.loc["A", "Identity similarity"] == "1.50 ± 0.50"
    assert t4.loc["C", "Identity similarity"] == "5.00 ± 0.00"
    assert t4.loc["C", "Prompt similarity"] == "–"
    assert results["num_ratings"] == {"identity": 6, "prompt": 4}
    assert results["num_raters"] == 2


def test_kruskal_wallis_matches_hand_computation():
    kruskal = human_results(RATINGS)["kruskal"].set_index("task")
    # identity: ranks A {1, 2}, B {3, 4}, C {5.5, 5.5}; N = 6.
    # H = 12 / (6 * 7) * (3^2/2 + 7^2/2 + 11^2/2) - 3 * 7 = 32/7; one tie of 2 values:
    # correction 1 - (2^3 - 2) / (6^3 - 6) = 34/35, H = (32/7) / (34/35) = 80/17.
    # Chi-square with 2 df: p = exp(-H / 2).
    h = 80 / 17
    assert kruskal.loc["identity", "statistic"] == pytest.approx(h, rel=1e-12)
    assert kruskal.loc["identity", "p_value"] == pytest.approx(math.exp(-h / 2), rel=1e-9)
    assert kruskal.loc["identity", "num_methods"] == 3
    # prompt: only A and B have ratings; ranks {1, 2} and {3, 4}, no ties:
    # H = 12 / (4 * 5) * (3^2/2 + 7^2/2) - 3 * 5 = 2.4; 1 df: p = erfc(sqrt(H / 2)).
    assert kruskal.loc["prompt", "statistic"] == pytest.approx(2.4, rel=1e-12)
    assert kruskal.loc["prompt", "p_value"] == pytest.approx(math.erfc(math.sqrt(1.2)), rel=1e-9)
    assert kruskal.loc["prompt", "num_methods"] == 2


def test_tukey_hsd_matches_hand_computation():
    tukey = human_results(RATINGS)["tukey"]
    prompt = tukey[tukey.task == "prompt"].iloc[0]
    # Two groups: Tukey's HSD is the pooled two-sample t test. A = [1, 2], B = [4, 5]:
    # difference -3, pooled variance 0.5, SE = sqrt(0.5 * (1/2 + 1/2)), t^2 = 9 / 0.5 = 18,
    # 2 df, where P(|T| > t) = 1 - t / sqrt(2 + t^2) = 1 - sqrt(18 / 20).
    assert (prompt.method_1, prompt.method_2) == ("A", "B")
    assert prompt.mean_difference == pytest.approx(-3.0)
    assert prompt.p_value == pytest.approx(1 - math.sqrt(0.9), rel=1e-4)
    # 95% CI: -3 -/+ t* SE with t*^2 = 2 * 0.95^2 / (1 - 0.95^2) (2 df), SE = sqrt(0.5).
    half = math.sqrt(2 * 0.95**2 / (1 - 0.95**2)) * math.sqrt(0.5)
    assert (prompt.ci_low, prompt.ci_high) == (pytest.approx(-3 - half, rel=1e-4), pytest.approx(-3 + half, rel=1e-4))
    identity = tukey[tukey.task == "identity"].set_index(["method_1", "method_2"])
    assert identity["mean_difference"].to_dict() == {("A", "B"): -2.0, ("A", "C"): -3.5, ("B", "C"): -1.5}
    p = identity["p_value"]
    # Same standard error for every pair (equal n): a larger gap has a smaller p.
    assert p[("A", "C")] < p[("A", "B")] < p[("B", "C")] < 1


def test_tests_say_why_they_cannot_run():
    same = _table({"identity": {"A": [3, 3], "B": [3, 3]}, "prompt": {"A": [1, 5]}})
    results = human_results(same)
    kruskal = results["kruskal"].set_index("task")
    assert np.isnan(kruskal.loc["identity", "p_value"]) and "same value" in kruskal.loc["identity", "note"]
    assert np.isnan(kruskal.loc["prompt", "p_value"]) and "two methods" in kruskal.loc["prompt", "note"]
    assert results["tukey"].empty
    with pytest.raises(ValueError, match="outside 1-5"):
        human_results(_table({"prompt": {"A": [1, 6]}}))


def test_method_order_and_selection():
    results = human_results(RATINGS, methods=["C", "A", "elite"])
    assert results["table"]["method"].tolist() == ["C", "A"]
    assert set(results["tukey"][["method_1", "method_2"]].itertuples(index=False)) == {("C", "A")}


def test_human_pareto_plot():
    table = pd.DataFrame({
        "method": ["TI-m", "DB-m", "CD-m", "ELITE", "BaS"],  # BaS table 4 means, variances
        "identity_mean": [2.69, 3.97, 2.47, 3.05, 3.56], "identity_variance": [1.3, 0.95, 1.3, 1.31, 1.27],
        "identity_n": [405] * 5,
        "prompt_mean": [3.88, 2.37, 4.08, 3.53, 3.85], "prompt_variance": [1.21, 1.11, 1.12, 1.31, 1.21],
        "prompt_n": [405] * 5,
    })
    # BaS lies on the front (fig. 5 right); only ELITE is dominated (by BaS on both ratings).
    # Sorted by prompt rating.
    assert pareto_front(table) == ["DB-m", "BaS", "TI-m", "CD-m"]
    png = human_pareto_png(table)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(float)
    assert image.shape[0] > 300 and image.shape[1] > 300
    assert image.std() > 10 and len(np.unique(image.reshape(-1, 3), axis=0)) > 50
    # Works from real results too, with a method missing a task.
    assert human_pareto_png(human_results(RATINGS)["table"])[:4] == b"\x89PNG"
