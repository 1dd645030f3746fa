import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bas import cli
from bas.errors import ConfigError, DataError
from bas.report import build_report
from bas.report.build import collect
from bas.report.html import SECTIONS
from bas.report.results import load_results
from tests import params_defaults

from report_fixtures import CENTRES, FRONT, write_results

ROOT = Path(__file__).resolve().parents[2]
CFG = params_defaults.report(bootstrap_samples=200)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One report of the synthetic run, compared against a second run whose bas is better."""
    base = tmp_path_factory.mktemp("report")
    results = write_results(base / "results")
    other_centres = dict(CENTRES, bas=(0.23, 0.65))  # this run's bas: +0.05 on both
    other = write_results(base / "other", other_centres, attention_for=())
    outputs = build_report(results, base / "out", CFG, compare=other)
    return outputs, results, other


def test_pareto_front_of_the_synthetic_run(synthetic_results, tmp_path):
    results = load_results(synthetic_results)
    data = collect(results, CFG, tmp_path, "synthetic")
    assert data.front == FRONT  # cd_m is dominated by ti_m; the ablation is kept off
    with_ablations = collect(results, params_defaults.report(bootstrap_samples=50, pareto_include_ablations=True),
                             tmp_path, "synthetic")
    assert with_ablations.front == ["db_m", "bas", "ti_m", "bas_no_union"]


def test_html_has_every_section_and_is_self_contained(built):
    outputs, _, _ = built
    html = outputs.html.read_text()
    for key, title in SECTIONS:
        assert f'<section id="{key}">' in html, key
    assert "numbers come from random-weight models and mean nothing" in html
    assert "Pareto front</b> (identity and prompt similarity, both higher is better): db_m, bas, ti_m." in html
    # No address outside the file: every src is a data URI, every href an anchor.
    assert not re.search(r"(?i)\b(?:https?|ftp)://", html)
    assert not re.search(r"(?i)\burl\(", html)
    sources = re.findall(r'\bsrc="([^"]*)"', html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert all(h.startswith("#") for h in re.findall(r'\bhref="([^"]*)"', html))
    # One embedded plot each: Fig. 5, published user study, 2 breakdowns, detection, 2 picture rows,
    # 2 attention figures (only bas saved maps).
    assert len(sources) == 9
    assert "Attention maps not produced by: cd_m, db_m, ti_m, bas_no_union." in html
    assert html.count('class="published-tag">PUBLISHED') >= 5
    assert "Kruskal-Wallis across methods" in html and "Tukey HSD: Identity similarity" in html
    assert "“a photo of a cup and a chair and a bottle at the beach”" in html  # picture prompt, all concepts


def test_outputs_on_disk(built):
    outputs, _, _ = built
    for name in ("pareto", "by_subset_size", "by_template", "detection_rate", "published_bas_user_study"):
        assert (outputs.plots_dir / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "<svg" in (outputs.plots_dir / f"{name}.svg").read_text()
    assert (outputs.plots_dir / "pictures_coco-train2017-1.png").exists()
    tukey = pd.read_csv(outputs.tables_dir / "tukey_hsd.csv")
    assert set(tukey["metric"]) == {"identity_similarity", "prompt_similarity"}
    assert len(tukey) == 2 * 10  # 5 methods: 10 pairs a metric
    summary = outputs.markdown.read_text()
    assert "numbers come from random-weight models and mean nothing" in summary
    assert "**db_m, bas, ti_m**" in summary and "plots/pareto.png" in summary
    assert "PUBLISHED — MIFO multi-instance semantic learning" in summary


def test_metrics_json_is_method_by_metric_and_dvc_reads_it(built, tmp_path):
    outputs, _, _ = built
    metrics = json.loads(outputs.metrics.read_text())
    assert set(metrics) == set(CENTRES)
    assert metrics["bas"]["prompt_similarity"] == pytest.approx(0.28)
    assert metrics["cd_m"]["detected"] == pytest.approx(37 / 60, abs=1e-6)
    assert metrics["bas"]["n_images"] == 40
    repo = tmp_path / "dvc"
    repo.mkdir()
    shutil.copy(outputs.metrics, repo / "metrics.json")
    env = dict(os.environ, DO_NOT_TRACK="1", DVC_NO_ANALYTICS="1")
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run(dvc + ["init", "--no-scm", "-q"], cwd=repo, check=True, env=env)
    shown = subprocess.run(dvc + ["metrics", "show", "--json", "metrics.json"], cwd=repo, check=True,
                           env=env, capture_output=True, text=True)
    data = json.loads(shown.stdout)[""]["data"]["metrics.json"]["data"]
    assert data["db_m"]["identity_similarity"] == pytest.approx(0.8)


def test_compare_shows_both_runs_and_deltas(built, tmp_path):
    outputs, results, other = built
    table = pd.read_csv(outputs.tables_dir / "comparison.csv").set_index(["method", "metric"])
    assert table.at[("bas", "prompt_similarity"), "this"] == pytest.approx(0.28)
    assert table.at[("bas", "prompt_similarity"), "other"] == pytest.approx(0.23)
    assert table.at[("bas", "prompt_similarity"), "delta"] == pytest.approx(0.05)
    assert table.at[("bas", "prompt_similarity"), "better"] == "yes"
    assert table.at[("ti_m", "identity_similarity"), "delta"] == pytest.approx(0.0)
    html = outputs.html.read_text()
    compare = html[html.index('<section id="compare">'):html.index('<section id="method-notes">')]
    assert str(other) in compare and 'class="num good">+0.050' in compare
    # The other run may also be a metrics.json, e.g. read from a DVC experiment.
    metrics = tmp_path / "other-metrics.json"
    metrics.write_text(json.dumps({"bas": {"prompt_similarity": 0.38, "n_images": 3}}))
    second = build_report(results, tmp_path / "out", CFG, compare=metrics)
    table = pd.read_csv(second.tables_dir / "comparison.csv").set_index(["method", "metric"])
    assert table.at[("bas", "prompt_similarity"), "delta"] == pytest.approx(-0.10)
    assert table.at[("bas", "prompt_similarity"), "better"] == "no"
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(DataError, match="bad.json"):
        build_report(results, tmp_path / "out2", CFG, compare=bad)


def test_cli_writes_the_report(synthetic_results, tmp_path, capsys):
    out = tmp_path / "cli-out"
    code = cli.main(["--params", str(ROOT / "params.yaml"), "-S", "report.bootstrap_samples=50",
                     "-S", "report.picture_scenes=[coco-train2017-2]", "report",
                     "--results", str(synthetic_results), "--out", str(out)])
    assert code == 0
    assert capsys.readouterr().out.strip() == str(out / "report.html")
    html = (out / "report.html").read_text()
    assert "pictures of coco-train2017-2" in html and "pictures of coco-train2017-1" not in html
    assert "No other run given" in html
    # Without --results: the runs and scenes directories of params `paths`, output in paths.reports.
    code = cli.main(["--params", str(ROOT / "params.yaml"), "-S", "report.bootstrap_samples=20",
                     "-S", f"paths.storage_root={synthetic_results}", "-S", "paths.reports=../from-params",
                     "report"])
    assert code == 0
    html = (synthetic_results.parent / "from-params" / "report.html").read_text()
    assert "pictures of coco-train2017-1" in html and "scene not found" not in html
    capsys.readouterr()
    assert cli.main(["--params", str(ROOT / "params.yaml"), "report", "--results",
                     str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "results directory not found" in capsys.readouterr().err


def test_sd21_profile_has_no_banner_and_incomplete_runs_are_listed(tmp_path):
    results = write_results(tmp_path / "results", {"bas": CENTRES["bas"], "ti_m": CENTRES["ti_m"]},
                            profile="sd21")
    (results / "runs" / "ti_m" / "coco-train2017-2" / "scores.parquet").unlink()
    # The runs dir itself works too; a scenes dir without the scene is said in the picture caption.
    outputs = build_report(results / "runs", tmp_path / "out", CFG, scenes_dir=tmp_path / "nowhere")
    html = outputs.html.read_text()
    assert f"scene not found: {tmp_path / 'nowhere' / 'coco-train2017-1'}" in html
    assert "random-weight" not in html and 'class="banner"' not in html
    assert "Model profile: <b>sd21</b>" in html
    assert "ti_m/coco-train2017-2" in html  # left out, said so


def test_bad_inputs_are_named(synthetic_results, tmp_path):
    with pytest.raises(ConfigError, match=r"report\.picture_scenes.*nope"):
        build_report(synthetic_results, tmp_path / "o", params_defaults.report(bootstrap_samples=20, picture_scenes=("nope",)))
    with pytest.raises(ConfigError, match=r"report\.test_metrics\[0\]"):
        params_defaults.report(test_metrics=("accuracy",))
    empty = tmp_path / "empty" / "runs"
    empty.mkdir(parents=True)
    with pytest.raises(DataError, match="no scores.parquet"):
        build_report(empty.parent, tmp_path / "o", CFG)
    broken = synthetic_results / "runs" / "bas" / "coco-train2017-1" / "scores.parquet"
    pd.read_parquet(broken).drop(columns=["cs"]).to_parquet(broken)
    with pytest.raises(DataError, match=r"scores\.parquet: missing column\(s\) cs"):
        build_report(synthetic_results, tmp_path / "o", CFG)


def test_a_lone_method_that_detects_nothing_still_gets_a_report(tmp_path):
    results = write_results(tmp_path / "results", {"bas": CENTRES["bas"]},
                            undetected={("bas", 0), ("bas", 1), ("bas", 2)})
    outputs = build_report(results, tmp_path / "out", CFG)
    html = outputs.html.read_text()
    assert "both higher is better): none." in html  # no identity mean, no front
    assert "needs scores from at least two methods" in html
    metrics = json.loads(outputs.metrics.read_text())
    assert metrics["bas"]["detected"] == 0.0 and "identity_similarity" not in metrics["bas"]


def test_pipeline_scores_layout_is_read(synthetic_results):
    # The pipeline keeps scores outside the runs (DVC outputs must not overlap):
    # <root>/scores/<method>/<scene_id>.parquet. The report reads them from there.
    before = load_results(synthetic_results).rows
    for run_scores in sorted((synthetic_results / "runs").glob("*/*/scores.parquet")):
        method, scene = run_scores.parent.parent.name, run_scores.parent.name
        target = synthetic_results / "scores" / method / f"{scene}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        run_scores.rename(target)
    after = load_results(synthetic_results).rows
    assert len(after) == len(before) > 0
    assert sorted(after["method"].unique()) == sorted(before["method"].unique())


def test_human_ratings_join_the_report(synthetic_results, tmp_path):
    import pandas as pd

    rows = []
    for method, (prompt, identity) in {"bas": (4, 5), "ti_m": (5, 2), "db_m": (2, 4)}.items():
        for rater in range(3):
            rows.append({"rater": f"r{rater}", "task": "prompt", "method": method, "rating": prompt - rater % 2})
            rows.append({"rater": f"r{rater}", "task": "identity", "method": method, "rating": identity - rater % 2})
    pd.DataFrame(rows).to_parquet(synthetic_results / "ratings.parquet")
    outputs = build_report(synthetic_results, tmp_path / "out", CFG)
    html = outputs.html.read_text()
    section = html[html.index('<section id="human">'):html.index("</section>", html.index('<section id="human">'))]
    assert "Kruskal-Wallis" in section and "Tukey HSD" in section
    assert "4.67" in section  # bas identity mean: (5 + 4 + 5) / 3
    assert (tmp_path / "out" / "plots" / "human_pareto.png").exists()


def test_sandbox_profile_says_what_its_numbers_are(tmp_path):
    results = write_results(tmp_path / "results", {"bas": CENTRES["bas"], "ti_m": CENTRES["ti_m"]},
                            profile="sandbox")
    html = build_report(results, tmp_path / "out", CFG).html.read_text()
    assert 'class="banner"' in html and "Sandbox profile" in html and "random-weight" not in html
