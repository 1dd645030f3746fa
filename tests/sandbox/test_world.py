"""The sandbox world: determinism, held-out identities, exact masks, and staging through COCO code."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest

from bas.config import load
from bas.sandbox import world
from bas.scenes import load_scenes, stage_coco
from bas.scenes.coco import sandbox_world_root
from tests import params_defaults


def test_novel_identities_are_a_fixed_fifth_and_leave_every_attribute_learnable():
    novel = world.novel_identities(0)
    assert novel == world.novel_identities(0)
    assert len(novel) == round(world.NOVEL_FRACTION * len(world.ALL_IDENTITIES)) == 24
    seen = world.seen_identities(0)
    assert not novel & set(seen) and len(seen) + len(novel) == 120
    assert {i.shape for i in seen} == set(world.SHAPES)
    assert {i.colour for i in seen} == set(world.COLOURS)
    assert {i.pattern for i in seen} == set(world.PATTERNS)
    assert world.novel_identities(1) != novel


def test_images_are_deterministic_given_the_seed():
    a = world.sample_training_image(np.random.default_rng(5), world.seen_identities(0))
    b = world.sample_training_image(np.random.default_rng(5), world.seen_identities(0))
    assert np.array_equal(a.image, b.image) and a.objects == b.objects and a.background == b.background
    c = world.sample_training_image(np.random.default_rng(6), world.seen_identities(0))
    assert not np.array_equal(a.image, c.image)


def test_masks_are_the_visible_pixels_painted_in_the_objects_colours():
    rng = np.random.default_rng(0)
    square = world.Identity("square", "red", "plain")
    circle = world.Identity("circle", "blue", "plain")
    scene = world.compose("snow", [square, circle], [(4, 4, 30), (20, 20, 30)], rng)
    red, blue = np.array(world.COLOURS["red"]), np.array(world.COLOURS["blue"])
    assert (scene.image[scene.masks[0]] == red).all()
    assert (scene.image[scene.masks[1]] == blue).all()
    assert not (scene.masks[0] & scene.masks[1]).any()           # the circle occludes the square
    full_square = world._shape_mask("square", 4, 4, 30)
    assert scene.masks[0].sum() < full_square.sum()
    # outside every mask the background shows: no object colour there
    outside = ~(scene.masks[0] | scene.masks[1])
    assert not (scene.image[outside] == red).all(axis=-1).any()


def test_patterns_use_a_second_colour_inside_the_shape():
    rng = np.random.default_rng(0)
    for pattern in world.PATTERNS:
        scene = world.compose("beach", [world.Identity("square", "yellow", pattern)], [(8, 8, 40)], rng)
        colours = {tuple(c) for c in scene.image[scene.masks[0]]}
        assert len(colours) == (1 if pattern == "plain" else 2), pattern


def test_captions_speak_the_templates_language():
    scene = world.compose("water", [world.Identity("star", "orange", "striped"), world.Identity("cross", "red", "plain")],
                          [(0, 0, 30), (30, 30, 30)], np.random.default_rng(0))
    assert scene.caption() == "a photo of an orange striped star and a red cross floating on top of water"
    # every context phrase is the tail of one protocol template
    params = load(Path(__file__).resolve().parents[2] / "params.yaml")
    templates = [t.replace("a photo of {tokens} ", "") for t in params.generation.templates]
    assert sorted(world.BACKGROUNDS.values()) == sorted(templates)
    dropped = scene.caption(random.Random(0), drop_attribute=1.0, drop_background=1.0)
    assert sorted(dropped.removeprefix("a photo of ").split(" and ")) == ["a cross", "a star"]


def test_training_images_never_hold_a_novel_identity():
    rng = np.random.default_rng(1)
    novel = world.novel_identities(0)
    for _ in range(200):
        scene = world.sample_training_image(rng, world.seen_identities(0))
        assert 1 <= len(scene.objects) <= 4 and not set(scene.objects) & novel
        assert all(mask.any() for mask in scene.masks)


def test_the_committed_world_is_what_write_coco_root_makes(tmp_path):
    fresh = world.write_coco_root(tmp_path / "world", "sandbox", 24, 0)
    committed = sandbox_world_root()
    for path in sorted((fresh).rglob("*.*")):
        twin = committed / path.relative_to(fresh)
        assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(twin.read_bytes()).digest(), path.name


def test_the_world_stages_through_the_coco_code_into_novel_object_scenes(tmp_path):
    cfg = params_defaults.scenes(coco_root="sandbox", split="sandbox", resolution=64, num_scenes=50, excluded_classes=())
    report = stage_coco(cfg, tmp_path / "scenes")
    scenes = load_scenes(tmp_path / "scenes")
    assert len(report.written) == len(scenes) == 24 and not report.skipped
    data = json.loads((sandbox_world_root() / "annotations" / "instances_sandbox.json").read_text())
    novel_keys = {i.key for i in world.novel_identities(0)}
    assert {a["sandbox_identity"] for a in data["annotations"]} <= novel_keys
    for scene in scenes:
        assert scene.resolution == 64 and 2 <= len(scene.masks) <= 3
        assert len(set(scene.class_names)) == len(scene.class_names)
        assert set(scene.class_names) <= set(world.SHAPES)
        assert all(np.asarray(m).astype(bool).mean() >= 0.15 for m in scene.masks)
