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


def test_recipes_show_the_successors_resolved_numbers(tmp_path):
    """The numbers taken from the official codes, as the recipe files (and so DVC) see them."""
    code = main(["--params", PARAMS, "-S", f"paths.storage_root={tmp_path}",
                 "-S", "orchestration.methods=[mifo, tl_soft, sne]", "recipes"])
    assert code == 0
    read = lambda m: json.loads((tmp_path / "recipes" / f"{m}.json").read_text())["recipe"]  # noqa: E731
    mifo, tl, sne = read("mifo"), read("tl_soft"), read("sne")
    assert (mifo["token_init"], mifo["prior_prompt"]) == ("mean", "a photo of a chair")
    assert mifo["attention_terms"]["penalty_16"]["timestep_source"] == "class_image"
    assert (tl["token_init"], tl["prior_num_images"], tl["phases"]["phase2"]["lr"]) == ("word:sks", 200, 6e-5)
    assert (sne["phases"]["phase2"]["steps"], sne["token_init"]) == (200, "class_name")
