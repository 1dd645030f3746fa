"""Staging: write the selected COCO scenes and the scene index; add a user's scene.

`stage_coco` is idempotent: a scene whose directory already holds the same content is not
rewritten, and an index with the same rows is not rewritten, so a rerun with the same
inputs touches no file. Scenes that an earlier staging chose and this one does not are
removed from the index; their directories are kept (the index is the truth), so results
of earlier runs that used them stay readable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from bas.config import ScenesConfig
from bas.errors import DataError
from bas.paths import SCENE_INDEX_FILE, SCENE_JSON
from bas.scenes import index as scene_index
from bas.scenes.coco import CocoSource, Skipped, iter_scenes, read_annotations, resolve_coco_root
from bas.scenes.scene import Scene, load_scene, write_scene

log = logging.getLogger(__name__)


@dataclass
class StageReport:
    source: CocoSource
    out_dir: Path
    num_requested: int
    selected: list[str] = field(default_factory=list)  # scene ids, in rank order
    written: list[str] = field(default_factory=list)  # scene directories (re)written
    unchanged: list[str] = field(default_factory=list)  # already on disk with the same content
    dropped: list[str] = field(default_factory=list)  # COCO scenes of the old index not selected now
    skipped: list[Skipped] = field(default_factory=list)
    index_written: bool = False

    @property
    def index_path(self) -> Path:
        return self.out_dir / SCENE_INDEX_FILE

    def summary(self) -> str:
        return (f"{len(self.selected)}/{self.num_requested} scenes from {self.source.root} "
                f"(split {self.source.split}) in {self.out_dir}: {len(self.written)} written, "
                f"{len(self.unchanged)} unchanged, {len(self.dropped)} dropped from the index, "
                f"{len(self.skipped)} input item(s) skipped; index "
                f"{'written' if self.index_written else 'unchanged'}")


def _criteria(cfg: ScenesConfig) -> str:
    return (f">= 2 classes with exactly one non-crowd instance covering >= {cfg.min_area_fraction:.0%} "
            f"of the centre square crop, excluding {', '.join(cfg.excluded_classes) or 'nothing'}")


def stage_coco(scenes_cfg: ScenesConfig, out_dir: str | Path,
               source: Optional[CocoSource] = None) -> StageReport:
    """Select `num_scenes` scenes from the COCO root (or the demo) and write them + the index."""
    source = source or resolve_coco_root(scenes_cfg)
    out_dir = Path(out_dir)
    if not source.image_dir.is_dir():
        raise DataError(f"COCO image directory not found: {source.image_dir} "
                        f"(expected {source.root}/<split>/*.jpg for split {source.split!r})")
    coco = read_annotations(source)
    report = StageReport(source, out_dir, scenes_cfg.num_scenes, skipped=list(coco.skipped))

    scenes: list[Scene] = []
    found = iter_scenes(source, coco, scenes_cfg, report.skipped)
    with tqdm(total=scenes_cfg.num_scenes, desc="staging scenes", unit="scene", leave=False) as bar:
        for scene in found:
            changed = write_scene(scene, out_dir / scene.scene_id)
            (report.written if changed else report.unchanged).append(scene.scene_id)
            scenes.append(scene)
            bar.update(1)
            if len(scenes) == scenes_cfg.num_scenes:
                break
    found.close()
    for item in report.skipped:
        log.warning("scenes: skipped %s", item)
    if not scenes:
        raise DataError(f"no qualifying scene in COCO root {source.root}, split {source.split!r} "
                        f"({len(coco.images)} images; criteria: {_criteria(scenes_cfg)}; "
                        f"{len(report.skipped)} input item(s) skipped)")
    if len(scenes) < scenes_cfg.num_scenes:
        log.warning("scenes: only %d of the %d requested scenes qualify in %s (split %s)",
                    len(scenes), scenes_cfg.num_scenes, source.root, source.split)

    report.selected = [s.scene_id for s in scenes]
    existing = scene_index.read_or_empty(out_dir / SCENE_INDEX_FILE)
    old_coco = set(existing.loc[existing["source_kind"] == "coco", "scene_id"])
    report.dropped = sorted(old_coco - set(report.selected))
    if report.dropped:
        log.info("scenes: %d scene(s) no longer selected, removed from the index (directories kept): %s",
                 len(report.dropped), ", ".join(report.dropped))
    new_index = scene_index.replace_rows(existing, scenes, drop_kind="coco")
    report.index_written = scene_index.write_index(out_dir / SCENE_INDEX_FILE, new_index)
    log.info("scenes: %s", report.summary())
    return report


def add_scene(scene: Scene, scenes_dir: str | Path, replace: bool = False) -> bool:
    """Write a (user's) scene into `scenes_dir` and put it in the index; True if files changed.

    An existing scene of the same id with other content is replaced only when `replace`.
    """
    scenes_dir = Path(scenes_dir)
    directory = scenes_dir / scene.scene_id
    if (directory / SCENE_JSON).exists() and not replace:
        try:
            existing_hash = load_scene(directory).content_hash
        except DataError:
            existing_hash = None
        if existing_hash != scene.content_hash:
            raise DataError(f"scene {scene.scene_id!r} already exists in {directory} with other content; "
                            "choose another id or pass --replace")
    changed = write_scene(scene, directory)
    index_path = scenes_dir / SCENE_INDEX_FILE
    new_index = scene_index.replace_rows(scene_index.read_or_empty(index_path), [scene])
    changed |= scene_index.write_index(index_path, new_index)
    return changed
