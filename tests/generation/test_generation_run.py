import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bas import paths
from bas.generation import run as gen_run
from bas.generation.run import generate_grid, generate_run, plan_grid, regenerate_image
from bas.models import load_diffusion
from bas.scenes import load_scene
from bas.schema import MANIFEST_COLUMNS, validate
from bas.tokens import apply_trained
from tests import params_defaults

SCENE = "coco-train2017-599"


def make_cfg(tmp_path, tiny_models_cfg, **generation):
    gen = {"steps": 2, "templates": ["a photo of {tokens} at the beach", "a photo of {tokens} in the snow"],
           "batch_size": 3, **generation}
    return params_defaults.parse({"models": {"profile": "tiny", "cache_dir": tiny_models_cfg.cache_dir},
                         "paths": {"storage_root": str(tmp_path / "data")}, "generation": gen})


@pytest.fixture
def trained(tmp_path, tiny_models_cfg, coco_scenes, make_untrained_run):
    """(cfg, run dir, scene, trained parts, tokens) for the cat+couch scene."""
    cfg = make_cfg(tmp_path, tiny_models_cfg)
    run = paths.run_dir(cfg, "bas", SCENE)
    scene = load_scene(coco_scenes / SCENE)
    make_untrained_run(run, "bas", SCENE, scene.class_names)
    parts = load_diffusion(tiny_models_cfg)
    tokens = apply_trained(parts, paths.train_dir(run))
    return cfg, run, scene, parts, tokens


def pixels(path):
    return np.asarray(Image.open(path))


def counting_sampler(monkeypatch, fail_above=None):
    """Wrap the registry lookup: record batch sizes, optionally fake out-of-memory above a size."""
    calls = []
    real = gen_run.get_sampler

    def get(name):
        sampler = real(name)

        def wrapped(parts, items, *args, **kwargs):
            calls.append(len(items))
            if fail_above is not None and len(items) > fail_above:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return sampler(parts, items, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(gen_run, "get_sampler", get)
    return calls


def test_grid_writes_images_and_manifest_and_resumes(trained, monkeypatch):
    cfg, run, scene, parts, tokens = trained
    manifest = generate_grid(parts, tokens, scene, "bas", cfg, run, progress=False)
    assert len(manifest) == 3 * 2                                  # 3 subsets x 2 templates x 1 seed
    stored = validate(pd.read_parquet(paths.manifest_path(run)), MANIFEST_COLUMNS, "manifest")
    assert stored["path"].tolist() == manifest["path"].tolist()
    for row in stored.itertuples():
        assert Image.open(run / row.path).size == (parts.resolution, parts.resolution)
    row = stored[(stored.template_id == 1) & (stored.subset == "0+1")].iloc[0]
    assert row.prompt == "a photo of <asset0> and <asset1> in the snow"
    assert row.prompt_classes == "a photo of a cat and a couch in the snow"
    assert row.path == "images/t01_c0+1_s000.png" and row.sampler == "ddim" and row.subset_size == 2

    # Resume: nothing missing, nothing made; one image deleted, only it is made again.
    calls = counting_sampler(monkeypatch)
    before = pixels(run / row.path)
    generate_grid(parts, tokens, scene, "bas", cfg, run, progress=False)
    assert calls == []
    (run / row.path).unlink()
    generate_grid(parts, tokens, scene, "bas", cfg, run, progress=False)
    assert calls == [1]
    assert np.array_equal(pixels(run / row.path), before)


def test_image_regenerated_alone_is_bitwise_equal(trained, tmp_path, tiny_models_cfg):
    cfg, run, scene, parts, tokens = trained                      # batch_size 3, batch_invariant auto (CPU)
    generate_grid(parts, tokens, scene, "bas", cfg, run, progress=False)
    alone = regenerate_image(parts, tokens, scene, cfg, template_id=1, subset=(0, 1), seed_index=0)
    assert np.array_equal(np.asarray(alone), pixels(run / "images/t01_c0+1_s000.png"))
    # Batch size 1 makes the same grid, byte for byte.
    cfg1 = make_cfg(tmp_path, tiny_models_cfg, batch_size=1)
    other = tmp_path / "other"
    generate_grid(parts, tokens, scene, "bas", cfg1, other, progress=False)
    for path in pd.read_parquet(paths.manifest_path(run))["path"]:
        assert (run / path).read_bytes() == (other / path).read_bytes()


def test_out_of_memory_halves_the_batch(trained, tmp_path, tiny_models_cfg, monkeypatch):
    _, _, scene, parts, tokens = trained
    cfg = make_cfg(tmp_path, tiny_models_cfg, batch_size=4, batch_invariant="never")
    calls = counting_sampler(monkeypatch, fail_above=1)
    manifest = generate_grid(parts, tokens, scene, "bas", cfg, tmp_path / "oom", progress=False)
    assert calls[:3] == [4, 2, 1]                                  # halved, then kept small
    assert sum(c for c in calls if c == 1) == 6
    assert all((tmp_path / "oom" / p).exists() for p in manifest["path"])


def test_changed_settings_make_old_images_stale(trained, tmp_path, tiny_models_cfg):
    cfg, run, scene, parts, tokens = trained
    generate_grid(parts, tokens, scene, "bas", cfg, run, progress=False)
    first = pixels(run / "images/t00_c0_s000.png")
    paths.scores_path(run).write_bytes(b"old scores")
    cfg3 = make_cfg(tmp_path, tiny_models_cfg, steps=3)
    generate_grid(parts, tokens, scene, "bas", cfg3, run, progress=False)
    assert json.loads(paths.generation_settings_path(run).read_text())["steps"] == 3
    assert not paths.scores_path(run).exists()
    assert not np.array_equal(pixels(run / "images/t00_c0_s000.png"), first)


def test_grids_made_with_the_old_timestep_offset_are_stale(trained, tmp_path):
    """generation.json records the DDIM timestep offset; a grid without it was made at offset 1."""
    cfg, run, scene, parts, tokens = trained
    out = tmp_path / "offset"
    generate_grid(parts, tokens, scene, "bas", cfg, out, progress=False)
    settings_path = paths.generation_settings_path(out)
    settings = json.loads(settings_path.read_text())
    assert settings["steps_offset"] == 0
    del settings["steps_offset"]
    settings_path.write_text(json.dumps(settings))
    plan = plan_grid(cfg, "bas", scene.scene_id, tokens, scene.class_names, parts.profile,
                     settings["tokens_sha256"], out)
    assert plan.stale == ["steps_offset: None -> 0"] and len(plan.missing) == len(plan.items)


def test_generate_run_loads_the_trained_tokens(trained, coco_scenes):
    cfg, run, scene, parts, tokens = trained
    manifest = generate_run(cfg, "bas", SCENE, scenes_dir=coco_scenes, progress=False)
    expected = generate_grid(parts, tokens, scene, "bas", cfg, run.parent / "in-memory", progress=False)
    assert manifest["seed"].tolist() == expected["seed"].tolist()
    for path in manifest["path"]:
        assert np.array_equal(pixels(run / path), pixels(run.parent / "in-memory" / path))
    # Complete: a second call reads the manifest without loading any model.
    again = generate_run(cfg, "bas", SCENE, scenes_dir=coco_scenes, progress=False)
    assert again["path"].tolist() == manifest["path"].tolist()
