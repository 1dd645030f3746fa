"""Generate the image grid of one trained (method, scene) into its run directory.

    generate_run(cfg, method, scene_id)            # load base model + trained tokens/weights
    generate_grid(parts, tokens, scene, method, cfg, out_dir)   # parts already trained

Writes `images/<key>.png` (each atomically, as soon as its batch is done),
`generation.json` (the settings the images were made with) and, last, `manifest.parquet`.
Resumable: images already on disk are not made again. If the settings that decide pixels
(profile, sampler, steps, guidance, negative prompt, global seed, templates, the learned
token rows) changed since the images were made, the old images, manifest and scores are
stale and are removed first, so a run directory always holds one consistent grid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd
from tqdm.auto import tqdm

from bas import paths
from bas.batching import batched
from bas.config import Config, to_dict
from bas.errors import DataError
from bas.generation.grid import GridItem, build_grid, concept_subsets
from bas.generation.sampler_registry import SAMPLER_SETTINGS, get_sampler
from bas.io import atomic_save_image, atomic_write_json, atomic_write_parquet
from bas.paths import TOKENS_FILE, TRAIN_JSON
from bas.scenes import load_scene
from bas.schema import MANIFEST_COLUMNS, frame

log = logging.getLogger(__name__)

# Settings that decide an image's pixels; a change makes existing images stale.
# `sampler_settings` is present only for samplers with settings (SAMPLER_SETTINGS).
# `steps_offset` is the DDIM timestep offset (bas.models.registry.DDIM_STEPS_OFFSET); grids made
# before it was recorded used 1 and are stale.
PIXEL_SETTINGS = ("profile", "sampler", "steps", "steps_offset", "guidance_scale", "negative_prompt", "seed",
                  "tokens_sha256", "sampler_settings")


@dataclass
class GridPlan:
    items: list[GridItem]
    missing: list[GridItem]
    settings: dict
    stale: list[str]          # why existing outputs are stale ("steps: 50 -> 2"), empty if not

    @property
    def complete(self) -> bool:
        return not self.missing and not self.stale


def tokens_fingerprint(rows: dict[str, "object"]) -> str:
    """SHA-256 of the learned token rows (fp32), in token order."""
    h = hashlib.sha256()
    for token, row in rows.items():
        h.update(token.encode())
        h.update(row.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _token_rows(parts, tokens: Sequence[str]) -> dict:
    ids = parts.tokenizer.convert_tokens_to_ids(list(tokens))
    weight = parts.text_encoder.get_input_embeddings().weight
    return {token: weight[i] for token, i in zip(tokens, ids)}


def settings_for(cfg: Config, method: str, scene_id: str, profile: str, tokens_sha256: str) -> dict:
    # bas.models imports torch: bas.done plans a grid (plan_grid) without it (CLI start-up)
    from bas.models.registry import DDIM_STEPS_OFFSET

    gen = cfg.generation
    settings = {
        "method": method, "scene_id": scene_id, "profile": profile, "sampler": gen.sampler,
        "steps": gen.steps, "steps_offset": DDIM_STEPS_OFFSET, "guidance_scale": gen.guidance_scale,
        "negative_prompt": gen.negative_prompt,
        "seed": cfg.seed, "templates": list(gen.templates), "seeds": gen.seeds,
        "tokens_sha256": tokens_sha256,
    }
    if gen.sampler in SAMPLER_SETTINGS:
        settings["sampler_settings"] = to_dict(getattr(gen, SAMPLER_SETTINGS[gen.sampler]))
    return settings


def _stale_reasons(old: dict, new: dict) -> list[str]:
    reasons = [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in PIXEL_SETTINGS
               if old.get(key) != new.get(key)]
    # Appending templates or seeds only grows the grid; an id whose text changed is stale.
    for template_id, (was, now) in enumerate(zip(old.get("templates", []), new["templates"])):
        if was != now:
            reasons.append(f"templates[{template_id}]: {was!r} -> {now!r}")
    return reasons


def plan_grid(cfg: Config, method: str, scene_id: str, tokens: Sequence[str], class_names: Sequence[str],
              profile: str, tokens_sha256: str, out_dir: Path) -> GridPlan:
    items = build_grid(scene_id, tokens, class_names, cfg.generation, cfg.seed)
    settings = settings_for(cfg, method, scene_id, profile, tokens_sha256)
    settings_file = paths.generation_settings_path(out_dir)
    stale: list[str] = []
    if settings_file.exists():
        stale = _stale_reasons(json.loads(settings_file.read_text()), settings)
    images = paths.images_dir(out_dir)
    missing = list(items) if stale else [it for it in items if not (images / f"{it.key}.png").exists()]
    return GridPlan(items=items, missing=missing, settings=settings, stale=stale)


def manifest_frame(items: Sequence[GridItem], method: str, sampler: str) -> pd.DataFrame:
    rows = [{
        "method": method, "scene_id": it.scene_id, "template_id": it.template_id, "template": it.template,
        "subset": it.subset_label, "subset_size": len(it.subset), "seed_index": it.seed_index,
        "seed": it.seed, "prompt": it.prompt, "prompt_classes": it.prompt_classes, "sampler": sampler,
        "path": (paths.images_dir(Path()) / f"{it.key}.png").as_posix(),  # relative to the run
    } for it in items]
    return frame(rows, MANIFEST_COLUMNS)


def _device_settings(parts, cfg: Config):
    import torch   # torch: only when images are made (bas.done imports this module without it)

    device = parts.unet.device
    dtype = None
    if device.type == "cuda":
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[cfg.models.gpu_dtype]
    mode = cfg.generation.batch_invariant
    invariant = mode == "always" or (mode == "auto" and device.type == "cpu")
    return dtype, invariant


def _clear_stale(out_dir: Path, reasons: list[str]) -> None:
    log.warning("%s: existing images were made with other settings (%s); removing them, their "
                "manifest and scores", out_dir, "; ".join(reasons))
    shutil.rmtree(paths.images_dir(out_dir), ignore_errors=True)
    for stale in (paths.manifest_path(out_dir), paths.scores_path(out_dir)):
        stale.unlink(missing_ok=True)


def generate_grid(parts, tokens: Sequence[str], scene, method: str, cfg: Config, out_dir: str | Path,
                  *, progress: bool = True) -> pd.DataFrame:
    """Make every missing image of the (method, scene) grid with trained `parts`; return the manifest.

    `tokens[i]` is the placeholder of concept i (`scene.class_names[i]`); `scene` needs
    `scene_id`, `class_names` and, for samplers with spatial control, `masks`.
    """
    out_dir = Path(out_dir)
    if len(tokens) != len(scene.class_names):
        raise DataError(f"{out_dir}: {len(tokens)} learned tokens but scene {scene.scene_id} has "
                        f"{len(scene.class_names)} concepts")
    fingerprint = tokens_fingerprint(_token_rows(parts, tokens))
    plan = plan_grid(cfg, method, scene.scene_id, tokens, scene.class_names, parts.profile, fingerprint, out_dir)
    _log_grid(plan, method, scene)
    if plan.stale:
        _clear_stale(out_dir, plan.stale)
    if plan.stale or plan.missing or not paths.generation_settings_path(out_dir).exists():
        paths.manifest_path(out_dir).unlink(missing_ok=True)  # no marker while images change
        atomic_write_json(paths.generation_settings_path(out_dir), plan.settings)
    if plan.missing:
        _make_images(parts, plan.missing, scene, method, cfg, out_dir, progress)
    manifest = manifest_frame(plan.items, method, cfg.generation.sampler)
    atomic_write_parquet(paths.manifest_path(out_dir), manifest)
    return manifest


def _log_grid(plan: GridPlan, method: str, scene) -> None:
    n = len(scene.class_names)
    gen_seeds = plan.settings["seeds"]
    log.info("%s/%s: grid of %d images = %d subsets x %d templates x %d seeds; %d to make",
             method, scene.scene_id, len(plan.items), len(concept_subsets(n)), len(plan.settings["templates"]),
             gen_seeds, len(plan.missing))


def _make_images(parts, items: list[GridItem], scene, method: str, cfg: Config, out_dir: Path,
                 progress: bool) -> None:
    sampler = get_sampler(cfg.generation.sampler)
    dtype, invariant = _device_settings(parts, cfg)
    images_dir = paths.images_dir(out_dir)
    images_dir.mkdir(parents=True, exist_ok=True)

    def run(batch):
        return sampler(parts, batch, scene, cfg.generation, dtype=dtype, batch_invariant=invariant)

    with tqdm(total=len(items), desc=f"{method}/{scene.scene_id}", unit="img", disable=not progress) as bar:
        for batch, images in batched(run, items, cfg.generation.batch_size, what=f"generate {method}/{scene.scene_id}"):
            if len(images) != len(batch):
                raise RuntimeError(f"sampler {cfg.generation.sampler} returned {len(images)} images for "
                                   f"{len(batch)} prompts")
            for item, image in zip(batch, images):
                atomic_save_image(images_dir / f"{item.key}.png", image)
            bar.update(len(batch))


def regenerate_image(parts, tokens: Sequence[str], scene, cfg: Config, template_id: int,
                     subset: Sequence[int], seed_index: int):
    """One grid image made alone: with batch invariance on, bitwise the grid's image."""
    subset = tuple(subset)
    item = next((it for it in build_grid(scene.scene_id, tokens, scene.class_names, cfg.generation, cfg.seed)
                 if it.template_id == template_id and it.subset == subset and it.seed_index == seed_index), None)
    if item is None:
        raise DataError(f"scene {scene.scene_id}: no grid image with template {template_id}, subset {subset}, "
                        f"seed index {seed_index}")
    dtype, invariant = _device_settings(parts, cfg)
    sampler = get_sampler(cfg.generation.sampler)
    return sampler(parts, [item], scene, cfg.generation, dtype=dtype, batch_invariant=invariant)[0]


