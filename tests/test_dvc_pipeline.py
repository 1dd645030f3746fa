"""dvc.yaml on the tiny profile: each change reruns exactly the stages it should.

A module-scoped copy of the project (git + DVC, params with the tiny overrides, 2 COCO
scenes x 2 methods) is reproduced once; each test starts from a reproduced workspace,
changes params, reproduces, and checks what ran from DVC's own output and dvc.lock and from
the pipeline's attempt records (`summary.trained`), never from timing. The train and score
stages run their Prefect flows on the session's Prefect server (PREFECT_API_URL).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from bas import attempts, config, paths
from orchestration_helpers import REPO, tiny_overrides

pytestmark = pytest.mark.slow

METHODS = ("bas", "ti_m")
ALL_STAGES = {"scenes", "recipes", "train_generate@bas", "train_generate@ti_m", "score@bas", "score@ti_m", "report"}


@dataclass
class Project:
    root: Path
    env: dict

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(list(args), cwd=self.root, env=self.env, capture_output=True, text=True, timeout=900)
        if check:
            assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout[-5000:]}\n{done.stderr[-5000:]}"
        return done

    def repro(self) -> set[str]:
        """`dvc repro`; the stages DVC says it ran."""
        out = self.run("dvc", "repro").stdout
        return set(re.findall(r"Running stage '([^']+)'", out))

    def set_params(self, **changes) -> None:
        path = self.root / "params.yaml"
        params = yaml.safe_load(path.read_text())
        for dotted, value in changes.items():
            node = params
            *parents, last = dotted.split(".")
            for key in parents:
                node = node[key]
            node[last] = value
        path.write_text(yaml.safe_dump(params, sort_keys=False))

    @property
    def cfg(self):
        """The project's params, with its (relative) storage root resolved in the project."""
        cfg = config.load(self.root / "params.yaml")
        return config.load(self.root / "params.yaml", {"paths.storage_root": str(self.root / cfg.paths.storage_root)})

    def lock(self) -> dict:
        return yaml.safe_load((self.root / "dvc.lock").read_text())["stages"]

    def trained(self) -> dict[tuple[str, str], int]:
        """How many executions actually trained each (method, scene), from the attempt records."""
        cfg, counts = self.cfg, {}
        for method in METHODS:
            for directory in (paths.records_dir(cfg) / "attempts" / "train_generate" / method).glob("*"):
                records = attempts.read_attempts(directory)
                counts[(method, directory.name)] = sum(
                    1 for r in records if r["status"] == attempts.COMPLETED and (r["summary"] or {}).get("trained"))
        return counts

    def executions(self, stage: str) -> int:
        return len(list((paths.records_dir(self.cfg) / "attempts" / stage).rglob("*.json")))


def _copy_project(root: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("bas", "flows", "tasks"):
        shutil.copytree(REPO / name, root / name, ignore=ignore)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")


@pytest.fixture(scope="module")
def project(tmp_path_factory, coco_root, prefect_server) -> Project:
    root = tmp_path_factory.mktemp("dvc-project")
    _copy_project(root)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = prefect_server.env()
    env.update(PYTHONPATH=str(root), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
               GIT_AUTHOR_NAME="bas test", GIT_AUTHOR_EMAIL="test@example.org",
               GIT_COMMITTER_NAME="bas test", GIT_COMMITTER_EMAIL="test@example.org")
    project = Project(root, env)
    overrides = tiny_overrides(Path("data"), coco_root, METHODS)
    project.set_params(**{k: v for k, v in overrides.items() if k != "paths.storage_root"})
    shutil.copy(REPO / ".gitignore", root / ".gitignore")
    project.run("git", "init", "-q")
    project.run("dvc", "init", "-q")
    project.run("dvc", "config", "core.analytics", "false")
    shutil.copy(REPO / ".dvcignore", root / ".dvcignore")  # __pycache__ is not a stage input
    project.run("dvc", "remote", "add", "-d", "local", str(root.parent / f"{root.name}-dvc-storage"))
    assert project.repro() == ALL_STAGES
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "baseline")
    assert project.trained() == {(m, s): 1 for m in METHODS for s in _scene_ids(project)}
    return project


