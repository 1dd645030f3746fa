"""COCO selection rules (PROTOCOL.md sec. 1), on fake roots and on the real COCO sample."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from bas.errors import DataError
from bas.scenes import load_scenes, stage_coco
from bas.scenes.coco import (CocoSource, crop_box, rank_key, ranked_image_ids, read_annotations,
                             select_concepts)
from tests import params_defaults

from .conftest import rect, scenes_cfg, two_concept_image


def _stage(builder, out, **changes):
    builder.write()
    return stage_coco(scenes_cfg(builder.root, builder.split, **changes), out)


def test_crop_box_is_the_centre_square():
    assert crop_box(640, 480) == (80, 0, 480)
    assert crop_box(375, 500) == (0, 62, 375)
    assert crop_box(7, 7) == (0, 0, 7)


def test_concepts_are_ordered_largest_first_with_their_classes(coco, tmp_path):
    coco.image(1)
    coco.ann(1, "dog", rect(60, 0, 110, 60))  # 30% of the 100x100 crop
    coco.ann(1, "cat", rect(10, 0, 60, 100))  # 50%
    report = _stage(coco, tmp_path / "out")
    (scene,) = load_scenes(tmp_path / "out")
    assert report.selected == ["coco-train-1"]
    assert scene.class_names == ["cat", "dog"]
    assert scene.category_ids == [17, 18]
    assert scene.coverages[0] == pytest.approx(0.5, abs=0.03)
    assert scene.coverages[1] == pytest.approx(0.3, abs=0.03)
    # The cat is the left half of the crop: its mask is on the left of the 32x32 scene.
    assert scene.masks[0][:, :14].all() and not scene.masks[0][:, 18:].any()
    assert scene.image.size == (32, 32)


def test_area_is_measured_inside_the_crop(coco, tmp_path):
    coco.image(1)  # 120x100: the crop drops x < 10 and x >= 110
    coco.ann(1, "cat", rect(10, 0, 60, 100))
    coco.ann(1, "dog", rect(0, 0, 22, 100))  # 22% of the image, 12% inside the crop
    coco.image(2)
    coco.ann(2, "cat", rect(10, 0, 60, 100))
    coco.ann(2, "dog", rect(0, 0, 27, 100))  # 17% inside the crop
    report = _stage(coco, tmp_path / "out")
    assert report.selected == ["coco-train-2"]


def test_min_area_fraction_is_a_lower_bound(coco, tmp_path):
    coco.image(1, 100, 100)
    coco.ann(1, "cat", rect(0, 0, 50, 100))
    coco.ann(1, "dog", rect(50, 0, 100, 40))  # exactly 20% after rasterisation
    cfg = scenes_cfg(coco.write(), "train", min_area_fraction=0.2)
    coco_ann = read_annotations(CocoSource(coco.root, "train"))
    area = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(rect(50, 0, 100, 40), 100, 100))).sum()
    assert area == 2000
    assert select_concepts(coco_ann, coco_ann.images[1], cfg, []) is not None
    cfg_higher = scenes_cfg(coco.root, "train", min_area_fraction=0.21)
    assert select_concepts(coco_ann, coco_ann.images[1], cfg_higher, []) is None


def test_a_class_with_two_large_instances_is_not_a_concept(coco, tmp_path):
    coco.image(1)
    coco.ann(1, "cat", rect(10, 0, 40, 100))  # 30%
    coco.ann(1, "cat", rect(40, 0, 70, 100))  # 30%: two cats -> "cat" names no single object
    coco.ann(1, "dog", rect(70, 0, 110, 100))
    coco.ann(1, "cup", rect(10, 0, 110, 20))  # overlaps, 20%
    coco.image(2)
    coco.ann(2, "cat", rect(10, 0, 60, 100))
    coco.ann(2, "cat", rect(60, 0, 70, 10))  # a small second cat does not count
    coco.ann(2, "dog", rect(60, 0, 110, 100))
    report = _stage(coco, tmp_path / "out")
    scenes = {s.scene_id: s for s in load_scenes(tmp_path / "out")}
    assert report.selected == sorted(report.selected, key=lambda s: rank_key(0, int(s.split("-")[-1])))
    assert scenes["coco-train-1"].class_names == ["dog", "cup"]
    assert scenes["coco-train-2"].class_names == ["cat", "dog"]


def test_crowd_annotations_are_never_concepts_nor_counted(coco, tmp_path):
    coco.image(1)
    coco.ann(1, "person", rect(10, 0, 110, 100), iscrowd=1)  # a crowd over the whole crop
    coco.ann(1, "person", rect(10, 0, 60, 100))  # one large person: still distinct
    coco.ann(1, "cat", rect(60, 0, 110, 100))
    coco.image(2)
    coco.ann(2, "dog", rect(10, 0, 60, 100), iscrowd=1)  # crowd alone is no concept
    coco.ann(2, "cat", rect(60, 0, 110, 100))
    report = _stage(coco, tmp_path / "out")
    (scene,) = load_scenes(tmp_path / "out")
    assert report.selected == ["coco-train-1"]
    assert scene.class_names == ["person", "cat"]  # equal areas: lower annotation id first


def test_excluded_classes_are_dropped(coco, tmp_path):
    coco.image(1)
    coco.ann(1, "banana", rect(10, 0, 60, 100))
    coco.ann(1, "giraffe", rect(60, 0, 110, 50))
    coco.ann(1, "cat", rect(60, 50, 110, 100))
    coco.image(2)
    coco.ann(2, "banana", rect(10, 0, 40, 100))
    coco.ann(2, "cat", rect(40, 0, 75, 100))
    coco.ann(2, "dog", rect(75, 0, 110, 100))
    _stage(coco, tmp_path / "out")
    assert [s.class_names for s in load_scenes(tmp_path / "out")] == [["cat", "dog"]]
    # With nothing excluded, image 1 qualifies too.
    report = _stage(coco, tmp_path / "out2", excluded_classes=())
    assert set(report.selected) == {"coco-train-1", "coco-train-2"}


def test_above_max_concepts_the_largest_are_kept(coco, tmp_path):
    coco.image(1, 100, 100)
    coco.ann(1, "person", rect(0, 0, 30, 100), ann_id=5)  # 30%
    coco.ann(1, "dog", rect(30, 0, 50, 100), ann_id=4)  # 20%, ties with cup and chair
    coco.ann(1, "cup", rect(50, 0, 70, 100), ann_id=3)  # 20%
    coco.ann(1, "chair", rect(70, 0, 90, 100), ann_id=2)  # 20%
    report = _stage(coco, tmp_path / "out", max_concepts=3)
    (scene,) = load_scenes(tmp_path / "out")
    assert report.selected == ["coco-train-1"]
    # Ties in area go to the lower annotation id: chair (2), cup (3) before dog (4).
    assert scene.class_names == ["person", "chair", "cup"]
    _stage(coco, tmp_path / "out4", max_concepts=4)
    assert load_scenes(tmp_path / "out4")[0].class_names == ["person", "chair", "cup", "dog"]


def test_rle_segmentations_are_concepts(coco, tmp_path):
    coco.image(1)
    dog = np.zeros((100, 120), dtype=np.uint8)
    dog[:, 60:110] = 1
    compressed = mask_utils.encode(np.asfortranarray(dog))
    coco.ann(1, "dog", {"size": [100, 120], "counts": compressed["counts"].decode("ascii")})
    cat = np.zeros((100, 120), dtype=np.uint8)
    cat[:, 10:60] = 1
    flat = cat.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()  # starts with zeros
    coco.ann(1, "cat", {"size": [100, 120], "counts": runs})
    _stage(coco, tmp_path / "out")
    (scene,) = load_scenes(tmp_path / "out")
    assert sorted(scene.class_names) == ["cat", "dog"]
    assert all(c == pytest.approx(0.5, abs=0.03) for c in scene.coverages)


def test_rank_depends_on_seed_and_image_id_only():
    assert rank_key(0, 42) == rank_key(0, 42)
    assert rank_key(0, 42) != rank_key(1, 42)
    assert len(rank_key(0, 42)) == 64


def test_selection_seed_changes_the_order(coco, tmp_path):
    for image_id in range(1, 9):
        two_concept_image(coco, image_id)
    first = _stage(coco, tmp_path / "a", num_scenes=3, selection_seed=0).selected
    again = _stage(coco, tmp_path / "b", num_scenes=3, selection_seed=0).selected
    other = _stage(coco, tmp_path / "c", num_scenes=3, selection_seed=1).selected
    assert first == again
    assert first != other
    ids = [int(s.split("-")[-1]) for s in first]
    assert ids == sorted(range(1, 9), key=lambda i: rank_key(0, i))[:3]


def test_adding_images_does_not_reshuffle_the_chosen_scenes(coco, tmp_path):
    for image_id in range(1, 31):
        two_concept_image(coco, image_id)
    full_images, full_anns = list(coco.images), list(coco.annotations)
    # The source first holds every third image, then all of them.
    coco.images = [i for i in full_images if i["id"] % 3 == 0]
    coco.annotations = [a for a in full_anns if a["image_id"] % 3 == 0]
    small = _stage(coco, tmp_path / "small", num_scenes=5)
    coco.images, coco.annotations = full_images, full_anns
    big = _stage(coco, tmp_path / "big", num_scenes=5)
    _assert_stable(small.selected, big.selected, tmp_path / "small", tmp_path / "big", seed=0)


def _assert_stable(small: list[str], big: list[str], small_dir: Path, big_dir: Path, seed: int) -> None:
    rank = {s: rank_key(seed, int(s.split("-")[-1])) for s in small + big}
    last = max(rank[s] for s in big)
    still_in_top = [s for s in small if rank[s] <= last]
    assert still_in_top, "the test needs overlap between the two selections"
    assert [s for s in big if s in small] == still_in_top
    for scene_id in still_in_top:
        for file in sorted((small_dir / scene_id).iterdir()):
            assert file.read_bytes() == (big_dir / scene_id / file.name).read_bytes(), file


# --------------------------------------------------------------------------- real COCO sample

# Verified by eye on crops with the masks overlaid (docs/SCENES.md): id -> (classes, coverages).
SAMPLE_SCENES = {
    "coco-train2017-142": (["sandwich", "bottle"], [0.211, 0.153]),
    "coco-train2017-623": (["teddy bear", "person"], [0.604, 0.277]),
    "coco-train2017-650": (["cat", "car"], [0.320, 0.232]),
    "coco-train2017-394": (["dog", "frisbee"], [0.561, 0.200]),
    "coco-train2017-599": (["couch", "cat"], [0.514, 0.384]),
}


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return xs.mean() / mask.shape[1], ys.mean() / mask.shape[0]


@pytest.fixture(scope="module")
def sample_scenes(coco_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "scenes"
    report = stage_coco(params_defaults.scenes(coco_root=str(coco_root), split="train2017", resolution=128), out)
    return report, {s.scene_id: s for s in load_scenes(out)}


def test_sample_selects_the_verified_scenes(sample_scenes):
    report, scenes = sample_scenes
    # Only these five of the 64 images qualify; they come in rank order.
    assert report.selected == list(SAMPLE_SCENES)
    for scene_id, (classes, coverages) in SAMPLE_SCENES.items():
        scene = scenes[scene_id]
        assert scene.class_names == classes, scene_id
        assert scene.coverages == pytest.approx(coverages, abs=0.01), scene_id
    assert scenes["coco-train2017-142"].category_ids == [54, 44]
    assert scenes["coco-train2017-142"].source["file_name"] == "000000000142.jpg"
    assert not report.skipped


def test_sample_masks_sit_where_the_objects_are(sample_scenes):
    _, scenes = sample_scenes
    # 650: the cat sits on the roof of a car that fills the bottom of the crop.
    cat, car = (_centroid(m) for m in scenes["coco-train2017-650"].masks)
    assert car[1] > 0.75 and cat[1] < car[1] - 0.2
    # 623: the teddy bear fills the left, the woman is on the right.
    bear, person = (_centroid(m) for m in scenes["coco-train2017-623"].masks)
    assert bear[0] < 0.5 < person[0]
    # 394: the dog holds a purple frisbee in its mouth, right of the image centre. COCO's dog
    # polygon runs over the frisbee, and masks are kept as COCO draws them (docs/SCENES.md).
    dog, frisbee = scenes["coco-train2017-394"].masks
    assert _centroid(frisbee)[0] > 0.55
    assert (dog & frisbee).sum() / frisbee.sum() > 0.9
    # 142: the sandwich (banana slices on it are excluded as "banana") is at the bottom,
    # the jar ("bottle") at the top right.
    sandwich, bottle = (_centroid(m) for m in scenes["coco-train2017-142"].masks)
    assert sandwich[1] > 0.6 and bottle[1] < 0.4 and bottle[0] > 0.5


def test_sample_rejects_images_for_the_documented_reasons(coco_root):
    coco = read_annotations(CocoSource(coco_root, "train2017"))
    cfg = params_defaults.scenes(coco_root=str(coco_root), split="train2017")
    # 110: two large people; 263: two large elephants; 387: two large laptops.
    for image_id in (110, 263, 387):
        assert select_concepts(coco, coco.images[image_id], cfg, []) is None, image_id
    # 142 without the exclusion list gains "banana" (slices on the sandwich) as a third concept.
    wider = params_defaults.scenes(coco_root=str(coco_root), split="train2017", excluded_classes=())
    candidate = select_concepts(coco, coco.images[142], wider, [])
    assert [coco.categories[c.category_id] for c in candidate.concepts] == ["sandwich", "bottle", "banana"]
    # 257 has a crowd of people: crowds are never concepts.
    assert any(a["iscrowd"] for a in coco.annotations_by_image[257])


def test_sample_ranking_is_stable_when_images_are_added(coco_root, tmp_path):
    source = json.loads((coco_root / "annotations" / "instances_train2017.json").read_text())
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "train2017").symlink_to(coco_root / "train2017")
    annotation_file = root / "annotations" / "instances_train2017.json"
    # First without image 623 (the second-ranked qualifying image), then the full sample.
    subset = dict(source, images=[i for i in source["images"] if i["id"] != 623],
                  annotations=[a for a in source["annotations"] if a["image_id"] != 623])
    annotation_file.write_text(json.dumps(subset))
    cfg = params_defaults.scenes(coco_root=str(root), split="train2017", num_scenes=3, resolution=64)
    small = stage_coco(cfg, tmp_path / "small")
    annotation_file.write_text(json.dumps(source))
    big = stage_coco(cfg, tmp_path / "big")
    assert small.selected == ["coco-train2017-142", "coco-train2017-650", "coco-train2017-394"]
    assert big.selected == ["coco-train2017-142", "coco-train2017-623", "coco-train2017-650"]
    _assert_stable(small.selected, big.selected, tmp_path / "small", tmp_path / "big", seed=0)


def test_sample_num_scenes_takes_a_prefix_of_the_ranking(coco_root, tmp_path):
    cfg = params_defaults.scenes(coco_root=str(coco_root), split="train2017", num_scenes=2, resolution=32)
    assert stage_coco(cfg, tmp_path / "two").selected == list(SAMPLE_SCENES)[:2]
    coco = read_annotations(CocoSource(coco_root, "train2017"))
    ranked = ranked_image_ids(coco, 0)
    assert [ranked.index(int(s.split("-")[-1])) for s in SAMPLE_SCENES] == sorted(
        ranked.index(int(s.split("-")[-1])) for s in SAMPLE_SCENES)


def test_sample_staging_copes_with_a_deleted_image(coco_root, tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(coco_root / "annotations", root / "annotations")
    (root / "train2017").mkdir()
    for image in (coco_root / "train2017").iterdir():
        if image.name != "000000000623.jpg":
            (root / "train2017" / image.name).symlink_to(image)
    cfg = params_defaults.scenes(coco_root=str(root), split="train2017", num_scenes=3, resolution=32)
    report = stage_coco(cfg, tmp_path / "out")
    assert report.selected == ["coco-train2017-142", "coco-train2017-650", "coco-train2017-394"]
    assert [(s.kind, s.item) for s in report.skipped] == [("image", "image 623 (000000000623.jpg)")]
    assert "file not found" in report.skipped[0].reason


def test_missing_split_directory_is_named(coco, tmp_path):
    two_concept_image(coco, 1)
    coco.write()
    shutil.rmtree(coco.root / "train")
    with pytest.raises(DataError, match=r"image directory not found: .*coco/train"):
        stage_coco(scenes_cfg(coco.root), tmp_path / "out")
