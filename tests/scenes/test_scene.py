"""The Scene format on disk: write, load, validate, content hash."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from bas.errors import DataError
from bas.scenes import Scene, load_scene, load_scenes, write_scene
from bas.scenes.index import frame, scene_rows, write_index
from bas.scenes.scene import compute_content_hash, make_scene


def _scene(scene_id="s1", names=("cat", "dog"), shift=0) -> Scene:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    left = np.zeros((16, 16), bool)
    left[:, : 8 + shift] = True
    right = np.zeros((16, 16), bool)
    right[4:12, 10:] = True
    return make_scene(scene_id, image, [left, right], list(names), [17, 18],
                      {"kind": "coco", "coco_root": "x", "split": "s", "image_id": 1, "file_name": "a.jpg"})


def test_write_then_load_gives_the_same_scene(tmp_path):
    scene = _scene()
    assert write_scene(scene, tmp_path / "s1")
    loaded = load_scene(tmp_path / "s1")
    assert loaded.scene_id == "s1" and loaded.path == tmp_path / "s1"
    assert loaded.class_names == ["cat", "dog"] and loaded.category_ids == [17, 18]
    assert loaded.content_hash == scene.content_hash
    assert np.array_equal(np.asarray(loaded.image), np.asarray(scene.image))
    assert all(np.array_equal(a, b) for a, b in zip(loaded.masks, scene.masks))
    assert loaded.masks[0].dtype == bool and loaded.source == scene.source
    meta = json.loads((tmp_path / "s1" / "scene.json").read_text())
    assert meta["resolution"] == 16 and meta["concepts"][1]["mask"] == "mask_1.png"
    assert meta["concepts"][0]["coverage"] == pytest.approx(0.5)
    mask = Image.open(tmp_path / "s1" / "mask_0.png")
    assert mask.mode == "L" and set(np.unique(np.asarray(mask))) == {0, 255}


def test_content_hash_covers_pixels_masks_and_names_only():
    base = _scene()
    assert _scene(names=("cat", "puppy")).content_hash != base.content_hash
    assert _scene(shift=1).content_hash != base.content_hash
    other_image = base.image.copy()
    other_image.putpixel((0, 0), (0, 0, 0) if base.image.getpixel((0, 0)) != (0, 0, 0) else (1, 1, 1))
    assert compute_content_hash(other_image, base.masks, base.class_names) != base.content_hash
    moved = _scene(scene_id="elsewhere")
    assert moved.content_hash == base.content_hash  # id and source are not content


def test_writing_the_same_content_again_touches_nothing(tmp_path):
    write_scene(_scene(), tmp_path / "s1")
    states = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in (tmp_path / "s1").iterdir()}
    assert not write_scene(_scene(), tmp_path / "s1")
    assert states == {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in (tmp_path / "s1").iterdir()}
    assert write_scene(_scene(shift=2), tmp_path / "s1")
    assert load_scene(tmp_path / "s1").content_hash == _scene(shift=2).content_hash
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s1"]  # no temporary leftovers


def test_a_damaged_scene_is_rewritten_whole(tmp_path):
    write_scene(_scene(), tmp_path / "s1")
    (tmp_path / "s1" / "mask_1.png").unlink()
    assert write_scene(_scene(), tmp_path / "s1")
    assert load_scene(tmp_path / "s1").content_hash == _scene().content_hash


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "scene.json").unlink(), r"not a scene directory: .*s1/scene\.json is missing"),
    (lambda d: (d / "scene.json").write_text("{"), r"s1/scene\.json is not valid JSON"),
    (lambda d: (d / "mask_1.png").unlink(), r"scene file missing: .*s1/mask_1\.png"),
    (lambda d: (d / "image.png").write_bytes(b"junk"), r"scene file .*s1/image\.png is not a readable image"),
    (lambda d: Image.new("L", (16, 16), 128).save(d / "mask_0.png"), r"s1/mask_0\.png: values other than 0 and 255"),
    (lambda d: Image.new("L", (16, 16), 0).save(d / "mask_0.png"), r"s1/mask_0\.png: empty mask"),
    (lambda d: Image.new("L", (8, 8), 255).save(d / "mask_0.png"), r"s1/mask_0\.png: size \(8, 8\)"),
    (lambda d: Image.new("RGB", (16, 16)).save(d / "mask_0.png"), r"s1/mask_0\.png: mode RGB"),
    (lambda d: Image.new("RGB", (16, 16)).save(d / "image.png"), r"s1: files do not match the content_hash"),
])
def test_load_errors_name_the_file(tmp_path, damage, message):
    write_scene(_scene(), tmp_path / "s1")
    damage(tmp_path / "s1")
    with pytest.raises(DataError, match=message):
        load_scene(tmp_path / "s1")


def test_load_scene_checks_json_keys_and_directory_name(tmp_path):
    write_scene(_scene(), tmp_path / "s1")
    (tmp_path / "s1").rename(tmp_path / "s2")
    with pytest.raises(DataError, match=r"scene_id 's1' differs from its directory name"):
        load_scene(tmp_path / "s2")
    meta = json.loads((tmp_path / "s2" / "scene.json").read_text())
    del meta["concepts"][0]["class_name"]
    (tmp_path / "s2" / "scene.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"concepts\[0\] is missing key 'class_name'"):
        load_scene(tmp_path / "s2")


def test_load_scenes_follows_the_index_and_sorts_by_id(tmp_path):
    scenes = [_scene("b"), _scene("a"), _scene("c")]
    for scene in scenes:
        write_scene(scene, tmp_path / scene.scene_id)
    # Without an index: every scene directory, sorted.
    assert [s.scene_id for s in load_scenes(tmp_path)] == ["a", "b", "c"]
    # With one: only the scenes it lists.
    write_index(tmp_path / "index.parquet", frame(scene_rows(scenes[0]) + scene_rows(scenes[2])))
    assert [s.scene_id for s in load_scenes(tmp_path)] == ["b", "c"]
    (tmp_path / "c" / "scene.json").unlink()
    with pytest.raises(DataError, match=r"c/scene\.json is missing"):
        load_scenes(tmp_path)


def test_load_scenes_of_a_missing_directory_says_what_to_run(tmp_path):
    with pytest.raises(DataError, match=r"scenes directory not found: .*nowhere \(run `bas stage` first\)"):
        load_scenes(tmp_path / "nowhere")


@pytest.mark.parametrize("bad", ["", ".hidden", "a/b", "a b", "ü", "x" * 129])
def test_unsafe_scene_ids_are_refused(bad):
    with pytest.raises(DataError, match="is not allowed"):
        _scene(scene_id=bad)
