"""The orchestration commands' argument and params checks (no Prefect server needed)."""

from __future__ import annotations

import json
from pathlib import Path

from bas.cli import main

PARAMS = str(Path(__file__).resolve().parents[2] / "params.yaml")


def test_deploy_and_worker_need_a_gpu_pool(capsys):
    for command in (["deploy"], ["worker", "--name", "w1"]):
        assert main(["--params", PARAMS, *command]) == 2
        assert "orchestration.work_pool is null" in capsys.readouterr().err


def test_deploy_refuses_the_controller_pool_as_gpu_pool(capsys):
    code = main(["--params", PARAMS, "-S", "orchestration.work_pool=bas-controller", "deploy", "--pools-only"])
    assert code == 2
    assert "controller_pool = 'bas-controller' is the GPU pool" in capsys.readouterr().err


def test_train_generate_names_an_unknown_method_before_starting_prefect(capsys):
    assert main(["--params", PARAMS, "train-generate", "--method", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'nope'" in err and "bas" in err


def test_recipes_writes_one_resolved_recipe_per_method(tmp_path, capsys):
    code = main(["--params", PARAMS, "-S", f"paths.storage_root={tmp_path}", "-S", "orchestration.methods=[bas, ti_m]",
                 "recipes"])
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "recipes").iterdir()) == ["bas.json", "ti_m.json"]
    ti_m = json.loads((tmp_path / "recipes" / "ti_m.json").read_text())["recipe"]
    assert "include" not in ti_m and ti_m["prior_preservation"] is False
    assert "2 written" in capsys.readouterr().out
