"""Picture figures: the BaS Fig. 9 grid and the per-token attention maps (BaS Fig. 4).

For each chosen scene one prompt is shown: the template `report.picture_template_id`, all
of the scene's concepts, seed index `report.picture_seed_index`; the input with its masks
comes first, then every method's image for that same prompt, subset and seed. Attention
maps are read from `<run>/attention/<image stem>.npz` (one HxW array per placeholder token)
when a method saved them.
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from bas.config import ReportConfig
from bas.errors import ConfigError, DataError
from bas.paths import SCENE_IMAGE_FILE, SCENE_JSON
from bas.report import plots
from bas.report.results import Results
from bas.report.plots import Plot, plt

MASK_COLORS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
               (70, 240, 240), (240, 50, 230), (210, 245, 60))


@dataclass
class InputScene:
    scene_id: str
    image: Optional[Image.Image]
    masks: list[np.ndarray]  # bool HxW, one per concept
    class_names: list[str]


@dataclass
class PictureRow:
    scene_id: str
    prompt: str  # with class names
    subset: str
    template_id: int
    seed_index: int
    plot: Optional[Plot]
    missing: list[str] = field(default_factory=list)  # methods with no image for this prompt
    note: str = ""


@dataclass
class AttentionRow:
    scene_id: str
    plot: Optional[Plot]
    produced: list[str]
    not_produced: list[str]


def choose_scenes(results: Results, cfg: ReportConfig) -> list[str]:
    available = sorted(results.images["scene_id"].unique())
    if cfg.picture_scenes:
        unknown = [s for s in cfg.picture_scenes if s not in available]
        if unknown:
            raise ConfigError(f"params: report.picture_scenes: no results for scene(s) {', '.join(unknown)} "
                              f"(have: {', '.join(available)})")
        return list(cfg.picture_scenes)
    return available[: cfg.picture_scene_count]


def load_input_scene(scenes_dir: Path, scene_id: str) -> InputScene:
    """The input image, masks and class names; what is missing stays empty (shown as such)."""
    root = scenes_dir / scene_id
    image = Image.open(root / SCENE_IMAGE_FILE).convert("RGB") if (root / SCENE_IMAGE_FILE).exists() else None
    masks, names = [], []
    meta_file = root / SCENE_JSON
    if meta_file.exists():
        try:
            meta = json.loads(meta_file.read_text())
            concepts = sorted(meta["concepts"], key=lambda c: c["index"])
            files = [(root / c["mask"], c["class_name"]) for c in concepts]
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"{meta_file}: not a scene description: {err}") from None
    else:
        found = sorted(root.glob("mask_*.png"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
        files = [(p, f"concept {i}") for i, p in enumerate(found)]
    for path, name in files:
        if path.exists():
            masks.append(np.asarray(Image.open(path).convert("L")) > 127)
            names.append(name)
    return InputScene(scene_id, image, masks, names)


def mask_overlay(scene: InputScene) -> np.ndarray:
    """The input dimmed, each concept's mask tinted in its colour."""
    base = np.asarray(scene.image, dtype=np.float32) / 255.0  # (H, W, 3)
    out = base * 0.35
    for i, mask in enumerate(scene.masks):
        if mask.shape != base.shape[:2]:
            mask = np.asarray(Image.fromarray(mask).resize(base.shape[1::-1], Image.NEAREST))
        color = np.array(MASK_COLORS[i % len(MASK_COLORS)], dtype=np.float32) / 255.0
        out[mask] = 0.45 * base[mask] + 0.55 * color
    return out


def _pick_images(results: Results, scene_id: str, n_concepts: int, cfg: ReportConfig):
    rows = results.manifests[results.manifests["scene_id"] == scene_id]
    if rows.empty:
        return rows, "", cfg.picture_template_id, "no generated images"
    full = "+".join(str(i) for i in range(n_concepts)) if n_concepts else ""
    if not full or not (rows["subset"] == full).any():
        full = rows.loc[rows["subset_size"].idxmax(), "subset"]
    rows = rows[(rows["subset"] == full) & (rows["seed_index"] == cfg.picture_seed_index)]
    note = ""
    template_id = cfg.picture_template_id
    if not (rows["template_id"] == template_id).any() and not rows.empty:
        template_id = int(rows["template_id"].min())
        note = (f"template {cfg.picture_template_id} was not generated for this scene; "
                f"showing template {template_id}")
    return rows[rows["template_id"] == template_id], full, template_id, note


