import math

import numpy as np
import pandas as pd
import pytest

from bas.errors import DataError
from bas.scenes import load_scene
from bas.scoring.dino_scores import DinoEmbedder
from bas.scenes.masking import masked_concept
from bas.schema import METRICS, SCORE_COLUMNS, validate
from bas.scoring.score import Scorer, composite_score, score_folder
from bas.scoring.segment import Segmentation
from tests import params_defaults

SCENE = "coco-train2017-599"  # concepts: 0 cat, 1 couch


@pytest.fixture
def cfg(tmp_path, tiny_models_cfg):
    return params_defaults.parse({"models": {"profile": "tiny", "cache_dir": tiny_models_cfg.cache_dir},
                         "paths": {"storage_root": str(tmp_path / "data")}, "scoring": {"batch_size": 2}})


def cat_only_segmenter(scene):
    """Stands in for MaskFormer: finds the scene's cat where the input mask is, and nothing else."""
    def segment(images):
        return [Segmentation(scene.masks[0].astype(np.int64), {1: "cat"}) for _ in images]
    return segment


def test_masked_input_as_generated_image_scores_identity_one(cfg, tiny_scorers, coco_scenes, tmp_path):
    scene = load_scene(coco_scenes / SCENE)
    folder = tmp_path / "other-method" / SCENE
    folder.mkdir(parents=True)
    masked_cat = masked_concept(scene.image, scene.masks[0])
    masked_cat.save(folder / "t00_c0_s000.png")
    masked_cat.save(folder / "t02_c0+1_s000.png")
    scorer = Scorer(tiny_scorers, cfg.scoring, segmenter=cat_only_segmenter(scene))
    out = tmp_path / "scores.parquet"
    scores = score_folder(cfg, tmp_path / "other-method", coco_scenes, out, scorer=scorer, progress=False)

    assert len(scores) == 3                                       # (image, concept) rows: 1 + 2
    cat = scores[scores.concept_index == 0]
    assert cat["detected"].all()
    assert np.allclose(cat["identity_similarity"], 1.0, atol=1e-5)
    assert np.allclose(cat["identity_similarity_fallback"], 1.0, atol=1e-5)   # the image IS the masked cat
    assert np.allclose(cat["detected_area"], scene.masks[0].mean())

    # NSIM-D of the cat: DINO similarity of the generated cat to the scene's couch.
    dino = DinoEmbedder(tiny_scorers, scorer.device, cfg.scoring.dino_crop_pct)
    refs = dino.images([masked_concept(scene.image, m) for m in scene.masks])
    assert np.allclose(cat["nsim_d"], float(refs[0] @ refs[1]), atol=1e-5)
    assert np.allclose(cat["cs"], cat["prompt_similarity"] * cat["identity_similarity"] * (1 - cat["nsim_d"]))

    # The couch is absent: flagged, identity NaN, fallback and NSIM-D on the whole image.
    couch = scores[scores.concept_index == 1].iloc[0]
    assert not couch.detected and couch.detected_area == 0.0
    assert math.isnan(couch.identity_similarity) and math.isnan(couch.cs)
    assert math.isfinite(couch.identity_similarity_fallback) and math.isfinite(couch.nsim_d)
    assert couch.class_name == "couch" and couch.subset == "0+1" and couch.template_id == 2
    assert couch.prompt_classes == "a photo of a cat and a couch in the snow"
    assert couch.method == "other-method" and couch.sampler == "external" and couch.profile == "tiny"
    assert couch.kind == "external"

    # Schema: the file has exactly the documented columns and types.
    stored = pd.read_parquet(out)
    assert list(stored.columns) == [c.name for c in SCORE_COLUMNS]
    validate(stored, SCORE_COLUMNS, str(out))
    assert str(stored["detected"].dtype) == "bool" and str(stored["identity_similarity"].dtype) == "float64"


def test_schema_documents_every_column_and_metric():
    names = [c.name for c in SCORE_COLUMNS]
    assert len(set(names)) == len(names)
    assert all(c.meaning and c.dtype for c in SCORE_COLUMNS)
    assert set(METRICS) <= set(names)
    with pytest.raises(DataError, match="missing column"):
        validate(pd.DataFrame({"method": ["x"]}), SCORE_COLUMNS, "scores.parquet")


@pytest.mark.parametrize("sim_c, sim_d, nsim_d, cs", [
    (0.609, 0.792, 0.726, 0.132),   # MIFO table 2, MIFO ("Ours")
    (0.608, 0.762, 0.721, 0.129),   # BD
    (0.628, 0.778, 0.730, 0.132),   # MD
    (0.606, 0.790, 0.727, 0.131),   # BA
])
def test_composite_score_matches_mifo_table_2(sim_c, sim_d, nsim_d, cs):
    assert round(composite_score(sim_c, sim_d, nsim_d), 3) == cs


def test_folder_with_a_csv_manifest(cfg, tiny_scorers, coco_scenes, tmp_path):
    scene = load_scene(coco_scenes / SCENE)
    folder = tmp_path / "theirs"
    folder.mkdir()
    scene.image.save(folder / "anything.jpg")
    pd.DataFrame([{"path": "anything.jpg", "scene_id": SCENE, "subset": "0+1",
                   "prompt_classes": "a cat on a couch", "method": "mifo"}]).to_csv(folder / "manifest.csv", index=False)
    scorer = Scorer(tiny_scorers, cfg.scoring, segmenter=lambda ims: [Segmentation(np.zeros((128, 128), int))
                                                                      for _ in ims])
    scores = score_folder(cfg, folder, coco_scenes, scorer=scorer, progress=False)
    assert scores["concept_index"].tolist() == [0, 1]
    assert (scores["method"] == "mifo").all() and (scores["prompt_classes"] == "a cat on a couch").all()
    assert (folder / "scores.parquet").exists()
    assert not scores["detected"].any() and scores["identity_similarity"].isna().all()


def test_folder_with_unnamed_images_and_no_manifest_is_refused(cfg, tiny_scorers, coco_scenes, tmp_path):
    (tmp_path / "x" / SCENE).mkdir(parents=True)
    load_scene(coco_scenes / SCENE).image.save(tmp_path / "x" / SCENE / "img001.png")
    with pytest.raises(DataError, match="t<template>_c<subset>_s<seed>"):
        score_folder(cfg, tmp_path / "x", coco_scenes, scorer=Scorer(tiny_scorers, cfg.scoring), progress=False)
    (tmp_path / "x" / SCENE / "img001.png").rename(tmp_path / "x" / SCENE / "t00_c0+2_s000.png")
    with pytest.raises(DataError, match="has 2 concepts"):
        score_folder(cfg, tmp_path / "x", coco_scenes, scorer=Scorer(tiny_scorers, cfg.scoring), progress=False)
