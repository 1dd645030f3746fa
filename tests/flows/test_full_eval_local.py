"""`bas run` with no server at all (Prefect's ephemeral API): complete results, a rerun
served from the content-keyed cache, and a broken scene that fails alone."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bas import attempts, config, paths
from orchestration_helpers import REPO, set_args, tiny_overrides
from prefect_harness import prefect_env

pytestmark = pytest.mark.slow


def _bas_run(tmp_path, overrides):
    env = prefect_env(tmp_path / "prefect-home")  # no PREFECT_API_URL: the ephemeral API
    done = subprocess.run([sys.executable, "-m", "bas.cli", *set_args(overrides), "run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    return done


def _latest_summary(cfg) -> dict:
    return json.loads(sorted(paths.run_summaries_dir(cfg).glob("*-full_eval-*.json"))[-1].read_text())


def _all_attempts(cfg) -> list[dict]:
    return [json.loads(p.read_text()) for p in (paths.records_dir(cfg) / "attempts").rglob("*.json")]


def test_full_eval_without_a_server_caches_and_isolates_failures(tmp_path, coco_root):
    overrides = tiny_overrides(tmp_path / "storage", coco_root)
    cfg = config.load(REPO / "params.yaml", overrides)

    first = _bas_run(tmp_path, overrides)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    summary = _latest_summary(cfg)
    assert summary["stages"] == {"train_generate": {"completed": 4}, "score": {"completed": 4}}
    assert summary["images"] == summary["images_generated"] == 12 and summary["failures"] == []
    assert summary["device_seconds"]["train"] > 0 and summary["devices"] == ["cpu"]
    assert "failures: 0" in first.stdout
    assert (paths.reports_dir(cfg) / "report.html").exists()
    executed = _all_attempts(cfg)
    assert len(executed) == 8 and all(r["status"] == attempts.COMPLETED for r in executed)

    # A user's scene whose mask was damaged after it was added: it fails, alone.
    from bas.scenes import add_scene, load_scene, make_user_scene

    source = load_scene(paths.scenes_dir(cfg) / summary["scenes"][0])
    image_path, mask_path = tmp_path / "photo.png", [tmp_path / f"m{i}.png" for i in range(source.num_concepts)]
    source.image.save(image_path)
    for mask, path in zip(source.masks, mask_path):
        Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    broken = make_user_scene(image_path, mask_path, "my-broken-scene", 64, names=source.class_names)
    add_scene(broken, paths.scenes_dir(cfg))
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(paths.scenes_dir(cfg) / "my-broken-scene" / "mask_0.png")

    second = _bas_run(tmp_path, overrides)
    assert second.returncode == 1, second.stdout[-4000:] + second.stderr[-4000:]
    summary = _latest_summary(cfg)
    # Finished work came from Prefect's cache: no task executed, so no new attempt record.
    assert summary["stages"] == {"train_generate": {"cached": 4, "failed": 2}, "score": {"cached": 4}}
    assert summary["images_generated"] == 0
    assert {(f["stage"], f["scene_id"]) for f in summary["failures"]} == {("train_generate", "my-broken-scene")}
    assert all("my-broken-scene" in f["error"] and "empty mask" in f["error"] for f in summary["failures"])
    assert "my-broken-scene" in second.stdout
    new = [r for r in _all_attempts(cfg) if r["attempt_id"] not in {e["attempt_id"] for e in executed}]
    assert {(r["scene_id"], r["status"]) for r in new} == {("my-broken-scene", attempts.FAILED)}
    assert len(new) == 2  # one per method: a BasError is not retried
    manifest = pd.read_parquet(paths.manifest_path(paths.run_dir(cfg, "bas", summary["scenes"][0])))
    assert len(manifest) == 3


def test_a_pool_without_a_server_is_a_clear_error(tmp_path, coco_root):
    overrides = {**tiny_overrides(tmp_path / "storage", coco_root, ("bas",), num_scenes=1),
                 "orchestration.work_pool": "bas-gpu"}
    done = _bas_run(tmp_path, overrides)
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert "no deployment 'train-generate-scene/gpu'" in done.stderr and "bas deploy" in done.stderr
