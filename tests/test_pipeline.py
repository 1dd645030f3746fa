"""bas.pipeline on the tiny profile and one real COCO scene: the stages, their skipping, and
their fingerprints."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bas import attempts, config, paths, pipeline
from bas.pipeline import Outcome
from tests import params_defaults
from orchestration_helpers import REPO, tiny_overrides


@pytest.fixture(scope="module")
def staged(tmp_path_factory, coco_root):
    storage = tmp_path_factory.mktemp("storage")
    cfg = config.load(REPO / "params.yaml", tiny_overrides(storage, coco_root, ("bas",), num_scenes=1))
    result = pipeline.stage(cfg)
    assert len(result["selected"]) == 1
    return cfg, result["selected"][0]


@pytest.fixture(scope="module")
def trained(staged):
    cfg, scene_id = staged
    return cfg, scene_id, pipeline.train_generate(cfg, "bas", scene_id, run_id="run-1")


def test_train_generate_trains_then_makes_the_grid(trained):
    cfg, scene_id, summary = trained
    assert summary["trained"] and summary["images"] == summary["images_generated"] == 3
    assert summary["train_seconds"] > 0 and summary["generate_seconds"] > 0 and summary["device"] == "cpu"
    run = paths.run_dir(cfg, "bas", scene_id)
    assert json.loads((run / "done.json").read_text())["fingerprint"] == summary["fingerprint"]
    assert len(pd.read_parquet(paths.manifest_path(run))) == 3
    [record] = attempts.read_attempts(paths.attempts_dir(cfg, "train_generate", "bas", scene_id))
    assert record["status"] == attempts.COMPLETED and record["run_id"] == "run-1"
    assert record["summary"] == summary


def test_finished_work_is_skipped_without_loading_a_model(trained, monkeypatch):
    cfg, scene_id, _ = trained
    import bas.models
    import bas.training.engine

    monkeypatch.setattr(bas.models, "load_diffusion", lambda *a, **k: pytest.fail("loaded a model"))
    monkeypatch.setattr(bas.training.engine, "load_diffusion", lambda *a, **k: pytest.fail("loaded a model"))
    summary = pipeline.train_generate(cfg, "bas", scene_id)
    assert not summary["trained"] and summary["images_generated"] == 0 and summary["images"] == 3


def test_a_grid_left_unfinished_is_finished_by_the_same_model(trained):
    cfg, scene_id, first = trained
    run = paths.run_dir(cfg, "bas", scene_id)
    images = sorted(paths.images_dir(run).glob("*.png"))
    images[0].unlink()
    (run / "done.json").unlink()  # as a run killed before it finished
    assert not pipeline.train_generate_done(cfg, "bas", scene_id)
    summary = pipeline.train_generate(cfg, "bas", scene_id)
    # BaS fine-tunes the UNet and the weights were not kept: the model that made the grid
    # is rebuilt by training again, and the grid is finished (or remade) by that model.
    assert summary["trained"] and summary["images"] == 3 and summary["images_generated"] >= 1
    assert images[0].exists() and len(list(paths.images_dir(run).glob("*.png"))) == 3
    assert pipeline.train_generate_done(cfg, "bas", scene_id, first["fingerprint"])


def test_a_tokens_only_grid_is_finished_from_the_saved_tokens(staged):
    cfg, scene_id = staged
    first = pipeline.train_generate(cfg, "ti_m", scene_id)
    run = paths.run_dir(cfg, "ti_m", scene_id)
    images = sorted(paths.images_dir(run).glob("*.png"))
    kept = {p.name: p.read_bytes() for p in images[1:]}
    images[0].unlink()
    (run / "done.json").unlink()
    summary = pipeline.train_generate(cfg, "ti_m", scene_id)
    assert first["trained"] and not summary["trained"]
    assert summary["images_generated"] == 1 and summary["images"] == 3
    assert all((paths.images_dir(run) / n).read_bytes() == b for n, b in kept.items())


def test_score_writes_outside_the_run_and_reruns_on_a_scoring_change(trained):
    cfg, scene_id, _ = trained
    first = pipeline.score(cfg, "bas", scene_id)
    out = paths.scene_scores_path(cfg, "bas", scene_id)
    assert first["scored"] and first["rows"] == len(pd.read_parquet(out)) > 0
    assert paths.runs_dir(cfg) not in out.parents
    again = pipeline.score(cfg, "bas", scene_id)
    assert not again["scored"] and again["rows"] == first["rows"]
    changed = config.parse({**cfg.to_dict(), "scoring": {**cfg.to_dict()["scoring"], "maskformer_threshold": 0.7}})
    assert pipeline.score_fingerprint(changed, "bas", scene_id) != first["fingerprint"]
    assert not pipeline.score_done(changed, "bas", scene_id)


def test_fingerprint_follows_recipe_and_generation_not_other_methods(staged):
    cfg, scene_id = staged
    base = pipeline.train_generate_fingerprint(cfg, "bas", scene_id)
    data = cfg.to_dict()

    def variant(section, **changes):
        return config.parse({**data, section: {**data[section], **changes}})

    assert pipeline.train_generate_fingerprint(variant("generation", steps=3), "bas", scene_id) != base
    assert pipeline.train_generate_fingerprint(variant("scoring", maskformer_threshold=0.9), "bas", scene_id) == base
    other = {**data["methods"], "ti_m": {**data["methods"]["ti_m"], "description": "changed"}}
    assert pipeline.train_generate_fingerprint(config.parse({**data, "methods": other}), "bas", scene_id) == base


def test_recipes_merge_includes_and_rewrite_only_what_changed(tmp_path):
    cfg = config.load(REPO / "params.yaml", {"paths.storage_root": str(tmp_path),
                                             "orchestration.methods": ["bas", "db_m", "cd_m"]})
    assert pipeline.write_recipes(cfg)["written"] == ["bas", "db_m", "cd_m"]
    cd_m = json.loads(paths.recipe_path(cfg, "cd_m").read_text())["recipe"]
    assert cd_m["attention_terms"]["attention"]["layers"] == list(cfg.methods["bas"].attention_terms["attention"].layers)  # via db_m -> bas
    assert pipeline.write_recipes(cfg)["written"] == []
    changed = config.load(REPO / "params.yaml", {"paths.storage_root": str(tmp_path),
                                                 "orchestration.methods": ["bas", "db_m", "cd_m"],
                                                 "methods.db_m.phases.phase2.weight_decay": 0.5})
    assert pipeline.write_recipes(changed)["written"] == ["db_m", "cd_m"]  # cd_m includes db_m


def test_code_version_is_per_stage():
    assert pipeline.code_version("train_generate") != pipeline.code_version("score")
    assert pipeline.code_version("score") == pipeline.code_version("score")


def test_run_summary_counts_and_lists_failures(tmp_path):
    cfg = params_defaults.parse({"paths": {"storage_root": str(tmp_path)}})
    outcomes = [
        Outcome("train_generate", "bas", "s1", "completed", ["r1"], None,
                {"train_seconds": 2.0, "generate_seconds": 1.0, "device": "cuda", "images_generated": 3}),
        Outcome("train_generate", "bas", "s2", "failed", ["r2", "r3"], "Crashed: worker gone"),
        Outcome("score", "bas", "s1", "cached", ["r4"]),
    ]
    summary = pipeline.run_summary(cfg, outcomes, wall_seconds=12.5, stage_errors={"report": "no scores"})
    assert summary["stages"] == {"train_generate": {"completed": 1, "failed": 1}, "score": {"cached": 1}}
    assert summary["device_seconds"] == {"train": 2.0, "generate": 1.0, "score": 0.0}
    assert summary["failures"] == [
        {"stage": "train_generate", "method": "bas", "scene_id": "s2", "error": "Crashed: worker gone"},
        {"stage": "report", "method": None, "scene_id": None, "error": "no scores"}]
    text = pipeline.format_summary(summary)
    assert "failures: 2" in text and "bas/s2: Crashed: worker gone" in text and "report: no scores" in text
    assert "cuda" in text


def test_a_finished_grid_survives_a_code_change_without_retraining(trained, monkeypatch):
    cfg, scene_id, _ = trained
    pipeline.train_generate(cfg, "bas", scene_id)  # whatever earlier tests left: finished
    monkeypatch.setitem(pipeline.STAGE_CODE, "train_generate", ("pipeline.py", "io.py"))
    pipeline.code_version.cache_clear()
    try:
        assert not pipeline.train_generate_done(cfg, "bas", scene_id)  # new code: the cache key moved
        summary = pipeline.train_generate(cfg, "bas", scene_id)
    finally:
        pipeline.code_version.cache_clear()
    # The library's own keys say training and grid are finished: nothing is made again.
    assert not summary["trained"] and summary["images_generated"] == 0 and summary["images"] == 3


def test_sandbox_weights_are_part_of_the_fingerprints(tmp_path):
    # A retrained sandbox model (same paths, new bytes) must make finished runs stale; another
    # checkout holding the same bytes must not.
    def models(root):
        return config.load(REPO / "params.yaml", {"models.profile": "sandbox",
                                                  "models.sandbox_weights": str(root)}).models

    for root in (tmp_path / "a", tmp_path / "b"):
        for part in ("diffusion/unet", "clip"):
            (root / part).mkdir(parents=True)
            (root / part / "weights.bin").write_bytes(b"trained once")
    a, b = models(tmp_path / "a"), models(tmp_path / "b")
    first = pipeline.weights_identity(a, ("diffusion",))
    assert first == pipeline.weights_identity(b, ("diffusion",))
    assert first != pipeline.weights_identity(a, ("clip",))
    (tmp_path / "a" / "diffusion" / "unet" / "weights.bin").write_bytes(b"trained again")
    assert pipeline.weights_identity(a, ("diffusion",)) != first
    retrained = pipeline.weights_identity(a, ("diffusion",))
    (tmp_path / "a" / "diffusion" / "training_record.json").write_text('{"validity": {}}')
    assert pipeline.weights_identity(a, ("diffusion",)) == retrained   # a record is not a weight
    # The training engine's run key and the prior-image cache name the base model by the same
    # digest: a retrained base model trains every method again and samples new class images.
    from bas.training.prior import model_identity

    assert model_identity(a) == f"sandbox:{retrained}" and model_identity(b) == f"sandbox:{first}"
    tiny = config.load(REPO / "params.yaml", {"models.profile": "tiny"}).models
    assert pipeline.weights_identity(tiny, ("diffusion",)) is None
