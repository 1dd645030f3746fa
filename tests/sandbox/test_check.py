"""`bas sandbox check`: figures re-measured from saved weights against their training records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bas.sandbox import check, embedders

from tests.sandbox.test_registry_sandbox import weights  # noqa: F401  (the module's trained CLIP + DINO)


def test_flatten_keeps_numbers_only():
    figures = {"seen": {"shape": 0.9, "colour": 1}, "samples": 200, "ok": True, "note": "x"}
    assert check.flatten(figures) == {"seen.shape": 0.9, "seen.colour": 1.0, "samples": 200.0}


def test_binomial_tolerance():
    # p = 0.8 from 200 samples, re-measured on 100: 3 * sqrt(p(1-p)(1/100 + 1/200)) with p smoothed.
    p = (0.8 * 200 + 1) / 202
    assert check.binomial_tolerance(0.8, 200, 100) == pytest.approx(3 * (p * (1 - p) * 0.015) ** 0.5)
    # A perfect record still allows a sample or so to flip, and more samples narrow the band.
    assert 0.01 < check.binomial_tolerance(1.0, 200, 100) < 0.05
    assert check.binomial_tolerance(0.8, 200, 200) < check.binomial_tolerance(0.8, 200, 50)


def test_compare_flags_drift_and_unrecorded_figures():
    rows = check.compare("m", {"a": 0.90, "b": 0.50}, {"a": 0.905, "b": 0.60, "c": 0.1},
                         lambda _name, _value: 0.01)
    assert [(r.figure, r.ok) for r in rows] == [("a", True), ("b", False), ("c", False)]
    assert "NO" in check.format_table(rows)


def only_embedders(monkeypatch):
    monkeypatch.setattr(check, "_measurers", lambda: {"clip": embedders.measure_clip, "dino": embedders.measure_dino})
    for name, value in (("CLIP_HELDOUT_IMAGES", 12), ("DINO_HELDOUT_VIEWS", 2)):
        monkeypatch.setattr(embedders, name, value)


def test_check_all_passes_saved_models_and_catches_a_doctored_record(weights, monkeypatch, capsys):  # noqa: F811
    only_embedders(monkeypatch)
    failures = check.check_all(weights)
    out = capsys.readouterr().out
    # CLIP and DINO reproduce their records; the base model is not in this weights directory.
    assert [f for f in failures if not f.startswith("diffusion:")] == []
    assert any("diffusion: no trained model" in f for f in failures)
    assert "caption_top1" in out and "novel_auc" in out

    record_file = Path(weights.models.sandbox_weights) / "dino" / "training_record.json"
    original = record_file.read_text()
    record = json.loads(original)
    record["validity"]["novel_auc"] = round(record["validity"]["novel_auc"] + 0.05, 4)
    record_file.write_text(json.dumps(record))
    try:
        failures = check.check_all(weights)
    finally:
        record_file.write_text(original)
    assert any(f.startswith("dino: novel_auc recorded") for f in failures)


def test_check_all_refuses_a_model_of_another_seed(weights, monkeypatch):  # noqa: F811
    import dataclasses

    only_embedders(monkeypatch)
    other = dataclasses.replace(weights, sandbox=dataclasses.replace(weights.sandbox, seed=5))
    failures = check.check_all(other)
    assert any(f.startswith("clip: trained with seed 0") for f in failures)
