"""Score generated images: one row per (image, concept in its prompt), PROTOCOL.md sec. 5.

    score_run(cfg, run_dir)                       # a bas run: reads manifest.parquet
    score_folder(cfg, images_dir, scenes_dir)     # any folder of images, e.g. another method's

For each image: CLIP prompt similarity against `prompt_classes`; MaskFormer panoptic
segments; then for each concept c of its subset, with G_c = the image masked to the union of
c's class segments and I_j = the scene image masked to concept j's mask:

    detected                      = c's class has a segment in the image
    identity_similarity (SIM-D)   = cos(DINO(I_c), DINO(G_c)); NaN when not detected
    identity_similarity_fallback  = cos(DINO(I_c), DINO(whole image)); always set
    nsim_d                        = mean over j != c of cos(DINO(G_c or whole image), DINO(I_j))
    cs                            = prompt_similarity * SIM-D * (1 - nsim_d)   (MIFO)
    clip_i                        = cos(CLIP(image), CLIP(I_c))

Models are loaded once, images scored in batches of `scoring.batch_size` (halved on
out-of-memory), and the table written atomically, validated against `schema.SCORE_COLUMNS`.

A folder `bas` did not make is described either by a manifest file or by file names:
- `manifest.parquet` or `manifest.csv` in the folder (or `--manifest FILE`), one row per
  image, with columns `path` (relative to the folder), `scene_id`, `subset` ("0+2"), and
  `prompt_classes` (the prompt with "a <class>" for each concept) or `template_id` (an index
  of `generation.templates`; the class prompt is then built as bas builds it). Optional:
  `method`, `template`, `seed_index`, `seed`, `prompt`, `sampler`.
- otherwise `<scene_id>/<key>.png` (or `<scene_id>/images/<key>.png`, a bas run's layout)
  with `<key>` = `t<template_id>_c<subset>_s<seed_index>`, e.g. `coco-train2017-599/t03_c0+1_s000.png`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from bas import paths
from bas.batching import batched
from bas.config import Config, GenerationConfig, ScoringConfig
from bas.errors import DataError
from bas.generation.grid import class_phrase, parse_image_key, parse_subset, subset_label
from bas.io import atomic_write_parquet
from bas.kinds import EXTERNAL as EXTERNAL_KIND
from bas.models import load_scorers, pick_device
from bas.paths import MANIFEST_FILE
from bas.scenes import Scene, load_scene
from bas.scenes.masking import masked_concept
from bas.scoring.clip_scores import ClipEmbedder
from bas.scoring.dino_scores import DinoEmbedder
from bas.schema import MANIFEST_COLUMNS, METRICS, SCORE_COLUMNS, frame, validate
from bas.scoring.segment import Segmentation, make_segmenter

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
FOREIGN_MANIFESTS = (MANIFEST_FILE, "manifest.csv")


def composite_score(sim_c, sim_d, nsim_d):
    """MIFO's CS = SIM-C x SIM-D x (1 - NSIM-D); scalars or arrays."""
    return sim_c * sim_d * (1 - nsim_d)


@dataclass
class SceneEmbeddings:
    dino: torch.Tensor   # (N, D) masked input concepts
    clip: torch.Tensor   # (N, D')


