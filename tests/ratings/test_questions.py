"""Sampling the study's questions from the runs: coverage, balance, determinism, refusals."""

from collections import Counter

import pandas as pd
import pytest

from bas.errors import DataError
from bas.ratings import open_study
from bas.ratings.questions import balanced_sample, find_methods, sample_questions

METHODS = ["break_a_scene", "dreambooth_m", "textual_inversion_m"]


def _sample(root, n_prompt, n_identity, seed=0, methods=METHODS):
    return sample_questions(root, root / "runs", root / "scenes", methods, n_prompt, n_identity, seed)


def _spread(values) -> int:
    counts = Counter(values).values()
    return max(counts) - min(counts)


@pytest.mark.parametrize("n", [6, 9, 12])
def test_questions_cover_methods_scenes_and_subset_sizes_evenly(make_root, tmp_path, n):
    root = make_root(tmp_path / "store", seeds=2)
    questions = _sample(root, n, n)
    for task in ("prompt", "identity"):
        qs = [q for q in questions if q.task == task]
        assert len(qs) == n
        # Every page shows every method once, so methods are covered exactly evenly.
        assert all(sorted(it.method for it in q.items) == METHODS for q in qs)
        assert _spread(q.scene_id for q in qs) == 0  # 3 scenes, n a multiple of 3
        assert _spread(q.subset_size for q in qs) == 0  # sizes 1, 2, 3
        assert _spread(q.template_id for q in qs) <= 1
        assert len({(q.scene_id, q.template_id, q.subset, q.seed_index, q.concept_index) for q in qs}) == n
    identity = [q for q in questions if q.task == "identity"]
    # The rated concept is in the image's subset, named from scene.json.
    assert all(str(q.concept_index) in q.subset.split("+") for q in identity)
    names = {"coco-train2017-101": ["cat", "dog", "chair"], "coco-train2017-202": ["cup", "bowl", "vase"],
             "coco-train2017-303": ["bus", "car"]}
    assert all(q.class_name == names[q.scene_id][q.concept_index] for q in identity)
    # Concepts of a scene are spread too: no concept twice before all of its scene's once.
    per_scene = Counter(q.scene_id for q in identity)
    for scene, count in per_scene.items():
        concepts = Counter(q.concept_index for q in identity if q.scene_id == scene)
        assert max(concepts.values()) - min(concepts.values()) <= 1
        assert len(concepts) == min(count, len(names[scene]))


def test_prompt_shows_class_names_and_each_method_its_own_image(storage_root):
    for q in _sample(storage_root, 6, 0):
        assert "<asset" not in q.prompt_classes and " a " in f" {q.prompt_classes}"
        paths = {it.method: it.image_path for it in q.items}
        assert all(p.startswith(f"runs/{m}/{q.scene_id}/images/") for m, p in paths.items())
        assert len(set(paths.values())) == len(METHODS)


def test_sampling_is_deterministic_in_the_seed(storage_root):
    key = lambda qs: [(q.task, q.scene_id, q.template_id, q.subset, q.concept_index) for q in qs]  # noqa: E731
    assert key(_sample(storage_root, 8, 8, seed=3)) == key(_sample(storage_root, 8, 8, seed=3))
    assert key(_sample(storage_root, 8, 8, seed=3)) != key(_sample(storage_root, 8, 8, seed=4))


def test_only_groups_generated_by_every_method_are_asked(storage_root):
    # Drop one (scene, template, subset) from one method: it may no longer be a question.
    manifest_path = storage_root / "runs" / "dreambooth_m" / "coco-train2017-303" / "manifest.parquet"
    manifest = pd.read_parquet(manifest_path)
    dropped = manifest.iloc[0]
    manifest.iloc[1:].to_parquet(manifest_path, index=False)
    # Scene 303 has 3 subsets x 2 templates = 6 groups, one now incomplete: asking for all
    # 14 + 14 + 5 complete groups works, one more does not exist.
    questions = _sample(storage_root, 33, 0)
    assert (dropped.scene_id, dropped.template_id, dropped.subset) not in {
        (q.scene_id, q.template_id, q.subset) for q in questions}
    with pytest.raises(DataError, match=r"ratings.num_prompt_questions = 34: the runs give only 33 \(scene, template"):
        _sample(storage_root, 34, 0)


def test_a_missing_image_or_method_is_named(storage_root):
    with pytest.raises(DataError, match="ratings.methods: elite has no generated images"):
        find_methods(storage_root / "runs", ["break_a_scene", "elite"])
    (storage_root / "runs" / "break_a_scene" / "coco-train2017-101" / "images" / "t0_s0_k0.png").unlink()
    with pytest.raises(DataError, match=r"t0_s0_k0\.png: listed in a manifest but missing"):
        _sample(storage_root, 2, 0)


def test_balanced_sample_takes_rare_values_while_it_can():
    # Size 3 exists only in scene "a": a plain scene-first greedy may use up scene "a"
    # on sizes 1 and 2 and end with no size-3 pick; preferring rare values avoids that.
    rows = [{"scene_id": s, "subset_size": k} for s in "abc" for k in (1, 2) for _ in range(3)]
    rows += [{"scene_id": "a", "subset_size": 3}]
    candidates = pd.DataFrame(rows)
    for seed in range(10):
        chosen = balanced_sample(candidates, 6, ["scene_id", "subset_size"], seed)
        assert Counter(chosen["scene_id"]) == {"a": 2, "b": 2, "c": 2}
        assert Counter(chosen["subset_size"])[3] == 1


def test_existing_study_keeps_its_questions_and_refuses_changed_params(storage_root, cfg_for):
    study = open_study(cfg_for(storage_root, seed=1))
    before = study.db_path.read_bytes()
    open_study(cfg_for(storage_root, seed=1))  # reopening samples nothing new
    assert study.db_path.read_bytes() == before
    with pytest.raises(DataError, match=r"built with ratings.seed = 1, params now say 2"):
        open_study(cfg_for(storage_root, seed=2))
    with pytest.raises(DataError, match=r"ratings.num_prompt_questions = 6"):
        open_study(cfg_for(storage_root, seed=1, num_prompt_questions=5))
