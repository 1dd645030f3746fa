"""A user's own scene from a photo and mask files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bas.errors import DataError
from bas.scenes import add_scene, load_scene, load_scenes, make_user_scene
from bas.scenes.index import read_index
from bas.scenes.user import default_scene_id


@pytest.fixture
def photo(tmp_path):
    """A 60x40 photo: left half red, right half blue; masks for each half."""
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :30] = (255, 0, 0)
    pixels[:, 30:] = (0, 0, 255)
    path = tmp_path / "photo.png"
    Image.fromarray(pixels).save(path)
    left = np.zeros((40, 60), np.uint8)
    left[:, 10:30] = 255
    right = np.zeros((40, 60), np.uint8)
    right[10:30, 30:50] = 255
    Image.fromarray(left, "L").save(tmp_path / "red.png")
    Image.fromarray(right, "L").save(tmp_path / "blue.png")
    return path


def test_user_scene_is_cropped_and_resized_like_coco(tmp_path, photo):
    scene = make_user_scene(photo, [tmp_path / "red.png", tmp_path / "blue.png"], "mine", 20)
    assert scene.image.size == (20, 20)
    assert scene.class_names == ["red", "blue"]  # default names: the mask file names
    assert scene.category_ids == [None, None]
    # Crop x 10..50: the red mask is the left half, the blue one a square on the right.
    assert scene.masks[0][:, :10].all() and not scene.masks[0][:, 10:].any()
    assert scene.coverages[1] == pytest.approx(0.25)
    assert np.asarray(scene.image)[10, 2].tolist() == [255, 0, 0]
    assert scene.source == {"kind": "user", "image": str(photo),
                            "masks": [str(tmp_path / "red.png"), str(tmp_path / "blue.png")]}


def test_names_are_taken_in_order(tmp_path, photo):
    scene = make_user_scene(photo, [tmp_path / "red.png", tmp_path / "blue.png"], "mine", 20,
                            names=["tomato", "blue car"])
    assert scene.class_names == ["tomato", "blue car"]


def test_alpha_masks_are_read_from_their_alpha_channel(tmp_path, photo):
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere: grey levels alone would say "all of it"
    rgba[:, 30:, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cutout.png")
    scene = make_user_scene(photo, [tmp_path / "cutout.png"], "cut", 20)
    assert scene.coverages == [pytest.approx(0.5)]


def test_add_scene_writes_and_indexes_and_refuses_to_overwrite(tmp_path, photo):
    out = tmp_path / "scenes"
    scene = make_user_scene(photo, [tmp_path / "red.png", tmp_path / "blue.png"], "mine", 20)
    assert add_scene(scene, out)
    assert not add_scene(scene, out)  # the same content again: nothing changes
    index = read_index(out / "index.parquet")
    assert index.scene_id.tolist() == ["mine", "mine"]
    assert index.source_kind.tolist() == ["user", "user"] and index.image_id.isna().all()
    assert index.file_name.tolist() == ["photo.png", "photo.png"]
    assert load_scene(out / "mine").class_names == ["red", "blue"]
    other = make_user_scene(photo, [tmp_path / "red.png"], "mine", 20)
    with pytest.raises(DataError, match="already exists .* pass --replace"):
        add_scene(other, out)
    assert add_scene(other, out, replace=True)
    assert [s.class_names for s in load_scenes(out)] == [["red"]]
    assert len(read_index(out / "index.parquet")) == 1


def test_empty_mask_is_named(tmp_path, photo):
    Image.new("L", (60, 40), 0).save(tmp_path / "empty.png")
    with pytest.raises(DataError, match=r"mask .*empty\.png is empty"):
        make_user_scene(photo, [tmp_path / "empty.png"], "mine", 20)


def test_mask_outside_the_crop_is_named(tmp_path, photo):
    edge = np.zeros((40, 60), np.uint8)
    edge[:, :5] = 255
    Image.fromarray(edge, "L").save(tmp_path / "edge.png")
    with pytest.raises(DataError, match=r"mask .*edge\.png lies outside the centre square crop"):
        make_user_scene(photo, [tmp_path / "edge.png"], "mine", 20)


def test_mask_of_another_size_is_named(tmp_path, photo):
    Image.new("L", (40, 40), 255).save(tmp_path / "small.png")
    with pytest.raises(DataError, match=r"mask .*small\.png is 40x40, the image .*photo\.png is 60x40"):
        make_user_scene(photo, [tmp_path / "small.png"], "mine", 20)


def test_unreadable_files_are_named(tmp_path, photo):
    (tmp_path / "junk.png").write_bytes(b"nope")
    with pytest.raises(DataError, match=r"mask file .*junk\.png is not a readable image"):
        make_user_scene(photo, [tmp_path / "junk.png"], "mine", 20)
    with pytest.raises(DataError, match=r"image file not found: .*missing\.jpg"):
        make_user_scene(tmp_path / "missing.jpg", [tmp_path / "red.png"], "mine", 20)
    with pytest.raises(DataError, match=r"mask file not found: .*gone\.png"):
        make_user_scene(photo, [tmp_path / "gone.png"], "mine", 20)


def test_names_count_must_match_masks(tmp_path, photo):
    with pytest.raises(DataError, match=r"photo\.png: 1 name\(s\) \(cat\) for 2 mask file\(s\)"):
        make_user_scene(photo, [tmp_path / "red.png", tmp_path / "blue.png"], "mine", 20, names=["cat"])
    with pytest.raises(DataError, match=r"blue\.png: empty concept name"):
        make_user_scene(photo, [tmp_path / "red.png", tmp_path / "blue.png"], "mine", 20, names=["cat", " "])


@pytest.mark.parametrize("bad", ["../up", "with space", "coco-train2017-1"])
def test_user_scene_ids_are_checked(tmp_path, photo, bad):
    with pytest.raises(DataError, match="not allowed|kept for COCO scenes"):
        make_user_scene(photo, [tmp_path / "red.png"], bad, 20)


def test_default_scene_id_is_safe():
    assert default_scene_id("/x/My Photo (1).JPG") == "My-Photo--1"
    assert default_scene_id("coco-train2017-5.png") == "user-coco-train2017-5"
    assert default_scene_id("éé.png") == "scene"