class Scorer:
    """The three scoring models, loaded once, and per-scene embeddings cached."""

    def __init__(self, scorers, cfg: ScoringConfig, device: Optional[torch.device] = None,
                 segmenter: Optional[Callable[[Sequence[Image.Image]], list[Segmentation]]] = None):
        self.device = device or next(scorers.clip_model.parameters()).device
        self.cfg = cfg
        self.profile = scorers.profile
        self.clip = ClipEmbedder(scorers, self.device)
        self.dino = DinoEmbedder(scorers, self.device, cfg.dino_crop_pct)
        self.segment = segmenter or make_segmenter(scorers, cfg, self.device)
        # A segmenter passed in may be any callable; only ours say which classes they know.
        labels = getattr(self.segment, "labels", None)
        self.labels = set(labels if labels is not None else scorers.panoptic_id2label.values())
        self._scenes: dict[str, SceneEmbeddings] = {}
        self._warned: set[str] = set()

    def scene_embeddings(self, scene: Scene) -> SceneEmbeddings:
        if scene.scene_id not in self._scenes:
            concepts = [masked_concept(scene.image, mask) for mask in scene.masks]
            self._scenes[scene.scene_id] = SceneEmbeddings(dino=self._dino(concepts), clip=self.clip.images(concepts))
            for name in scene.class_names:
                if name not in self.labels and name not in self._warned:
                    self._warned.add(name)
                    log.warning("class %r (scene %s) is not a segmenter label: it is never detected, so its "
                                "identity similarity is NaN and only the fallback is set", name, scene.scene_id)
        return self._scenes[scene.scene_id]

    def _dino(self, images: list[Image.Image]) -> torch.Tensor:
        chunks = [self.dino.images(images[i : i + self.cfg.batch_size])
                  for i in range(0, len(images), self.cfg.batch_size)]
        return torch.cat(chunks)                                                  # (len(images), D)

    @torch.no_grad()
    def score_batch(self, rows: Sequence[dict], images: Sequence[Image.Image],
                    scenes: Sequence[Scene]) -> list[dict]:
        """Score rows for a batch of images; `rows` are manifest rows, one per image."""
        segmentations = self.segment(list(images))
        clip_images = self.clip.images(images)                                    # (B, D')
        clip_texts = self.clip.texts([row["prompt_classes"] for row in rows])     # (B, D')
        prompt_sims = (clip_images * clip_texts).sum(-1).tolist()                 # (B,)

        # Every DINO input of the batch at once: whole images, then detected concepts.
        dino_inputs = list(images)
        plans = []  # (image index, concept, mask area, index into dino_inputs or None)
        for b, (row, image, scene, seg) in enumerate(zip(rows, images, scenes, segmentations)):
            for concept in parse_subset(row["subset"]):
                mask = seg.class_mask(scene.class_names[concept])                 # (H, W) bool
                area = float(mask.mean()) if mask.size else 0.0
                slot = None
                if mask.any():
                    slot = len(dino_inputs)
                    dino_inputs.append(masked_concept(image, mask))
                plans.append((b, concept, area, slot))
        dino = self._dino(dino_inputs)                                            # (B + detected, D)

        out = []
        for b, concept, area, slot in plans:
            row, scene = rows[b], scenes[b]
            ref = self.scene_embeddings(scene)
            whole = dino[b]
            generated = dino[slot] if slot is not None else whole
            others = [j for j in range(len(scene.class_names)) if j != concept]
            identity = float(generated @ ref.dino[concept]) if slot is not None else math.nan
            nsim_d = float((ref.dino[others] @ generated).mean()) if others else math.nan
            out.append({
                **{c.name: row[c.name] for c in MANIFEST_COLUMNS},
                "profile": self.profile,
                "concept_index": concept,
                "class_name": scene.class_names[concept],
                "prompt_similarity": prompt_sims[b],
                "clip_i": float(clip_images[b] @ ref.clip[concept]),
                "detected": slot is not None,
                "detected_area": area,
                "identity_similarity": identity,
                "identity_similarity_fallback": float(whole @ ref.dino[concept]),
                "nsim_d": nsim_d,
                "cs": composite_score(prompt_sims[b], identity, nsim_d),
            })
        return out


def _load_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read generated image {path}: {err}") from None


class SceneCache:
    """Scenes by id from a scenes directory, each read once."""

    def __init__(self, scenes_dir: Path):
        self.scenes_dir = Path(scenes_dir)
        self._scenes: dict[str, Scene] = {}

    def __call__(self, scene_id: str) -> Scene:
        if scene_id not in self._scenes:
            self._scenes[scene_id] = load_scene(self.scenes_dir / scene_id)
        return self._scenes[scene_id]


