"""Ground-truth references of the sandbox: the scenes' own objects rendered in every grid cell,
scored by the committed scorers; the ceiling and floor a method's numbers are read against."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pandas as pd
import pytest

from bas import config, pipeline
from bas.errors import DataError
from bas.models.registry import sandbox_weights_dir
from bas.sandbox import reference, world
from bas.scenes.scene import load_scene
from orchestration_helpers import REPO

WEIGHTS = sandbox_weights_dir(config.load(REPO / "params.yaml").models)
TEMPLATES = ["a photo of {tokens} at the beach", "a photo of {tokens} in the snow"]


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    cfg = config.load(REPO / "params.yaml", {
        "models.profile": "sandbox",
        "paths.storage_root": str(tmp_path_factory.mktemp("reference-storage")),
        "scenes.num_scenes": 2,
        "generation.templates": TEMPLATES,
    })
    ids = pipeline.stage(cfg)["selected"]
    return cfg, [load_scene(pipeline.paths.scenes_dir(cfg) / i) for i in ids]


def test_scene_identities_are_the_worlds_annotations(staged):
    _, scenes = staged
    for scene in scenes:
        identities = reference.scene_identities(scene)
        assert [i.shape for i in identities] == scene.class_names
        # the staged photo shows each identity's colour inside its mask (plain pixels of it)
        image = np.asarray(scene.image.convert("RGB"))
        for ident, mask in zip(identities, scene.masks):
            colour = np.array(world.COLOURS[ident.colour])
            share = (np.abs(image[mask].astype(int) - colour).sum(axis=1) < 30).mean()
            assert share > 0.3, (scene.scene_id, ident)
        assert all(i in world.novel_identities(0) for i in identities)


def test_references_render_every_grid_cell_in_its_context(staged, tmp_path):
    cfg, scenes = staged
    scene = scenes[0]
    manifest = reference.render_reference(cfg, scene, reference.GROUND_TRUTH, tmp_path)
    n = scene.num_concepts
    assert len(manifest) == (2 ** n - 1) * len(TEMPLATES) * cfg.generation.seeds
    assert (manifest["method"] == reference.GROUND_TRUTH).all()
    assert all((tmp_path / p).exists() for p in manifest["path"])
    assert reference.background_of(TEMPLATES[1]) == "snow"
    # deterministic: the same cell renders the same picture again
    again = reference.render_reference(cfg, scene, reference.GROUND_TRUTH, tmp_path / "again")
    first = tmp_path / manifest["path"].iloc[0]
    assert first.read_bytes() == (tmp_path / "again" / again["path"].iloc[0]).read_bytes()
    other = reference.other_identity(world.Identity("circle", "white", "dotted"))
    assert other == world.Identity("circle", "red", "dotted")
    with pytest.raises(DataError, match="no sandbox background"):
        reference.background_of("a photo of {tokens} on the moon")
    with pytest.raises(DataError, match="unknown reference"):
        reference.render_reference(cfg, scene, "oracle", tmp_path)


def test_a_scene_not_from_the_world_is_refused(staged):
    import dataclasses

    _, scenes = staged
    foreign = dataclasses.replace(scenes[0], source={"kind": "user"})
    with pytest.raises(DataError, match="not staged from a sandbox world"):
        reference.scene_identities(foreign)


@pytest.mark.skipif(not (WEIGHTS / "dino" / "model.safetensors").exists(), reason=f"no committed scorers in {WEIGHTS}")
def test_the_committed_scorers_separate_ground_truth_from_another_identity(staged, tmp_path):
    cfg, scenes = staged
    ids = [s.scene_id for s in scenes]
    means = pipeline.score_references(cfg, ids, tmp_path)
    table = means.pivot(index="method", columns="metric", values="mean")
    assert (tmp_path / "reference_means.csv").exists()
    # The true objects are found and recognised; a same-shape object of another colour is found
    # but is not the same identity; the prompt (contexts and classes) is as true for both.
    assert table.loc["ground_truth", "detected"] > 0.9
    assert table.loc["ground_truth", "identity_similarity"] > 0.8
    assert table.loc["other_identity", "identity_similarity"] < table.loc["ground_truth", "identity_similarity"] - 0.4
    assert table.loc["ground_truth", "prompt_similarity"] == pytest.approx(
        table.loc["other_identity", "prompt_similarity"], abs=0.1)
    # Renders and scores are the pipeline's, so `bas run` reuses them and a rerun redoes nothing.
    assert pipeline.score_done(cfg, "ground_truth", ids[0])
    scores = pipeline.paths.scene_scores_path(cfg, "ground_truth", ids[0])
    stamp = scores.stat().st_mtime_ns
    pipeline.score_references(cfg, ids[:1], tmp_path, ["ground_truth"])
    assert scores.stat().st_mtime_ns == stamp
    with pytest.raises(DataError, match="unknown reference 'oracle'"):
        pipeline.score_references(cfg, ids[:1], tmp_path, ["oracle"])


@pytest.mark.skipif(not (WEIGHTS / "dino" / "model.safetensors").exists(), reason=f"no committed scorers in {WEIGHTS}")
def test_retrained_scorers_score_the_references_again(staged, tmp_path):
    # The images stay (they depend on no model); their scores were made by the old scorers.
    cfg, scenes = staged
    weights = tmp_path / "weights"
    for part in ("clip", "dino", "segmenter"):
        shutil.copytree(WEIGHTS / part, weights / part)
    cfg = dataclasses.replace(cfg, models=dataclasses.replace(cfg.models, sandbox_weights=str(weights)))
    ids = [scenes[0].scene_id]
    pipeline.score_references(cfg, ids, tmp_path, ["ground_truth"])
    scores = pipeline.paths.scene_scores_path(cfg, "ground_truth", ids[0])
    renders = pipeline.paths.manifest_path(pipeline.paths.run_dir(cfg, "ground_truth", ids[0]))
    score_stamp, render_stamp = scores.stat().st_mtime_ns, renders.stat().st_mtime_ns
    dino = weights / "dino" / "model.safetensors"
    dino.write_bytes(dino.read_bytes()[:-2] + b"\x00\x00")           # a "retrained" DINO: other bytes
    pipeline.score_references(cfg, ids, tmp_path, ["ground_truth"])
    assert scores.stat().st_mtime_ns != score_stamp
    assert renders.stat().st_mtime_ns == render_stamp


def test_references_run_through_the_pipeline_and_the_report_keeps_them_off_the_front(staged):
    import dataclasses

    from bas.errors import ConfigError
    import pandas as pd

    from bas.report.results import MethodKinds

    cfg, scenes = staged
    cfg = dataclasses.replace(cfg, orchestration=dataclasses.replace(
        cfg.orchestration, methods=["ground_truth", "other_identity"]))
    pipeline.write_recipes(cfg)
    scene_id = scenes[0].scene_id
    first = pipeline.train_generate(cfg, "ground_truth", scene_id)
    assert first["images"] == (2 ** scenes[0].num_concepts - 1) * len(TEMPLATES)
    again = pipeline.train_generate(cfg, "ground_truth", scene_id)   # finished: nothing is redone
    assert again["images"] == first["images"] and again["images_generated"] == 0
    for reference_name in ("ground_truth", "other_identity"):
        if reference_name != "ground_truth":
            pipeline.train_generate(cfg, reference_name, scene_id)
        assert pipeline.score(cfg, reference_name, scene_id)["rows"] > 0
    pipeline.report(cfg)
    summary = (pipeline.paths.storage_root(cfg) / cfg.paths.reports / "summary.md").read_text()
    assert "*ground_truth* (reference)" in summary and "*other_identity* (reference)" in summary
    assert "ablations and references excluded): **none**" in summary
    scored = pd.read_parquet(pipeline.paths.scene_scores_path(cfg, "other_identity", scene_id))
    assert set(scored["kind"]) == {"reference"}                        # the scores say what the run is
    kinds = MethodKinds({"ground_truth": "reference", "bas_no_attn_loss": "ablation", "ti_m": "baseline",
                         "bas": "method"})
    assert kinds.order(["ground_truth", "bas_no_attn_loss", "ti_m", "bas"]) == \
        ["bas", "ti_m", "bas_no_attn_loss", "ground_truth"]
    assert [kinds.label(m) for m in ("bas", "bas_no_attn_loss", "ground_truth")] == ["", "ablation", "reference"]

    tiny = dataclasses.replace(cfg, models=dataclasses.replace(cfg.models, profile="tiny"))
    with pytest.raises(ConfigError, match="needs models.profile: sandbox"):
        pipeline.train_generate(tiny, "other_identity", scenes[1].scene_id)
