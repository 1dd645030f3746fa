"""The Prefect tasks, called through `.fn()`: one library call each, content cache keys."""

from __future__ import annotations

import json

import pytest
from prefect.states import Failed

from bas import config, paths, pipeline
from bas.errors import DataError
from tests import params_defaults
from orchestration_helpers import REPO, tiny_overrides
from tasks import stages


@pytest.fixture
def staged(tmp_path, coco_root):
    cfg = config.load(REPO / "params.yaml", tiny_overrides(tmp_path, coco_root, ("bas",), num_scenes=1))
    result = stages.stage_scenes.fn(cfg)
    assert stages.list_scenes.fn(cfg) == result["selected"]
    return cfg, result["selected"][0]


def test_business_errors_are_not_retried_transient_ones_are():
    assert not stages.is_transient(None, None, Failed(data=DataError("scene.json missing")))
    assert stages.is_transient(None, None, Failed(data=OSError("NFS hiccup")))
    assert stages.is_transient(None, None, Failed(data=RuntimeError("CUDA error: unspecified launch failure")))


def test_a_full_disk_is_not_retried_even_outside_bas_s_writers():
    import errno

    from safetensors import SafetensorError

    from bas.errors import StorageFullError

    for error in (StorageFullError("/x", "no space left on device", 0, 1), OSError(errno.ENOSPC, "No space left"),
                  OSError(errno.EDQUOT, "Disk quota exceeded"),
                  RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"),
                  SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")):
        assert not stages.is_transient(None, None, Failed(data=error)), error


def test_configured_tasks_take_retries_and_shared_storage_from_params(tmp_path):
    cfg = params_defaults.parse({"paths": {"storage_root": str(tmp_path)},
                        "orchestration": {"retries": 3, "retry_delay_seconds": 2}})
    task = stages.configured(stages.train_generate, cfg)
    assert task.retries == 3 and task.retry_delay_seconds == [2, 4, 8]  # exponential backoff
    assert task.result_storage == paths.prefect_results_dir(cfg).resolve()
    assert task.retry_condition_fn is stages.is_transient


def test_cache_key_is_the_content_fingerprint_and_valid_only_while_outputs_exist(staged):
    cfg, scene_id = staged
    parameters = {"cfg": cfg, "method": "bas", "scene_id": scene_id}
    key = stages._train_generate_key(None, parameters)
    fingerprint = pipeline.train_generate_fingerprint(cfg, "bas", scene_id)
    assert key == f"train_generate-bas-{scene_id}-{fingerprint}"

    record = paths.prefect_results_dir(cfg).resolve() / key
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text("{}")  # a cache record whose outputs are gone
    assert stages._train_generate_key(None, parameters) == key
    assert not record.exists()

    run = paths.run_dir(cfg, "bas", scene_id)  # outputs finished for this fingerprint
    run.mkdir(parents=True)
    paths.manifest_path(run).write_bytes(b"")
    (run / pipeline.DONE_FILE).write_text(json.dumps(pipeline.done_record(cfg, "bas", scene_id, fingerprint, 0)))
    record.write_text("{}")
    assert stages._train_generate_key(None, parameters) == key and record.exists()
    record.write_text("")  # cut short as the disk filled: it would not read back
    assert stages._train_generate_key(None, parameters) == key and not record.exists()
    record.write_text("{}")
    paths.manifest_path(run).write_bytes(b"changed")  # an output no longer as recorded
    assert stages._train_generate_key(None, parameters) == key and not record.exists()

    changed = config.load(REPO / "params.yaml", {**tiny_overrides(paths.storage_root(cfg), cfg.scenes.coco_root,
                                                                  ("bas",), num_scenes=1),
                                                 "methods.bas.phases.phase2.lr": 1.0e-5})
    assert stages._train_generate_key(None, {**parameters, "cfg": changed}) != key


def test_score_key_follows_the_run_it_scores(staged):
    cfg, scene_id = staged
    parameters = {"cfg": cfg, "method": "bas", "scene_id": scene_id}
    before = stages._score_key(None, parameters)
    run = paths.run_dir(cfg, "bas", scene_id)
    run.mkdir(parents=True)
    (run / pipeline.DONE_FILE).write_text(json.dumps({"fingerprint": "another-grid"}))
    assert stages._score_key(None, parameters) != before  # new images, new scores
