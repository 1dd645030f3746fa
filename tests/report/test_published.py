"""The published numbers (bas/report/published.py) meet our methods by name."""

from pathlib import Path

import pandas as pd
import pytest

from bas import config
from bas.report import build, published
from bas.training.methods import UNAVAILABLE
from tests.shipped_methods import MEASURING, SHIPPED, SUCCESSORS

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def test_every_published_key_names_a_shipped_method():
    """A label or key that names no method of ours would keep its comparison out of every report."""
    methods = list(config.load(PARAMS).methods)
    assert methods == list(SHIPPED) + list(SUCCESSORS) + list(MEASURING)
    known = methods + sorted(UNAVAILABLE)            # ELITE: a published row with no run of ours
    for table in published.TABLES:
        if table is published.TL_VS_CUSTOM_DIFFUSION:  # one row of gains, paired through TL_METHODS
            continue
        for label in table.rows:
            assert published.match_method(label, known) is not None, (table.key, label)
    for method in published.TL_METHODS:
        assert method in methods, method


def test_tl_gains_pair_tl_hard_with_cd_m():
    rows = []
    for method, clip_i, clip_t in (("tl_hard", 0.66, 0.33), ("cd_m", 0.60, 0.30), ("tl_soft", 0.9, 0.9)):
        for size in (1, 2):
            rows.append({"method": method, "subset_size": size, "clip_i": clip_i * size,
                         "prompt_similarity": clip_t * size})
    gains = build.tl_relative(pd.DataFrame(rows))
    assert gains == pytest.approx({"CLIP-I single": 10.0, "CLIP-I multi": 10.0,
                                   "CLIP-T single": 10.0, "CLIP-T multi": 10.0})