def picture_row(results: Results, scene_id: str, methods: list[str], cfg: ReportConfig,
                plots_dir: Path) -> tuple[PictureRow, dict[str, Path]]:
    """The Fig. 9 row of one scene, and the generated image path of each method shown."""
    scene = load_input_scene(results.scenes_dir, scene_id)
    chosen, subset, template_id, note = _pick_images(results, scene_id, len(scene.masks), cfg)
    by_method = {r.method: results.run_dir(r.method, scene_id) / r.path for r in chosen.itertuples()}
    prompt = chosen["prompt_classes"].iloc[0] if not chosen.empty else ""
    columns = 2 + len(methods)
    fig, axes = plt.subplots(1, columns, figsize=(2.1 * columns, 2.55), squeeze=False)
    axes = axes[0]
    if scene.image is not None:
        axes[0].imshow(scene.image)
        axes[1].imshow(mask_overlay(scene))
        for i, name in enumerate(scene.class_names):
            color = np.array(MASK_COLORS[i % len(MASK_COLORS)]) / 255.0
            axes[1].text(0.02, 0.97 - 0.11 * i, f"{i}: {name}", transform=axes[1].transAxes,
                         fontsize=7, va="top", color="white",
                         bbox=dict(facecolor=color, edgecolor="none", pad=1.2))
    else:
        for ax in axes[:2]:
            ax.text(0.5, 0.5, "scene not found", ha="center", va="center", fontsize=8)
    axes[0].set_title("input", fontsize=9)
    axes[1].set_title("input masks", fontsize=9)
    missing = []
    for ax, method in zip(axes[2:], methods):
        path = by_method.get(method)
        if path is not None and path.exists():
            ax.imshow(Image.open(path).convert("RGB"))
        else:
            missing.append(method)
            ax.text(0.5, 0.5, "no image", ha="center", va="center", fontsize=8, color="#888888")
        ax.set_title(method, fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(textwrap.shorten(f"{scene_id}: “{prompt}” (seed index {cfg.picture_seed_index})", 140),
                 fontsize=9, y=1.0)
    fig.tight_layout()
    plot = plots.save(fig, plots_dir, f"pictures_{_safe(scene_id)}", svg=False)
    if scene.image is None:
        note = "; ".join(n for n in (f"scene not found: {results.scenes_dir / scene_id}", note) if n)
    row = PictureRow(scene_id, prompt, subset, template_id, cfg.picture_seed_index, plot, missing, note)
    return row, {m: p for m, p in by_method.items() if p.exists()}


def _token_order(key: str) -> tuple[int, str]:
    digits = re.findall(r"\d+", key)
    return (int(digits[-1]) if digits else 1 << 30, key)


def load_attention(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as data:
            maps = {key: np.asarray(data[key], dtype=np.float32) for key in data.files}
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable .npz of attention maps: {err}") from None
    for key, value in maps.items():
        if value.ndim != 2:
            raise DataError(f"{path}: map {key!r} has shape {value.shape}, expected (H, W)")
    return dict(sorted(maps.items(), key=lambda kv: _token_order(kv[0])))


def attention_row(results: Results, scene_id: str, images: dict[str, Path], methods: list[str],
                  class_names: list[str], plots_dir: Path) -> AttentionRow:
    """Per-token cross-attention maps of the picture-grid image of each method that saved them."""
    found = {}
    for method in methods:
        image = images.get(method)
        if image is None:
            continue
        npz = results.run_dir(method, scene_id) / "attention" / f"{image.stem}.npz"
        if npz.exists():
            found[method] = (image, load_attention(npz))
    not_produced = [m for m in methods if m not in found]
    if not found:
        return AttentionRow(scene_id, None, [], not_produced)
    width = 1 + max(len(maps) for _, maps in found.values())
    fig, axes = plt.subplots(len(found), width, figsize=(1.9 * width, 2.0 * len(found)), squeeze=False)
    for row, (method, (image, maps)) in zip(axes, found.items()):
        row[0].imshow(Image.open(image).convert("RGB"))
        row[0].set_ylabel(method, fontsize=9)
        row[0].set_title("image", fontsize=8)
        for ax, (token, amap) in zip(row[1:], maps.items()):
            ax.imshow(amap, cmap="inferno", interpolation="nearest")
            index = _token_order(token)[0]
            name = f" ({class_names[index]})" if index < len(class_names) else ""
            ax.set_title(f"{token}{name}", fontsize=8)
        for ax in row[1 + len(maps):]:
            ax.axis("off")
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    plot = plots.save(fig, plots_dir, f"attention_{_safe(scene_id)}", svg=False)
    return AttentionRow(scene_id, plot, list(found), not_produced)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)