def score_manifest(manifest: pd.DataFrame, image_root: Path, scenes: Callable[[str], Scene], scorer: Scorer,
                   *, kind: str, progress: bool = True) -> pd.DataFrame:
    """Scores of every image in `manifest` (paths relative to `image_root`); `kind` is the
    method's (`bas.kinds`), written on every row for the report."""
    manifest = validate(manifest.copy(), MANIFEST_COLUMNS, "manifest")
    rows = manifest.to_dict("records")
    for row in rows:  # fail before any model runs
        scene = scenes(row["scene_id"])
        bad = [i for i in parse_subset(row["subset"]) if i >= len(scene.class_names)]
        if bad:
            raise DataError(f"{row['path']}: subset {row['subset']} names concept(s) {bad} but scene "
                            f"{row['scene_id']} has {len(scene.class_names)}")
        if not (Path(image_root) / row["path"]).exists():
            raise DataError(f"generated image not found: {Path(image_root) / row['path']}")

    def run(batch):
        images = [_load_image(Path(image_root) / row["path"]) for row in batch]
        return scorer.score_batch(batch, images, [scenes(row["scene_id"]) for row in batch])

    scored: list[dict] = []
    with tqdm(total=len(rows), desc="score", unit="img", disable=not progress) as bar:
        for batch, result in batched(run, rows, scorer.cfg.batch_size, what="score"):
            scored.extend({**row, "kind": kind} for row in result)
            bar.update(len(batch))
    return frame(scored, SCORE_COLUMNS)


def summary(scores: pd.DataFrame) -> dict:
    """Image and row counts, detection rate and the mean of every metric."""
    out = {"images": int(scores["path"].nunique()) if len(scores) else 0, "rows": len(scores)}
    for name in METRICS:
        values = scores[name].astype(float)
        out[name] = float(values.mean()) if values.notna().any() else math.nan
    return out


def _log_summary(scores: pd.DataFrame, where: Path) -> None:
    s = summary(scores)
    log.info("%s: %d images, %d rows; detection rate %.3f; prompt %.4f, identity %.4f (fallback %.4f), "
             "nsim_d %.4f, cs %.4f, clip_i %.4f", where, s["images"], s["rows"], s["detected"],
             s["prompt_similarity"], s["identity_similarity"], s["identity_similarity_fallback"], s["nsim_d"],
             s["cs"], s["clip_i"])


def make_scorer(cfg: Config, scorers=None, segmenter=None) -> Scorer:
    device = pick_device()
    if scorers is None:
        scorers = load_scorers(cfg.models)
        for module in (scorers.clip_model, scorers.dino_model, scorers.maskformer):
            if module is not None:   # no MaskFormer on the sandbox profile: its segmenter moves in make_segmenter
                module.to(device)
    else:
        device = next(scorers.clip_model.parameters()).device
    return Scorer(scorers, cfg.scoring, device, segmenter)


def score_run(cfg: Config, run: str | Path, scenes_dir: Optional[str | Path] = None, *, kind: str,
              scorer: Optional[Scorer] = None, progress: bool = True) -> pd.DataFrame:
    """Score a run directory's images into its `scores.parquet`; `kind` is its method's."""
    run = Path(run)
    manifest_file = paths.manifest_path(run)
    if not manifest_file.exists():
        raise DataError(f"no finished generation in {run}: {manifest_file.name} is missing (run `bas generate`)")
    scorer = scorer or make_scorer(cfg)
    scores = score_manifest(pd.read_parquet(manifest_file), run, SceneCache(scenes_dir or paths.scenes_dir(cfg)),
                            scorer, kind=kind, progress=progress)
    atomic_write_parquet(paths.scores_path(run), scores)
    _log_summary(scores, paths.scores_path(run))
    return scores


