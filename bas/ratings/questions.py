"""The questions of the rating study, sampled from the generated images of a storage root.

A question is one page a rater answers (BaS appendix B.3):
- prompt: one (scene, template, subset, seed) with every method's image of it, rated
  against the prompt with class names;
- identity: one concept of such a group, its masked input object beside every method's
  image, each pair rated for "same object".
Each image on a page (an item) gets its own 1-5 rating. Every page holds every method, so
methods are covered exactly evenly; pages are picked so that scenes, subset sizes (and
concepts, templates) are covered as evenly as the runs allow, deterministically from a seed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from bas.errors import DataError
from bas.paths import MANIFEST_FILE, SCENE_JSON
from bas.schema import MANIFEST_COLUMNS, validate

TASKS = ("prompt", "identity")
GROUP_KEY = ["scene_id", "template_id", "subset", "seed_index"]


@dataclass(frozen=True)
class Item:
    method: str
    image_path: str  # relative to the storage root


@dataclass(frozen=True)
class Question:
    task: str  # "prompt" | "identity"
    scene_id: str
    template_id: int
    template: str
    subset: str
    subset_size: int
    seed_index: int
    prompt_classes: str
    items: tuple[Item, ...]  # one per method, in study method order
    concept_index: int | None = None  # identity only
    class_name: str | None = None  # identity only


def find_methods(runs_dir: Path, wanted: Sequence[str] = ()) -> list[str]:
    """Methods under `runs_dir` with at least one manifest; `wanted` (if any) must all be there."""
    found = sorted(p.name for p in runs_dir.iterdir()
                   if p.is_dir() and any(p.glob(f"*/{MANIFEST_FILE}"))) if runs_dir.is_dir() else []
    if not wanted:
        if not found:
            raise DataError(f"{runs_dir}: no method has generated images (no runs/<method>/<scene>/{MANIFEST_FILE})")
        return found
    missing = [m for m in wanted if m not in found]
    if missing:
        raise DataError(f"ratings.methods: {', '.join(missing)} has no generated images under {runs_dir} "
                        f"(found: {', '.join(found) or 'none'})")
    return list(wanted)


def load_manifests(root: Path, runs_dir: Path, methods: Sequence[str]) -> pd.DataFrame:
    """Every manifest row of `methods`, with `path` made relative to `root`."""
    frames = []
    for method in methods:
        for manifest in sorted((runs_dir / method).glob(f"*/{MANIFEST_FILE}")):
            df = validate(pd.read_parquet(manifest), MANIFEST_COLUMNS, str(manifest))
            df["path"] = [str((manifest.parent / p).relative_to(root)) for p in df["path"]]
            frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    dup = df.duplicated(["method"] + GROUP_KEY)
    if dup.any():
        row = df[dup].iloc[0]
        raise DataError(f"runs/{row.method}/{row.scene_id}/{MANIFEST_FILE}: two images for template "
                        f"{row.template_id}, subset {row.subset}, seed index {row.seed_index}")
    return df


def complete_groups(manifest: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """One row per (scene, template, subset, seed) that every method generated, with a
    `paths` column: the image path of each method, in `methods` order."""
    rows = manifest[manifest["method"].isin(methods)]
    wide = rows.pivot(index=GROUP_KEY, columns="method", values="path")
    wide = wide.reindex(columns=list(methods)).dropna()
    first = rows.drop_duplicates(GROUP_KEY).set_index(GROUP_KEY)
    groups = first.loc[wide.index, ["template", "subset_size", "prompt_classes"]].copy()
    groups["paths"] = [tuple(v) for v in wide.to_numpy()]
    return groups.reset_index().sort_values(GROUP_KEY, kind="stable").reset_index(drop=True)


def balanced_sample(candidates: pd.DataFrame, n: int, factors: Sequence[str], seed: int) -> pd.DataFrame:
    """`n` rows of `candidates` spread as evenly as possible over each factor.

    Greedy: each pick takes a row whose factor values have been picked least, comparing
    the factors in order (the first is balanced exactly while it can be, the next ones as
    far as the first allows). Among equals it prefers values with fewer rows left (a subset
    size only some scenes have is taken while it still can be), then a seeded random order.
    Deterministic in `seed`.
    """
    if n > len(candidates):
        raise ValueError(f"{n} rows asked of {len(candidates)}")
    order = np.random.default_rng(seed).permutation(len(candidates))
    pool = candidates.iloc[order].reset_index(drop=True)
    codes = [pd.factorize(pool[f])[0] for f in factors]
    picked_counts = [np.zeros(c.max() + 1, dtype=np.int64) for c in codes]
    left_counts = [np.bincount(c) for c in codes]
    available = np.ones(len(pool), dtype=bool)
    picked = []
    for _ in range(n):
        tied = available.copy()
        for key in [count[code] for code, count in zip(codes, picked_counts)] + \
                   [count[code] for code, count in zip(codes, left_counts)]:
            tied &= key == key[tied].min()
        best = int(np.flatnonzero(tied)[0])  # the earliest in the seeded order
        picked.append(best)
        available[best] = False
        for code, p_count, l_count in zip(codes, picked_counts, left_counts):
            p_count[code[best]] += 1
            l_count[code[best]] -= 1
    return pool.iloc[picked].reset_index(drop=True)


def scene_class_names(scenes_dir: Path, scene_id: str) -> list[str]:
    path = scenes_dir / scene_id / SCENE_JSON
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing; identity questions need the scene's masks") from None
    return [c["class_name"] for c in sorted(meta["concepts"], key=lambda c: c["index"])]


def sample_questions(root: Path, runs_dir: Path, scenes_dir: Path, methods: Sequence[str],
                     num_prompt: int, num_identity: int, seed: int) -> list[Question]:
    """The study's questions: `num_prompt` prompt pages then `num_identity` identity pages."""
    manifest = load_manifests(root, runs_dir, methods)
    groups = complete_groups(manifest, methods)
    if groups.empty:
        raise DataError(f"{runs_dir}: no (scene, template, subset, seed) was generated by every method of "
                        f"{', '.join(methods)}; a page shows all methods' images side by side")
    for paths in groups["paths"]:  # fail on a missing image now, not when a rater opens the page
        for p in paths:
            if not (root / p).is_file():
                raise DataError(f"{root / p}: listed in a manifest but missing")

    def items(paths: tuple[str, ...]) -> tuple[Item, ...]:
        return tuple(Item(m, p) for m, p in zip(methods, paths))

    def too_many(key: str, n: int, available: int, what: str) -> None:
        if n > available:
            raise DataError(f"ratings.{key} = {n}: the runs give only {available} {what} "
                            f"made by every method of {', '.join(methods)}")

    questions = []
    if num_prompt:
        too_many("num_prompt_questions", num_prompt, len(groups), "(scene, template, subset, seed) groups")
        chosen = balanced_sample(groups, num_prompt, ["scene_id", "subset_size", "template_id"], seed)
        questions += [Question("prompt", r.scene_id, int(r.template_id), r.template, r.subset, int(r.subset_size),
                               int(r.seed_index), r.prompt_classes, items(r.paths))
                      for r in chosen.itertuples()]
    if num_identity:
        # One candidate per (group, concept in its subset).
        units = groups.assign(concept_index=[[int(i) for i in s.split("+")] for s in groups["subset"]])
        units = units.explode("concept_index", ignore_index=True)
        units["concept_index"] = units["concept_index"].astype("int64")
        units["scene_concept"] = units["scene_id"] + "#" + units["concept_index"].astype(str)
        too_many("num_identity_questions", num_identity, len(units), "(group, concept) pairs")
        chosen = balanced_sample(units, num_identity,
                                 ["scene_id", "subset_size", "scene_concept", "template_id"], seed + 1)
        names = {s: scene_class_names(scenes_dir, s) for s in chosen["scene_id"].unique()}
        for r in chosen.itertuples():
            if r.concept_index >= len(names[r.scene_id]):
                raise DataError(f"{scenes_dir / r.scene_id / 'scene.json'}: no concept {r.concept_index}, "
                                f"but subset {r.subset} uses it")
            questions.append(Question("identity", r.scene_id, int(r.template_id), r.template, r.subset,
                                      int(r.subset_size), int(r.seed_index), r.prompt_classes, items(r.paths),
                                      int(r.concept_index), names[r.scene_id][r.concept_index]))
    return questions
