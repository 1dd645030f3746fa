"""The sandbox segmenter and judge: data truth, segment splitting, reproducible resumable training,
saved weights that predict what the trained ones did, and the scorer picking the segmenter."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from bas.config import Config, SandboxStage
from bas.errors import ModelNotAvailableError
from bas.sandbox import classifiers as C
from bas.sandbox import world
from bas.scoring.segment import MaskFormerSegmenter, Segmentation, make_segmenter
from tests import params_defaults


def tiny_config(steps: int = 4) -> Config:
    stage = SandboxStage(steps=steps, batch_size=2, lr=1e-3, warmup_steps=1)
    return params_defaults.config_with(sandbox=params_defaults.sandbox(segmenter=stage, judge=stage))


# --------------------------------------------------------------------------- data


def test_segmenter_scenes_label_each_visible_object_pixel_with_its_shape():
    rng = np.random.default_rng(3)
    for _ in range(20):
        scene = C.segmenter_scene(rng)
        labels = C.class_map(scene)
        for identity, mask in zip(scene.objects, scene.masks):
            assert (labels[mask] == C.SEGMENTER_CLASSES.index(identity.shape)).all()
        assert (labels[~np.logical_or.reduce(scene.masks)] == 0).all()


def test_judge_targets_name_the_scene_and_its_single_object():
    rng = np.random.default_rng(4)
    scenes = [C.judge_scene(rng) for _ in range(8)]
    targets = C.judge_targets(scenes)
    for b, scene in enumerate(scenes):
        assert len(scene.objects) == 1
        obj = scene.objects[0]
        got = {head: C.JUDGE_HEADS[head][int(targets[head][b])] for head in C.JUDGE_HEADS}
        assert got == {"background": scene.background, "shape": obj.shape, "colour": obj.colour,
                       "pattern": obj.pattern}


# --------------------------------------------------------------------------- segments


def test_split_instances_gives_one_segment_per_component_and_drops_specks():
    names = C.SEGMENTER_CLASSES                 # background, circle, square, triangle, star, cross
    labels = np.zeros((12, 12), np.int64)
    labels[0:3, 0:3] = 1                        # circle A, 9 px
    labels[3, 3] = 1                            # touches A only at a corner: same component (8-connected)
    labels[8:11, 8:11] = 1                      # circle B, 9 px, apart from A
    labels[0:2, 8:12] = 2                       # square, 8 px
    labels[11, 0:2] = 4                         # a star speck of 2 px: dropped
    seg = C.split_instances(labels, names, min_area=5)
    assert sorted(seg.segment_classes.values()) == ["circle", "circle", "square"]
    circle_ids = [i for i, n in seg.segment_classes.items() if n == "circle"]
    areas = sorted(int((seg.segment_map == i).sum()) for i in circle_ids)
    assert areas == [9, 10]                      # A with its corner pixel, and B
    assert np.array_equal(seg.class_mask("circle"), labels == 1)
    assert not seg.class_mask("star").any() and seg.segment_map[11, 0] == 0
    assert set(np.unique(seg.segment_map)) == {0, *seg.segment_classes}


class HalvesNet(torch.nn.Module):
    """Stands in for a trained net: circle on the left half, square on the right (64x64 logits)."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, pixels):
        logits = torch.zeros(pixels.shape[0], len(C.SEGMENTER_CLASSES), 64, 64)
        logits[:, 1, :, :32] = 5.0
        logits[:, 2, :, 32:] = 5.0
        logits[:, 4, 0, 0] = 10.0                # a one-pixel star: under the minimum area
        return logits


def test_sandbox_segmenter_segments_each_image_at_its_own_size():
    segmenter = C.SandboxSegmenter(HalvesNet())
    small, large = Image.new("RGB", (64, 64)), Image.new("RGB", (128, 128))
    out = segmenter([small, large])
    assert all(isinstance(s, Segmentation) for s in out)
    assert out[0].segment_map.shape == (64, 64) and out[1].segment_map.shape == (128, 128)
    for seg, side in zip(out, (64, 128)):
        assert seg.classes == {"circle", "square"}
        circle = seg.class_mask("circle")
        assert circle[4:, : side // 2 - 1].all() and not circle[:, side // 2 + 1:].any()   # rows 0-3: the star speck's
    assert segmenter([]) == []
    assert "background" not in segmenter.labels and set(segmenter.labels) == set(world.SHAPES)


def test_segmenter_classes_are_the_worlds_coco_categories(tmp_path):
    world.write_coco_root(tmp_path, "x", count=1, seed=0)
    categories = json.loads((tmp_path / "annotations" / "instances_x.json").read_text())["categories"]
    assert [c["name"] for c in categories] == list(C.SEGMENTER_CLASSES[1:])


# --------------------------------------------------------------------------- training


def _interrupt_at(monkeypatch, name: str, step: int):
    """Make the `name` batch function raise at `step`, as a killed run would stop there."""
    real = getattr(C, name)

    def batch(seed, stream, at, batch_size):
        if at == step:
            raise KeyboardInterrupt
        return real(seed, stream, at, batch_size)

    monkeypatch.setattr(C, name, batch)


@pytest.mark.parametrize("fit, stage", [(C.fit_segmenter, "segmenter"), (C.fit_judge, "judge")])
def test_training_is_reproducible_and_a_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch, fit, stage):
    cfg = tiny_config(steps=5).sandbox
    first = fit(cfg, tmp_path / "a", checkpoint_every=2).state_dict()
    again = fit(cfg, tmp_path / "b", checkpoint_every=2).state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)

    with monkeypatch.context() as patch:
        _interrupt_at(patch, f"{stage}_batch", step=3)        # last checkpoint at step 2: step 2 is redone
        with pytest.raises(KeyboardInterrupt):
            fit(cfg, tmp_path / "c", checkpoint_every=2)
    assert torch.load(tmp_path / "c" / f"{stage}.pt", weights_only=False)["step"] == 2
    resumed = fit(cfg, tmp_path / "c", checkpoint_every=2).state_dict()
    assert all(torch.equal(first[k], resumed[k]) for k in first)

    initial = fit(dataclasses.replace(cfg, seed=1), tmp_path / "d", checkpoint_every=2).state_dict()
    assert not all(torch.equal(first[k], initial[k]) for k in first)   # the seed matters