def score_folder(cfg: Config, images_dir: str | Path, scenes_dir: str | Path, out: Optional[str | Path] = None,
                 *, method: Optional[str] = None, manifest: Optional[str | Path] = None,
                 scorer: Optional[Scorer] = None, progress: bool = True) -> pd.DataFrame:
    """Score a folder of images `bas` did not make (see the module doc for how it is described)."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DataError(f"images folder not found: {images_dir}")
    scenes = SceneCache(Path(scenes_dir))
    table = folder_manifest(images_dir, scenes, cfg.generation, method=method, manifest=manifest)
    scorer = scorer or make_scorer(cfg)
    scores = score_manifest(table, images_dir, scenes, scorer, kind=EXTERNAL_KIND, progress=progress)
    out = Path(out) if out else paths.scores_path(images_dir)
    atomic_write_parquet(out, scores)
    _log_summary(scores, out)
    return scores


# --------------------------------------------------------------------------- foreign folders


def folder_manifest(images_dir: Path, scenes: Callable[[str], Scene], gen: GenerationConfig, *,
                    method: Optional[str] = None, manifest: Optional[str | Path] = None) -> pd.DataFrame:
    """A manifest (MANIFEST_COLUMNS) for a folder, from its manifest file or its file names."""
    method = method or images_dir.resolve().name
    if manifest is None:
        manifest = next((images_dir / name for name in FOREIGN_MANIFESTS if (images_dir / name).exists()), None)
    if manifest is not None:
        manifest = Path(manifest)
        if not manifest.exists():
            raise DataError(f"manifest not found: {manifest}")
        table = pd.read_parquet(manifest) if manifest.suffix == ".parquet" else pd.read_csv(manifest)
        rows = [_complete_row(dict(row), scenes, gen, method, f"{manifest} row {i}")
                for i, row in enumerate(table.to_dict("records"))]
    else:
        rows = _rows_from_names(images_dir, scenes, gen, method)
    if not rows:
        raise DataError(f"{images_dir}: no images to score (expected a manifest.parquet/.csv or files named "
                        "<scene_id>/t<template>_c<subset>_s<seed>.png)")
    return frame(rows, MANIFEST_COLUMNS)


def _rows_from_names(images_dir: Path, scenes, gen: GenerationConfig, method: str) -> list[dict]:
    rows, unnamed = [], []
    for path in sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        rel = path.relative_to(images_dir)
        parsed = parse_image_key(path.stem)
        parent_ok = len(rel.parts) == 2 or (len(rel.parts) == 3 and rel.parts[1] == "images")
        if parsed is None or not parent_ok:
            unnamed.append(rel.as_posix())
            continue
        template_id, subset, seed_index = parsed
        rows.append(_complete_row({"path": rel.as_posix(), "scene_id": rel.parts[0], "subset": subset_label(subset),
                                   "template_id": template_id, "seed_index": seed_index},
                                  scenes, gen, method, rel.as_posix()))
    if unnamed:
        raise DataError(f"{images_dir}: {len(unnamed)} image(s) do not follow <scene_id>/t<template>_c<subset>_"
                        f"s<seed>.png and there is no manifest.parquet/.csv: {', '.join(unnamed[:5])}")
    return rows


def _present(row: dict, key: str) -> bool:
    value = row.get(key)
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value != ""


def _complete_row(row: dict, scenes, gen: GenerationConfig, method: str, where: str) -> dict:
    for key in ("path", "scene_id", "subset"):
        if not _present(row, key):
            raise DataError(f"{where}: missing {key!r}")
    scene = scenes(str(row["scene_id"]))
    try:
        subset = parse_subset(str(row["subset"]))
    except ValueError as err:
        raise DataError(f"{where}: {err}") from None
    if subset[-1] >= len(scene.class_names):
        raise DataError(f"{where}: subset {row['subset']} but scene {scene.scene_id} has "
                        f"{len(scene.class_names)} concepts")
    template_id = int(row["template_id"]) if _present(row, "template_id") else -1
    template = str(row["template"]) if _present(row, "template") else ""
    if not template and template_id >= 0:
        if template_id >= len(gen.templates):
            raise DataError(f"{where}: template_id {template_id} but params generation.templates has "
                            f"{len(gen.templates)}")
        template = gen.templates[template_id]
    if _present(row, "prompt_classes"):
        prompt_classes = str(row["prompt_classes"])
    elif template:
        prompt_classes = template.format(tokens=class_phrase([scene.class_names[i] for i in subset]))
    else:
        raise DataError(f"{where}: needs `prompt_classes` or `template_id` to know the prompt")
    return {
        "method": str(row["method"]) if _present(row, "method") else method,
        "scene_id": str(row["scene_id"]), "template_id": template_id, "template": template,
        "subset": subset_label(subset), "subset_size": len(subset),
        "seed_index": int(row["seed_index"]) if _present(row, "seed_index") else 0,
        "seed": int(row["seed"]) if _present(row, "seed") else -1,
        "prompt": str(row["prompt"]) if _present(row, "prompt") else prompt_classes,
        "prompt_classes": prompt_classes,
        "sampler": str(row["sampler"]) if _present(row, "sampler") else "external",
        "path": str(row["path"]),
    }
