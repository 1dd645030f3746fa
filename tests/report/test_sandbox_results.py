"""The main job's results on the sandbox, as docs/SANDBOX.md reports them, follow from its scores.

`docs/results/sandbox-main-job/` keeps the per-(image, concept) scores of the README's main job
and of the remaining methods run at its amounts (every `scores/<method>/<scene>.parquet` of that
storage root, concatenated) with the claims table `bas report` wrote from them. These tests
recompute each paper's claim from the kept scores and check the verdict against the table and
against what docs/SANDBOX.md says of it, so neither can drift from the numbers.
"""

from pathlib import Path

import pandas as pd
import pytest

from bas import config
from bas.report.claims import CLAIMS, evaluate_claims
from bas.report.results import per_image

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "docs" / "results" / "sandbox-main-job"


@pytest.fixture(scope="module")
def recomputed():
    report = config.load(REPO / "params.yaml").report
    images = per_image(pd.read_parquet(RESULTS / "scores.parquet"))
    return {r.claim.key: r for r in evaluate_claims(images, report.bootstrap_samples, report.confidence,
                                                     report.bootstrap_seed)}


def test_every_claims_verdict_follows_from_the_kept_scores(recomputed):
    table = pd.read_csv(RESULTS / "claims.csv")
    assert list(table["claim"]) == [claim.key for claim in CLAIMS]
    for row in table.itertuples():
        assert recomputed[row.claim].verdict == row.verdict, row.claim
        assert recomputed[row.claim].reason == row.reason, row.claim


def test_the_sandbox_doc_states_each_verdict(recomputed):
    # docs/SANDBOX.md's claims table has one row a claim: `| <key> | ... | <verdict> | ...`.
    rows = {line.split("|")[1].strip().strip("`"): line
            for line in (REPO / "docs" / "SANDBOX.md").read_text().splitlines() if line.startswith("| `")}
    for key, result in recomputed.items():
        assert key in rows, key
        cells = [cell.strip().strip("*") for cell in rows[key].split("|")]
        assert result.verdict in cells, (key, result.verdict)


def test_the_kept_scores_are_the_main_jobs_grid():
    rows = pd.read_parquet(RESULTS / "scores.parquet")
    per_method = per_image(rows).groupby("method").size().to_dict()
    # Two scenes (3 and 2 objects): every subset of the tokens x 5 contexts x 1 seed = (7 + 3) x 5;
    # tl_hard has the first scene only (docs/SANDBOX.md says why).
    assert per_method.pop("tl_hard") == 35
    assert set(per_method.values()) == {50}, per_method
    assert {"bas", "ti_m", "db_m", "cd_m", "bas_no_attn_loss", "mifo", "sne", "ground_truth",
            "other_identity"} <= set(per_method)
    assert set(rows["profile"]) == {"sandbox"}
