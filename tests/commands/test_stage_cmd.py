"""`bas stage` on the command line."""

from __future__ import annotations

from pathlib import Path

from bas.cli import main
from bas.scenes import load_scenes
from bas.scenes.index import read_index

PARAMS = str(Path(__file__).resolve().parents[2] / "params.yaml")


def test_stage_writes_scenes_under_the_storage_root(coco_root, tmp_path, capsys):
    code = main(["--params", PARAMS, "-S", f"paths.storage_root={tmp_path}", "-S", "scenes.resolution=64",
                 "stage", "--coco-root", str(coco_root), "--split", "train2017", "--num-scenes", "2"])
    assert code == 0
    scenes = load_scenes(tmp_path / "scenes")
    assert [s.scene_id for s in scenes] == ["coco-train2017-142", "coco-train2017-623"]
    assert scenes[0].image.size == (64, 64)
    assert "2/2 scenes from" in capsys.readouterr().out
    assert len(read_index(tmp_path / "scenes" / "index.parquet")) == 4


def test_stage_to_out_dir_with_the_demo(tmp_path, capsys):
    code = main(["--params", PARAMS, "-S", "scenes.resolution=32", "stage", "--coco-root", "demo",
                 "--out", str(tmp_path / "elsewhere")])
    assert code == 0
    assert len(load_scenes(tmp_path / "elsewhere")) == 3
    assert "3/50 scenes from" in capsys.readouterr().out


def test_stage_errors_are_one_line_and_exit_2(tmp_path, capsys):
    code = main(["--params", PARAMS, "stage", "--coco-root", str(tmp_path / "missing"), "--out", str(tmp_path)])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"bas: error: --coco-root {tmp_path / 'missing'}: no such directory"
    (tmp_path / "root" / "train2017").mkdir(parents=True)
    code = main(["--params", PARAMS, "stage", "--coco-root", str(tmp_path / "root"), "--out", str(tmp_path)])
    assert code == 2
    assert "COCO annotations not found" in capsys.readouterr().err