# --------------------------------------------------------------------------- from a run directory


def read_train_meta(run: Path) -> dict:
    train_json = paths.train_dir(run) / TRAIN_JSON
    if not train_json.exists():
        raise DataError(f"no finished training in {paths.train_dir(run)}: {train_json.name} is missing "
                        "(train the method on the scene first)")
    try:
        meta = json.loads(train_json.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{train_json}: not valid JSON: {err}") from None
    for key in ("scene_id", "class_names"):
        if key not in meta:
            raise DataError(f"{train_json}: missing key {key!r}")
    return meta


def generate_run(cfg: Config, method: str, scene_id: str, run: Optional[str | Path] = None,
                 scenes_dir: Optional[str | Path] = None, *, progress: bool = True,
                 out: Optional[str | Path] = None) -> pd.DataFrame:
    """Generate the grid of a trained run directory (default `paths.run_dir(cfg, method, scene_id)`).

    `out`: where images, manifest and settings go (default: the run directory), e.g. a second
    grid of the same training made with another sampler (`generation.sampler: mifo_box`).
    """
    # The models and the tokens file import torch: only when a grid is made (bas.done, CLI start-up)
    from bas.models import load_diffusion, pick_device
    from bas.tokens import apply_trained, load_tokens

    run = Path(run) if run else paths.run_dir(cfg, method, scene_id)
    meta = read_train_meta(run)
    if meta["scene_id"] != scene_id:
        raise DataError(f"{paths.train_dir(run) / TRAIN_JSON}: trained on scene {meta['scene_id']!r}, "
                        f"not {scene_id!r}")
    scene = load_scene(Path(scenes_dir) / scene_id if scenes_dir else paths.scene_dir(cfg, scene_id))
    if list(meta["class_names"]) != list(scene.class_names):
        raise DataError(f"{run}: trained on classes {meta['class_names']} but scene {scene_id} has "
                        f"{scene.class_names}")
    out = Path(out) if out else run
    learned, _ = load_tokens(paths.train_dir(run) / TOKENS_FILE)
    plan = plan_grid(cfg, method, scene_id, list(learned), scene.class_names, cfg.models.profile,
                     tokens_fingerprint(learned), out)
    if plan.complete and paths.manifest_path(out).exists():
        _log_grid(plan, method, scene)
        log.info("%s/%s: every image is already there", method, scene_id)
        return pd.read_parquet(paths.manifest_path(out))

    parts = load_diffusion(cfg.models)
    tokens = apply_trained(parts, paths.train_dir(run))
    device = pick_device()
    for module in (parts.unet, parts.vae, parts.text_encoder):
        module.to(device)
    return generate_grid(parts, tokens, scene, method, cfg, out, progress=progress)
