"""Fully real plumbing check, no network: real COCO photos scored with the tiny models."""

import math

import numpy as np
import pandas as pd

from bas.cli import main
from bas.scenes import load_scene
from bas.schema import SCORE_COLUMNS, validate


def test_real_photos_score_against_their_own_scenes(coco_scenes, tiny_models_cfg, tmp_path, capsys):
    folder = tmp_path / "photos"
    expected_rows = 0
    for scene_dir in sorted(coco_scenes.iterdir()):
        scene = load_scene(scene_dir)
        (folder / scene.scene_id).mkdir(parents=True)
        # The photo itself stands for a generated image of both concepts, and of the first alone.
        scene.image.save(folder / scene.scene_id / "t00_c0+1_s000.png")
        scene.image.save(folder / scene.scene_id / "t05_c0_s000.png")
        expected_rows += 3
    out = tmp_path / "scores.parquet"
    rc = main(["-S", f"models.cache_dir={tiny_models_cfg.cache_dir}", "-S", "scoring.batch_size=3",
               "score", "--images", str(folder), "--scenes", str(coco_scenes), "--out", str(out), "--no-progress"])
    assert rc == 0
    assert "4 images, 6 rows" in capsys.readouterr().out

    scores = validate(pd.read_parquet(out), SCORE_COLUMNS, str(out))
    assert len(scores) == expected_rows
    assert set(scores["scene_id"]) == {p.name for p in coco_scenes.iterdir()}
    assert set(zip(scores["path"].str.split("/").str[0], scores["concept_index"])) == {
        (s, c) for s in scores["scene_id"] for c in (0, 1)}
    assert scores["class_name"].isin(["cat", "couch", "dog", "frisbee"]).all()
    for column in ("prompt_similarity", "clip_i", "identity_similarity_fallback", "nsim_d"):
        values = scores[column].to_numpy()
        assert np.isfinite(values).all() and (np.abs(values) <= 1 + 1e-5).all(), column
    detected = scores["detected"].to_numpy()
    assert np.isfinite(scores["identity_similarity"].to_numpy()[detected]).all()
    assert np.isnan(scores["identity_similarity"].to_numpy()[~detected]).all()
    assert ((scores["detected_area"] > 0) == scores["detected"]).all()
    assert (scores["profile"] == "tiny").all()
    # One prompt similarity per image, repeated on each of its concept rows.
    assert (scores.groupby("path")["prompt_similarity"].nunique() == 1).all()
    assert scores.loc[scores.template_id == 5, "prompt_classes"].str.endswith("on top of a wooden floor").all()
    assert not math.isnan(scores["prompt_similarity"].mean())
