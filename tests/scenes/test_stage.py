"""stage_coco: idempotence, the index, bad inputs, the demo fallback."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bas.errors import DataError
from bas.scenes import add_scene, demo_root, load_scenes, make_user_scene, resolve_coco_root, stage_coco
from bas.scenes.index import INDEX_COLUMNS, read_index
from tests import params_defaults

from .conftest import rect, scenes_cfg, two_concept_image


def _file_states(directory: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(directory)): (p.stat().st_mtime_ns, p.stat().st_ino)
            for p in sorted(directory.rglob("*"))}


def _stage(builder, out, **changes):
    builder.write()
    return stage_coco(scenes_cfg(builder.root, builder.split, **changes), out)


def test_index_has_one_row_per_concept(coco, tmp_path):
    for image_id in (1, 2, 3):
        two_concept_image(coco, image_id)
    report = _stage(coco, tmp_path / "out")
    index = read_index(report.index_path)
    assert list(index.columns) == list(INDEX_COLUMNS)
    assert len(index) == 6
    row = index[(index.scene_id == "coco-train-2") & (index.concept_index == 1)].iloc[0]
    assert (row.image_id, row.file_name, row.class_name, row.category_id, row.num_concepts) == (
        2, "000000000002.jpg", "dog", 18, 2)
    assert row.coverage == pytest.approx(0.3, abs=0.03)
    assert row.content_hash == load_scenes(tmp_path / "out")[1].content_hash


def test_rerun_with_the_same_inputs_rewrites_nothing(coco, tmp_path):
    for image_id in (1, 2, 3):
        two_concept_image(coco, image_id)
    out = tmp_path / "out"
    first = _stage(coco, out)
    assert len(first.written) == 3 and first.index_written
    before = _file_states(out)
    second = _stage(coco, out)
    assert second.written == [] and second.unchanged == first.selected and not second.index_written
    assert _file_states(out) == before


def test_a_changed_scene_is_rewritten_alone(coco, tmp_path):
    for image_id in (1, 2):
        two_concept_image(coco, image_id)
    out = tmp_path / "out"
    _stage(coco, out)
    untouched = _file_states(out / "coco-train-2")
    coco.annotations[1]["segmentation"] = rect(60, 0, 110, 70)  # image 1's dog grows
    report = _stage(coco, out)
    assert report.written == ["coco-train-1"] and report.index_written
    assert _file_states(out / "coco-train-2") == untouched
    assert load_scenes(out)[0].coverages[1] == pytest.approx(0.35, abs=0.03)


def test_scenes_dropped_on_rerun_leave_the_index_but_keep_their_dirs(coco, tmp_path):
    for image_id in range(1, 6):
        two_concept_image(coco, image_id)
    out = tmp_path / "out"
    first = _stage(coco, out, num_scenes=3)
    second = _stage(coco, out, num_scenes=2)
    assert second.selected == first.selected[:2]
    assert second.dropped == [first.selected[2]]
    assert set(read_index(out / "index.parquet").scene_id) == set(second.selected)
    assert (out / first.selected[2] / "scene.json").exists()
    assert [s.scene_id for s in load_scenes(out)] == sorted(second.selected)


def test_staging_keeps_the_users_scenes_in_the_index(coco, tmp_path):
    two_concept_image(coco, 1)
    out = tmp_path / "out"
    _stage(coco, out)
    photo, mask = tmp_path / "photo.png", tmp_path / "cat.png"
    Image.new("RGB", (40, 40), (10, 20, 30)).save(photo)
    Image.fromarray(np.pad(np.full((20, 20), 255, np.uint8), 10), "L").save(mask)
    add_scene(make_user_scene(photo, [mask], "my-cat", 32), out)
    two_concept_image(coco, 2)
    report = _stage(coco, out)
    assert set(read_index(out / "index.parquet").scene_id) == {"coco-train-1", "coco-train-2", "my-cat"}
    assert report.dropped == []


def test_progress_and_skips_are_logged(coco, tmp_path, caplog):
    two_concept_image(coco, 1)
    two_concept_image(coco, 2)
    coco.write()
    coco.image_path(2).unlink()
    with caplog.at_level(logging.WARNING, logger="bas.scenes"):
        stage_coco(scenes_cfg(coco.root), tmp_path / "out")
    assert "skipped image 2 (000000000002.jpg): file not found" in caplog.text


# --------------------------------------------------------------------------- bad inputs


def test_missing_annotation_file_is_named(coco, tmp_path):
    two_concept_image(coco, 1)
    coco.write()
    coco.annotation_file.rename(coco.root / "annotations" / "instances_val.json")
    with pytest.raises(DataError, match=r"annotations not found: .*instances_train\.json \(found: instances_val\.json\)"):
        stage_coco(scenes_cfg(coco.root), tmp_path / "out")


def test_malformed_annotation_json_is_named(coco, tmp_path):
    two_concept_image(coco, 1)
    coco.write()
    coco.annotation_file.write_text('{"images": [')
    with pytest.raises(DataError, match=r"instances_train\.json are not valid JSON"):
        stage_coco(scenes_cfg(coco.root), tmp_path / "out")


@pytest.mark.parametrize("breakage, message", [
    (lambda d: d.pop("annotations"), r"instances_train\.json: missing top-level key 'annotations'"),
    (lambda d: d["images"][0].pop("file_name"), r"images\[0\] is missing key 'file_name'"),
    (lambda d: d["annotations"][1].pop("segmentation"), r"annotations\[1\] is missing key 'segmentation'"),
    (lambda d: d["categories"][2].pop("name"), r"categories\[2\] is missing key 'name'"),
    (lambda d: d["images"][0].update(width="wide"), r"images\[0\]: width = 'wide' has the wrong type"),
    (lambda d: d["images"].append(dict(d["images"][0])), r"images\[1\]: image id 1 appears twice"),
])
def test_missing_or_bad_keys_are_named(coco, tmp_path, breakage, message):
    two_concept_image(coco, 1)
    coco.write()
    data = json.loads(coco.annotation_file.read_text())
    breakage(data)
    coco.annotation_file.write_text(json.dumps(data))
    with pytest.raises(DataError, match=message):
        stage_coco(scenes_cfg(coco.root), tmp_path / "out")


def test_a_missing_or_unreadable_image_is_skipped_and_the_rest_staged(coco, tmp_path):
    for image_id in range(1, 6):
        two_concept_image(coco, image_id)
    coco.write()
    coco.image_path(2).unlink()
    coco.image_path(4).write_bytes(b"not a jpeg")
    report = stage_coco(scenes_cfg(coco.root), tmp_path / "out")
    assert sorted(report.selected) == ["coco-train-1", "coco-train-3", "coco-train-5"]
    reasons = {s.item: s.reason for s in report.skipped}
    assert "file not found" in reasons["image 2 (000000000002.jpg)"]
    assert "cannot read" in reasons["image 4 (000000000004.jpg)"]
    assert all(s.kind == "image" for s in report.skipped)


def test_an_image_of_another_size_than_its_entry_is_skipped(coco, tmp_path):
    two_concept_image(coco, 1)
    two_concept_image(coco, 2)
    coco.write()
    Image.new("RGB", (60, 50)).save(coco.image_path(2), format="JPEG")
    report = stage_coco(scenes_cfg(coco.root), tmp_path / "out")
    assert report.selected == ["coco-train-1"]
    assert "is 60x50" in report.skipped[0].reason and "says 120x100" in report.skipped[0].reason


def test_annotations_with_unknown_image_or_category_ids(coco, tmp_path):
    two_concept_image(coco, 1)
    two_concept_image(coco, 2)
    coco.ann(99, "cat", rect(0, 0, 10, 10), ann_id=7)  # no image 99
    coco.ann(2, 4242, rect(0, 0, 10, 10), ann_id=8)  # no category 4242
    report = _stage(coco, tmp_path / "out")
    assert report.selected == ["coco-train-1"]
    reasons = {s.item: s.reason for s in report.skipped}
    assert reasons["annotation 7"] == "image_id 99 is not in instances_train.json"
    assert "unknown category id [4242]" in reasons["image 2 (000000000002.jpg)"]


def test_degenerate_polygons_are_skipped_with_a_reason(coco, tmp_path):
    coco.image(1)
    coco.ann(1, "cat", [[10, 0, 60, 0]] + rect(10, 0, 60, 100)[0:1], ann_id=1)  # one 2-point part
    coco.ann(1, "dog", [[60, 0, 110, 0, 110, 100, 60, 100]], ann_id=2)
    coco.ann(1, "cup", [[10, 10, 50, 10, 90, 10]], ann_id=3)  # collinear: zero area
    coco.ann(1, "person", [[20, 20, 30]], ann_id=4)  # odd coordinate count
    report = _stage(coco, tmp_path / "out")
    assert report.selected == ["coco-train-1"]
    assert load_scenes(tmp_path / "out")[0].class_names == ["cat", "dog"]
    reasons = {s.item: s.reason for s in report.skipped}
    assert reasons["annotation 1 (image 1) polygon 0"].startswith("4 coordinates; a polygon needs >= 3")
    assert reasons["annotation 3 (image 1) polygon 0"] == "zero area"
    assert reasons["annotation 3 (image 1)"] == "no valid polygon"
    assert reasons["annotation 4 (image 1)"] == "no valid polygon"


def test_a_malformed_rle_is_skipped_with_a_reason(coco, tmp_path):
    two_concept_image(coco, 1)
    coco.ann(1, "cup", {"size": [50, 50], "counts": [10, 20]}, ann_id=77)
    report = _stage(coco, tmp_path / "out")
    assert report.selected == ["coco-train-1"]
    assert "RLE size [50, 50] does not match the image 100x120" in report.skipped[0].reason


def test_no_qualifying_scene_names_root_split_and_criteria(coco, tmp_path):
    coco.image(1)
    coco.ann(1, "cat", rect(10, 0, 60, 100))
    coco.ann(1, "dog", rect(60, 0, 65, 5))
    with pytest.raises(DataError) as err:
        _stage(coco, tmp_path / "out")
    message = str(err.value)
    assert f"no qualifying scene in COCO root {coco.root}, split 'train'" in message
    assert "exactly one non-crowd instance covering >= 15%" in message and "giraffe" in message
    assert not (tmp_path / "out" / "index.parquet").exists()


# --------------------------------------------------------------------------- demo fallback


def test_a_missing_coco_root_falls_back_to_the_demo(tmp_path, caplog):
    cfg = params_defaults.scenes(coco_root=str(tmp_path / "no-coco-here"), split="train2017", resolution=64)
    with caplog.at_level(logging.WARNING, logger="bas.scenes"):
        source = resolve_coco_root(cfg)
    assert source.is_demo and source.split == "demo" and source.root == demo_root()
    assert "no-coco-here not found; using the demo source" in caplog.text
    report = stage_coco(cfg, tmp_path / "out")
    scenes = {s.scene_id: s for s in load_scenes(tmp_path / "out")}
    assert report.selected == ["coco-demo-3", "coco-demo-2", "coco-demo-1"]  # rank order, seed 0
    assert scenes["coco-demo-1"].class_names == ["cup", "dining table"]
    assert scenes["coco-demo-2"].class_names == ["cat", "person"]
    assert scenes["coco-demo-3"].class_names == ["cat", "person", "cup"]
    for scene in scenes.values():
        assert min(scene.coverages) >= 0.15
    assert not report.skipped


def test_an_existing_root_is_used_as_configured(coco):
    two_concept_image(coco, 1)
    coco.write()
    source = resolve_coco_root(scenes_cfg(coco.root))
    assert (source.root, source.split, source.is_demo) == (coco.root, "train", False)
    assert resolve_coco_root(params_defaults.scenes(coco_root="demo")).is_demo


def test_demo_data_is_small_and_documented():
    root = demo_root()
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total < 1.5e6
    readme = (root / "README.md").read_text()
    for photo in ("astronaut", "chelsea", "coffee"):
        assert photo in readme
    assert "CC0" in readme and "public domain" in readme
