"""`bas scene add` on the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from bas.cli import main
from bas.scenes import load_scenes
from bas.scenes.index import read_index

PARAMS = str(Path(__file__).resolve().parents[2] / "params.yaml")


def _photo_and_masks(tmp_path):
    Image.new("RGB", (48, 32), (200, 100, 0)).save(tmp_path / "my photo.jpg")
    for name, columns in (("a", slice(8, 24)), ("b", slice(24, 40))):
        mask = np.zeros((32, 48), np.uint8)
        mask[:, columns] = 255
        Image.fromarray(mask, "L").save(tmp_path / f"{name}.png")


def test_scene_add_writes_the_scene_and_updates_the_index(tmp_path, capsys):
    _photo_and_masks(tmp_path)
    args = ["--params", PARAMS, "-S", f"paths.storage_root={tmp_path / 'store'}", "-S", "scenes.resolution=32",
            "scene", "add", "--image", str(tmp_path / "my photo.jpg"),
            "--mask", str(tmp_path / "a.png"), "--mask", str(tmp_path / "b.png"), "--names", "cat,dog"]
    assert main(args) == 0
    assert "scene my-photo (cat, dog) written" in capsys.readouterr().out
    (scene,) = load_scenes(tmp_path / "store" / "scenes")
    assert scene.class_names == ["cat", "dog"] and scene.image.size == (32, 32)
    assert main(args + ["--id", "second"]) == 0
    assert sorted(set(read_index(tmp_path / "store" / "scenes" / "index.parquet").scene_id)) == ["my-photo", "second"]


def test_scene_add_errors_name_the_file(tmp_path, capsys):
    _photo_and_masks(tmp_path)
    code = main(["--params", PARAMS, "scene", "add", "--image", str(tmp_path / "my photo.jpg"),
                 "--mask", str(tmp_path / "a.png"), "--names", "cat,dog", "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "my photo.jpg: 2 name(s) (cat, dog) for 1 mask file(s)" in err
    assert not (tmp_path / "out").exists()
