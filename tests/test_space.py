"""bas.space: what a run will write under the storage root, and the warning when it has no room."""

from __future__ import annotations

import json

from bas import paths, space
from bas.cli import main
from bas.io import record_files
from tests import params_defaults


def _cfg(tmp_path, **partial):
    return params_defaults.parse({"paths": {"storage_root": str(tmp_path)}, "models": {"profile": "tiny"},
                                  "scenes": {"num_scenes": 2, "max_concepts": 2},
                                  "generation": {"seeds": 1, "templates": ["a photo of {tokens}"]},
                                  "orchestration": {"methods": ["bas", "ti_m"]}, **partial})


def test_the_profile_sizes_are_the_models():
    from bas.models.tiny import RESOLUTION, TEXT_DIM
    from bas.sandbox import base_model

    assert space.PROFILE_SIZES["tiny"] == (RESOLUTION, TEXT_DIM)
    assert space.PROFILE_SIZES["sandbox"] == (base_model.RESOLUTION, base_model.TEXT_DIM)


def test_the_estimate_counts_per_method_what_is_not_finished(tmp_path):
    cfg = _cfg(tmp_path)
    need = space.estimate(cfg)
    image = 128 * 128 * 3
    for method in ("bas", "ti_m"):
        parts = need.by_method[method]
        assert need.todo[method] == 2 and parts["images"] > 2 * 3 * image and parts["tokens"] > 0
        assert parts["scores"] > 0 and parts["kept weights"] == 0   # training.keep_weights: false
    assert need.by_method["bas"]["class images"] > 0                # BaS's prior preservation, none made yet
    assert "ti_m" in need.text() and "in all" in need.text()

    run = paths.run_dir(cfg, "ti_m", "scene-0")   # one (method, scene) finished: it writes nothing
    (run / "images").mkdir(parents=True)
    (run / "images" / "a.png").write_bytes(b"png")
    (run / "done.json").write_text(json.dumps({"outputs": record_files(run, ["images/a.png"])}))
    paths.scene_scores_path(cfg, "ti_m", "scene-0").parent.mkdir(parents=True)
    paths.scene_scores_path(cfg, "ti_m", "scene-0").write_bytes(b"scores")
    after = space.estimate(cfg)
    assert after.todo["ti_m"] == 1 and after.by_method["ti_m"]["images"] * 2 == need.by_method["ti_m"]["images"]
    (run / "images" / "a.png").write_bytes(b"")   # damaged: made again, so counted again
    assert space.estimate(cfg).todo["ti_m"] == 2


def test_a_run_that_does_not_fit_is_warned_of(tmp_path, monkeypatch, capsys):
    cfg = _cfg(tmp_path)
    need = space.estimate(cfg)
    monkeypatch.setattr(space, "free_space", lambda path: (need.total // 2, 10**9))
    warning = space.room_warning(cfg, need)
    assert warning and str(tmp_path) in warning and "free some space" in warning and "\n" not in warning
    monkeypatch.setattr(space, "free_space", lambda path: (need.total * 2, 10**9))
    assert space.room_warning(cfg, need) is None

    monkeypatch.setattr(space, "free_space", lambda path: (1000, 10**9))
    assert main(["-S", f"paths.storage_root={tmp_path}", "-S", "orchestration.methods=[ti_m]",
                 "models", "check", "--profile", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "what the run will write under paths.storage_root" in out and "ti_m" in out
    assert "WARNING: the run will write about" in out
