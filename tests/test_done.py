"""bas.done: the one list of each stage's code, checked against dvc.yaml, and the reasons a
(method, scene) is not done."""

from __future__ import annotations

import json

import yaml

from bas import done, pipeline
from orchestration_helpers import REPO


def _code_deps(stage: dict) -> set[str]:
    deps = stage.get("do", stage).get("deps", [])
    return {d for d in deps if isinstance(d, str) and d.startswith("bas/") and not d.startswith("bas/data/")}


def test_dvc_code_deps_are_the_stage_code_of_bas_done():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    with_code = {name for name, stage in stages.items() if _code_deps(stage)}
    assert with_code == {"scenes", "train_generate", "score", "report"}
    for name in with_code:
        assert _code_deps(stages[name]) == {f"bas/{entry}" for entry in done.STAGE_CODE[name]}, name
    for entries in done.STAGE_CODE.values():
        for entry in entries:
            assert (done.PACKAGE_DIR / entry).exists(), entry


def test_the_pipeline_asks_bas_done():
    assert pipeline.train_generate_status is done.train_generate_status
    assert pipeline.STAGE_CODE is done.STAGE_CODE and pipeline.code_version is done.code_version


def test_status_says_why_a_run_is_not_done(tmp_path, monkeypatch):
    from bas import config

    cfg = config.load(REPO / "params.yaml", {"models.profile": "tiny", "paths.storage_root": str(tmp_path)})
    scene_dir = tmp_path / cfg.paths.scenes / "s1"
    scene_dir.mkdir(parents=True)
    (scene_dir / "scene.json").write_text(json.dumps({"content_hash": "abc"}))
    status = done.train_generate_status(cfg, "bas", "s1")
    assert not status and any("done.json" in r and "not finished" in r for r in status.reasons)

    run = pipeline.paths.run_dir(cfg, "bas", "s1")
    run.mkdir(parents=True)
    (run / "manifest.parquet").write_bytes(b"")
    (run / done.DONE_FILE).write_text(json.dumps(done.done_record(cfg, "bas", "s1", status, 0)))
    assert done.train_generate_status(cfg, "bas", "s1")

    other = config.load(REPO / "params.yaml", {"models.profile": "tiny", "paths.storage_root": str(tmp_path),
                                               "generation.seeds": cfg.generation.seeds + 1})
    stale = done.train_generate_status(other, "bas", "s1")
    assert not stale and stale.reasons == [f"{run / done.DONE_FILE} was written for other inputs (changed: generation)"]
    (scene_dir / "scene.json").write_text(json.dumps({"content_hash": "another"}))
    assert "changed: train" in done.train_generate_status(cfg, "bas", "s1").reasons[0]


def test_a_finished_run_records_its_outputs_and_a_changed_one_is_named(tmp_path):
    from bas import config

    cfg = config.load(REPO / "params.yaml", {"models.profile": "tiny", "paths.storage_root": str(tmp_path)})
    scene_dir = tmp_path / cfg.paths.scenes / "s1"
    scene_dir.mkdir(parents=True)
    (scene_dir / "scene.json").write_text(json.dumps({"content_hash": "abc"}))
    run = pipeline.paths.run_dir(cfg, "ti_m", "s1")
    (run / "train").mkdir(parents=True)
    (run / "images").mkdir()
    (run / "train" / "tokens.safetensors").write_bytes(b"t" * 456)
    (run / "images" / "a.png").write_bytes(b"p" * 100)
    (run / "manifest.parquet").write_bytes(b"m")
    (run / ".train.x.tmp").mkdir()   # a killed run's temporary folder: not an output
    status = done.train_generate_status(cfg, "ti_m", "s1")
    record = done.done_record(cfg, "ti_m", "s1", status, 1)
    assert sorted(record["outputs"]) == ["images/a.png", "manifest.parquet", "train/tokens.safetensors"]
    (run / done.DONE_FILE).write_text(json.dumps(record))
    now = done.train_generate_status(cfg, "ti_m", "s1")
    assert now and now.changed == [] and done.verify(cfg).ok and done.verify(cfg).checked == 3

    (run / "train" / "tokens.safetensors").write_bytes(b"t" * 5)
    (run / "images" / "a.png").unlink()
    now = done.train_generate_status(cfg, "ti_m", "s1")
    assert not now and [c.name for c in now.changed] == ["images/a.png", "train/tokens.safetensors"]
    assert now.reasons == [f"{run / 'images/a.png'} is missing",
                           f"{run / 'train/tokens.safetensors'} is 5 bytes, 456 when it was made"]
    found = done.verify(cfg)
    assert not found.ok and len(found.differences) == 2 and all("recorded in" in d for d in found.differences)
