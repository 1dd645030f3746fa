"""A small synthetic results tree with known answers, for the report tests.

(A uniquely named module, not conftest.py, so `from report_fixtures import ...` cannot pick up
another directory's conftest.)

Five methods on two scenes (2 and 3 concepts), two templates, two seeds. Every score is
the method's centre plus offsets that cancel in the mean (+/-SEED_NOISE by seed index,
+/-TEMPLATE_SHIFT by template), so each method's mean is exactly its centre and the Pareto
front is known: ti_m, bas and db_m lie on it; cd_m is dominated by ti_m; the ablation
bas_no_union would be on it (highest prompt similarity) but ablations are kept off it.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
from PIL import Image

from bas.io import atomic_write_parquet
from bas.schema import MANIFEST_COLUMNS, SCORE_COLUMNS, frame

# method -> (prompt similarity, identity similarity) centres
CENTRES = {
    "ti_m": (0.30, 0.50),
    "db_m": (0.20, 0.80),
    "cd_m": (0.25, 0.45),
    "bas": (0.28, 0.70),
    "bas_no_union": (0.32, 0.40),
}
FRONT = ["db_m", "bas", "ti_m"]  # by increasing prompt similarity
SCENES = {"coco-train2017-1": ["dog", "cat"], "coco-train2017-2": ["cup", "chair", "bottle"]}
TEMPLATES = ["a photo of {tokens} at the beach", "a photo of {tokens} in the snow"]
SEEDS = 2
SEED_NOISE = 0.01
TEMPLATE_SHIFT = 0.005
METHOD_COLOURS = {"ti_m": (200, 60, 60), "db_m": (60, 160, 60), "cd_m": (60, 60, 200),
                  "bas": (220, 180, 40), "bas_no_union": (150, 80, 180)}
# cd_m never detects concept 0: its detection rate is hand-computable (37/60, see the test).
UNDETECTED = {("cd_m", 0)}


def write_scene(scenes_dir: Path, scene_id: str, classes: list[str], size: int = 32) -> None:
    root = scenes_dir / scene_id
    root.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:size, 0:size]
    image = np.stack([x * 255 // size, y * 255 // size, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    Image.fromarray(image).save(root / "image.png")
    concepts = []
    band = size // len(classes)
    for i, name in enumerate(classes):
        mask = np.zeros((size, size), dtype=np.uint8)
        mask[:, i * band:(i + 1) * band] = 255
        Image.fromarray(mask, mode="L").save(root / f"mask_{i}.png")
        concepts.append({"index": i, "class_name": name, "category_id": i + 1, "mask": f"mask_{i}.png",
                         "coverage": 1.0 / len(classes)})
    (root / "scene.json").write_text(json.dumps({
        "scene_id": scene_id, "source": {"kind": "user", "image": "synthetic"}, "resolution": size,
        "content_hash": "0" * 64, "concepts": concepts}))


def fixture_kind(method: str) -> str:
    """The kind a method of these fixtures records (as its recipe would declare it)."""
    if method in ("ground_truth", "other_identity"):
        return "reference"
    return "ablation" if method.startswith("bas_no_") else "method"


def write_results(root: Path, centres: dict[str, tuple[float, float]] = CENTRES,
                  profile: str = "tiny", attention_for: tuple[str, ...] = ("bas",),
                  undetected: set[tuple[str, int]] = UNDETECTED) -> Path:
    """A storage root with scenes/ and runs/; returns root."""
    for scene_id, classes in SCENES.items():
        write_scene(root / "scenes", scene_id, classes)
    for method, (prompt_c, identity_c) in centres.items():
        for scene_id, classes in SCENES.items():
            run = root / "runs" / method / scene_id
            (run / "images").mkdir(parents=True, exist_ok=True)
            rows = []
            subsets = [s for k in range(1, len(classes) + 1) for s in itertools.combinations(range(len(classes)), k)]
            for t, template in enumerate(TEMPLATES):
                for subset in subsets:
                    for seed_index in range(SEEDS):
                        key = "+".join(map(str, subset))
                        path = f"images/t{t}_c{key.replace('+', '-')}_s{seed_index}.png"
                        colour = np.array(METHOD_COLOURS[method], dtype=np.uint8)
                        pixels = np.broadcast_to(colour, (16, 16, 3)).copy()
                        pixels[4:12, 4:12] = 255 - colour  # a square, so images are not flat
                        Image.fromarray(pixels).save(run / path)
                        tokens = " and ".join(f"<asset{i}>" for i in subset)
                        classes_text = " and ".join(f"a {classes[i]}" for i in subset)
                        shift = (SEED_NOISE if seed_index == 0 else -SEED_NOISE) + \
                                (TEMPLATE_SHIFT if t == 0 else -TEMPLATE_SHIFT)
                        if method in attention_for and t == 0 and seed_index == 0 and len(subset) == len(classes):
                            (run / "attention").mkdir(exist_ok=True)
                            maps = {f"<asset{i}>": np.outer(np.linspace(0, 1, 8), np.linspace(i % 2, 1 - i % 2, 8))
                                    .astype(np.float32) for i in subset}
                            np.savez(run / "attention" / f"{Path(path).stem}.npz", **maps)
                        for concept in subset:
                            detected = (method, concept) not in undetected
                            identity = identity_c + shift if detected else float("nan")
                            nsim = 0.3
                            prompt_sim = prompt_c + shift
                            rows.append({
                                "method": method, "scene_id": scene_id, "template_id": t,
                                "template": template, "subset": key, "subset_size": len(subset),
                                "seed_index": seed_index, "seed": 1000 * t + 10 * len(subset) + seed_index,
                                "prompt": template.replace("{tokens}", tokens),
                                "prompt_classes": template.replace("{tokens}", classes_text),
                                "sampler": "ddim", "path": path, "kind": fixture_kind(method), "profile": profile,
                                "concept_index": concept, "class_name": classes[concept],
                                "prompt_similarity": prompt_sim, "clip_i": 0.6 + shift,
                                "detected": detected, "detected_area": 0.2 if detected else 0.0,
                                "identity_similarity": identity,
                                "identity_similarity_fallback": identity_c - 0.1 + shift,
                                "nsim_d": nsim,
                                "cs": prompt_sim * identity * (1 - nsim) if detected else float("nan"),
                            })
            scores = frame(rows, SCORE_COLUMNS)
            manifest = scores[[c.name for c in MANIFEST_COLUMNS]].drop_duplicates("path")
            atomic_write_parquet(run / "manifest.parquet", manifest.reset_index(drop=True))
            atomic_write_parquet(run / "scores.parquet", scores)
    return root
