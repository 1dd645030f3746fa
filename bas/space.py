"""What a run will write under the storage root, and whether its filesystem has room.

    need = estimate(cfg)             # per method: tokens, kept weights, grid images, scores
    print(need.text())               # the table `bas models check` prints
    line = room_warning(cfg, need)   # a warning when the free space is below it, else None

An estimate, made before anything loads: a (method, scene) whose done.json records its
outputs, all present at their sizes, is counted as finished (nothing to write); the others
count in full. An image counts as its raw pixels (side x side x 3 bytes: a PNG of noise is
that large, of a photo about half), the tokens as their fp32 rows per phase, the kept
weights (`training.keep_weights`) as the fp32 parameters a recipe trains, the scores and the
run's records by the sizes measured on tiny runs. Class images for prior preservation count
once when none are made yet. Temporary files (a phase's resume state, an image's temporary
sibling) are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from bas import paths
from bas.config import Config
from bas.errors import human_bytes as _size
from bas.io import free_space
from bas.training.methods import get_recipe, method_kind, trains_weights, uses_prior

# Each profile's image side and text embedding width (bas/models/tiny.py and bas/sandbox/base_model.py
# RESOLUTION, TEXT_DIM, which import torch; SD 2.1-base): tests/test_space.py checks them.
PROFILE_SIZES = {"sd21": (512, 1024), "tiny": (128, 32), "sandbox": (64, 64)}
SAFETENSORS_HEADER = 512          # bytes a small safetensors file adds to its tensors
RUN_RECORDS = 16_000              # train.json, log.jsonl, generation.json, manifest, done.json
MANIFEST_ROW = 200
SCORES_FILE = 14_000              # a scores parquet and its marker (3 rows on a tiny run: 14.4 KB)
SCORES_ROW = 500
PARTS = ("tokens", "kept weights", "images", "scores", "class images")


@dataclass
class Estimate:
    """Bytes a run will write, by method and part, and the (method, scene) pairs left to do."""

    by_method: dict[str, dict[str, int]] = field(default_factory=dict)
    todo: dict[str, int] = field(default_factory=dict)        # method -> scenes not finished
    scenes: int = 0

    @property
    def total(self) -> int:
        return sum(sum(parts.values()) for parts in self.by_method.values())

    def text(self) -> str:
        lines = [f"what the run will write under paths.storage_root ({self.scenes} scenes; finished ones count 0):"]
        for method, parts in self.by_method.items():
            shown = ", ".join(f"{part} {_size(n)}" for part, n in parts.items() if n)
            lines.append(f"  {method:<22} {self.todo.get(method, 0)} to do: {shown or 'nothing'}")
        lines.append(f"  {'in all':<22} {_size(self.total)}")
        return "\n".join(lines)


def _scene_concepts(cfg: Config) -> dict[str, int]:
    """Concepts per staged scene (the index), else `scenes.num_scenes` scenes of the most concepts."""
    index = paths.scene_index(cfg)
    if index.exists():
        from bas.scenes.index import read_index   # pandas: only when the scenes are staged

        frame = read_index(index)
        return {str(k): int(v) for k, v in frame.groupby("scene_id").size().items()}
    return {f"scene-{i}": cfg.scenes.max_concepts for i in range(cfg.scenes.num_scenes)}


def _grid_finished(cfg: Config, method: str, scene_id: str) -> bool:
    """A cheap look (no fingerprint, no model): done.json records outputs, all there at their sizes."""
    from bas.done import read_json   # bas.done sits above this module's needs: read its marker only

    run = paths.run_dir(cfg, method, scene_id)
    outputs = (read_json(run / paths.DONE_FILE) or {}).get("outputs")
    if not isinstance(outputs, dict):
        return False
    for name, record in outputs.items():
        try:
            if (run / name).stat().st_size != record.get("size"):
                return False
        except OSError:
            return False
    return True


def _trained_parameters(cfg: Config, recipe) -> int:
    """fp32 parameters the recipe's phases train besides the token rows (sd21: counted from the
    architectures; the other profiles' small models are loaded and counted)."""
    from bas.models import memory

    if cfg.models.profile == "sd21":
        counts = memory.sd21_parameter_counts()
    else:
        from bas.models import load_diffusion

        parts = load_diffusion(cfg.models)
        counts = memory.counts_of(parts.unet, parts.vae, parts.text_encoder)
    trainable = set().union(*(set(p.trainable) for p in recipe.phases.values() if p.steps > 0)) - {"tokens"}
    return memory.trainable_count(counts, trainable) if trainable else 0


def estimate(cfg: Config, methods: Optional[list[str]] = None) -> Estimate:
    """What a `bas run` of `methods` (default: orchestration.methods) writes that is not written yet."""
    side, dim = PROFILE_SIZES.get(cfg.models.profile, PROFILE_SIZES["sd21"])
    image = side * side * 3 + 1024
    gen = cfg.generation
    concepts = _scene_concepts(cfg)
    need = Estimate(scenes=len(concepts))
    class_images_needed = 0
    for method in methods or list(cfg.orchestration.methods):
        parts = dict.fromkeys(PARTS, 0)
        need.by_method[method] = parts
        unscored = [s for s in concepts if not paths.scene_scores_path(cfg, method, s).exists()]
        todo = [s for s in concepts if not _grid_finished(cfg, method, s)]
        need.todo[method] = len(set(todo) | set(unscored))

        def rows(scenes: list[str]) -> int:
            return sum(gen.seeds * len(gen.templates) * (2 ** concepts[s] - 1) for s in scenes)

        parts["scores"] = len(unscored) * SCORES_FILE + rows(unscored) * SCORES_ROW
        if not todo:
            continue
        parts["images"] = rows(todo) * (image + MANIFEST_ROW) + len(todo) * RUN_RECORDS
        recipe = None if method_kind(cfg, method) == "reference" else get_recipe(cfg, method)
        if recipe is None:
            continue
        phases = sum(1 for p in recipe.phases.values() if p.steps > 0)
        parts["tokens"] = sum((phases + 1) * (concepts[s] * dim * 4 + SAFETENSORS_HEADER) for s in todo)
        if cfg.training.keep_weights and trains_weights(recipe):
            parts["kept weights"] = len(todo) * 4 * _trained_parameters(cfg, recipe)
        if uses_prior(recipe):
            count = recipe.prior_num_images or cfg.training.prior_images.num_images
            class_images_needed = max(class_images_needed, count * image)
    made = any(paths.prior_images_root(cfg).glob("*/images.json")) if paths.prior_images_root(cfg).is_dir() else False
    if class_images_needed and not made:
        first = next(m for m, parts in need.by_method.items() if need.todo.get(m))
        need.by_method[first]["class images"] = class_images_needed
    return need


def room_warning(cfg: Config, need: Estimate) -> Optional[str]:
    """A one-line warning when the storage root's filesystem has less free space than `need`."""
    root = paths.storage_root(cfg)
    free, _ = free_space(root)
    if free is None or free >= need.total:
        return None
    return (f"the run will write about {_size(need.total)} under {root} (by method: `bas models check`) but its "
            f"filesystem has {_size(free)} free: free some space or point paths.storage_root elsewhere "
            "(if the disk fills, the run stops with one error and keeps what it finished)")