def _scene_ids(project: Project) -> list[str]:
    import pandas as pd

    return sorted(pd.read_parquet(paths.scene_index(project.cfg))["scene_id"].unique())


def test_a_scoring_param_reruns_scoring_and_report_not_training(project):
    project.repro()
    lock, scored = project.lock(), project.executions("score")
    trained = project.executions("train_generate")
    project.set_params(**{"scoring.maskformer_threshold": 0.6})
    assert project.repro() == {"score@bas", "score@ti_m", "report"}
    assert project.executions("train_generate") == trained  # no train task even started
    for method in METHODS:
        assert project.lock()[f"train_generate@{method}"] == lock[f"train_generate@{method}"]
    # Every scene rescored with the new threshold.
    assert project.executions("score") == scored + 4
    for method in METHODS:
        for scene_id in _scene_ids(project):
            marker = paths.scene_scores_path(project.cfg, method, scene_id).with_suffix(".json")
            assert json.loads(marker.read_text())["rows"] > 0


def test_one_recipe_reruns_only_that_method(project):
    project.repro()
    lock, trained = project.lock(), project.trained()
    project.set_params(**{"methods.ti_m.phases.phase1.lr": 1.0e-3})
    assert project.repro() == {"recipes", "train_generate@ti_m", "score@ti_m", "report"}
    assert project.lock()["train_generate@bas"] == lock["train_generate@bas"]
    assert project.lock()["score@bas"] == lock["score@bas"]
    now = project.trained()
    for scene_id in _scene_ids(project):
        assert now[("bas", scene_id)] == trained[("bas", scene_id)]
        assert now[("ti_m", scene_id)] == trained[("ti_m", scene_id)] + 1


def test_adding_a_scene_trains_only_the_new_scene(project):
    project.repro()
    before_scenes, trained = _scene_ids(project), project.trained()
    project.set_params(**{"scenes.num_scenes": 3})
    ran = project.repro()
    assert ran == {"scenes", "train_generate@bas", "train_generate@ti_m", "score@bas", "score@ti_m", "report"}
    [new_scene] = sorted(set(_scene_ids(project)) - set(before_scenes))
    now = project.trained()
    for method in METHODS:
        assert now[(method, new_scene)] == 1
        for scene_id in before_scenes:
            assert now[(method, scene_id)] == trained[(method, scene_id)]  # skipped, not retrained
        run = paths.run_dir(project.cfg, method, new_scene)
        assert (run / "done.json").exists()


def test_experiments_compare_params_and_metrics(project):
    project.repro()
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "workspace reproduced", check=False)
    trained = project.trained()
    project.run("dvc", "exp", "run", "-n", "crop80", "-S", "scoring.dino_crop_pct=0.8")
    assert project.trained() == trained  # an experiment on scoring never retrains
    shown = json.loads(project.run("dvc", "exp", "show", "--json").stdout)
    [baseline] = [entry for entry in shown if entry["rev"] != "workspace"]  # the commit the experiment ran on
    [experiment] = [rev for exp in baseline["experiments"] or [] for rev in exp["revs"] if rev["name"] == "crop80"]
    runs = {"HEAD": baseline["data"], "crop80": experiment["data"]}
    crop = {name: data["params"]["params.yaml"]["data"]["scoring"]["dino_crop_pct"] for name, data in runs.items()}
    assert crop == {"HEAD": 1.0, "crop80": 0.8}
    metrics = {name: data["metrics"]["reports/metrics.json"]["data"] for name, data in runs.items()}
    assert metrics["HEAD"]["bas"]["n_images"] == metrics["crop80"]["bas"]["n_images"] > 0
    assert metrics["HEAD"] != metrics["crop80"]  # DINO saw other crops
    params_diff = project.run("dvc", "params", "diff", "HEAD", "crop80").stdout
    assert "scoring.dino_crop_pct" in params_diff and "0.8" in params_diff
    assert "identity_similarity_fallback" in project.run("dvc", "metrics", "diff", "HEAD", "crop80").stdout
