from pathlib import Path

import pytest

from bas import config, paths
from bas.errors import ConfigError
from tests import params_defaults

ROOT = Path(__file__).resolve().parents[1]


def test_project_params_name_the_orchestration():
    cfg = config.load(ROOT / "params.yaml")
    assert cfg.orchestration.work_pool is None  # in-process by default: no server needed
    assert "bas" in cfg.orchestration.methods


@pytest.mark.parametrize("key, value, match", [
    ("concurrency", 0, r"orchestration\.concurrency = 0"),
    ("methods", ["bas", "bas"], r"orchestration\.methods .* listed twice"),
    ("stale_after_seconds", 20, r"orchestration\.stale_after_seconds = 20"),
    ("schedule_cron", "daily", r"orchestration\.schedule_cron = 'daily'"),
    ("retries", -1, r"orchestration\.retries = -1"),
])
def test_bad_orchestration_values_are_named(key, value, match):
    with pytest.raises(ConfigError, match=match):
        params_defaults.parse({"orchestration": {key: value}})


def test_scores_live_outside_the_runs():
    cfg = params_defaults.parse({"paths": {"storage_root": "/shared/bas"}})
    scores = paths.scene_scores_path(cfg, "bas", "coco-train2017-1")
    assert scores == Path("/shared/bas/scores/bas/coco-train2017-1.parquet")
    assert paths.runs_dir(cfg) not in scores.parents  # DVC outputs must not overlap
    assert paths.records_dir(cfg) not in paths.run_dir(cfg, "bas", "x").parents