def test_saved_segmenter_predicts_what_the_trained_one_did_and_reproduces_its_record(tmp_path, monkeypatch):
    monkeypatch.setattr(C, "HELDOUT_SEGMENTER_IMAGES", 6)
    cfg = tiny_config()
    record = C.train_segmenter(cfg, tmp_path / "work", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [C.CONFIG_FILE, C.WEIGHTS_FILE, C.TRAINING_RECORD_FILE]
    assert json.loads((tmp_path / "out" / C.TRAINING_RECORD_FILE).read_text()) == json.loads(json.dumps(record))
    assert record["seed"] == 0 and record["steps"] == 4 and record["params"]["batch_size"] == 2
    assert set(record["validity"]["mask_iou"]) == set(world.SHAPES)
    assert C.measure_segmenter(tmp_path / "out", cfg) == record["validity"]

    trained = C.as_saved(C.fit_segmenter(cfg.sandbox, tmp_path / "work"))   # finished: loads, trains nothing
    rng = np.random.default_rng(7)
    images = [Image.fromarray(C.segmenter_scene(rng).image) for _ in range(3)]
    loaded = C.SandboxSegmenter.load(tmp_path / "out")(images)
    expected = C.SandboxSegmenter(trained)(images)
    for a, b in zip(loaded, expected):
        assert np.array_equal(a.segment_map, b.segment_map) and a.segment_classes == b.segment_classes
    with pytest.raises(ValueError, match="segmenter"):
        C.Judge.load(tmp_path / "out")


def test_saved_judge_predicts_what_the_trained_one_did_and_reproduces_its_record(tmp_path, monkeypatch):
    monkeypatch.setattr(C, "HELDOUT_JUDGE_IMAGES", 8)
    cfg = tiny_config()
    record = C.train_judge(cfg, tmp_path / "work", tmp_path / "out")
    assert set(record["validity"]["accuracy"]) == {"background", "shape", "colour", "pattern"}
    assert C.measure_judge(tmp_path / "out", cfg) == record["validity"]

    trained = C.as_saved(C.fit_judge(cfg.sandbox, tmp_path / "work"))
    rng = np.random.default_rng(8)
    images = [Image.fromarray(C.judge_scene(rng).image) for _ in range(6)]
    predicted = C.Judge.load(tmp_path / "out").predict(images)
    assert predicted == C.Judge(trained).predict(images)
    for p in predicted:
        assert p["background"] in world.BACKGROUNDS and p["shape"] in world.SHAPES
        assert p["colour"] in world.COLOURS and p["pattern"] in world.PATTERNS
    with torch.no_grad():
        logits = trained(C._pixels_of(images))
    assert [p["colour"] for p in predicted] == [C.JUDGE_HEADS["colour"][i] for i in logits["colour"].argmax(1)]


# --------------------------------------------------------------------------- scorer wiring


def test_make_segmenter_picks_the_sandbox_segmenter_when_the_scorers_have_one():
    own = C.SandboxSegmenter(C.SegmenterNet())
    assert make_segmenter(SimpleNamespace(segmenter=own), params_defaults.scoring(), torch.device("cpu")) is own
    maskformer_parts = dict(maskformer=object(), maskformer_processor=object(), panoptic_id2label={1: "cat"})
    for scorers in (SimpleNamespace(segmenter=None, **maskformer_parts), SimpleNamespace(**maskformer_parts)):
        picked = make_segmenter(scorers, params_defaults.scoring(), torch.device("cpu"))
        assert isinstance(picked, MaskFormerSegmenter) and picked.labels == ("cat",)
    untrained = SimpleNamespace(segmenter=None, maskformer=None, profile="sandbox")
    with pytest.raises(ModelNotAvailableError, match="bas sandbox train --only segmenter"):
        make_segmenter(untrained, params_defaults.scoring(), torch.device("cpu"))


def test_the_run_time_segmenter_is_trained_on_this_worlds_classes_and_size():
    from bas.models import sandbox_segmenter as runtime

    assert runtime.SEGMENTER_CLASSES == C.SEGMENTER_CLASSES == ("background",) + world.SHAPES
    assert runtime.IMAGE_SIZE == world.SIZE
    assert runtime.MIN_SEGMENT_FRACTION == C.MIN_SEGMENT_FRACTION
