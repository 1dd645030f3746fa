"""Every output location of a run, named in one place.

Relative entries of `params.yaml: paths` are under `paths.storage_root`; the storage root
itself is relative to the working directory (the project root for DVC stages), so a team
can point it at shared storage all workers write to.
"""

from __future__ import annotations

from pathlib import Path

from bas.config import Config


def storage_root(cfg: Config) -> Path:
    return Path(cfg.paths.storage_root)


def scenes_dir(cfg: Config) -> Path:
    return storage_root(cfg) / cfg.paths.scenes


def scene_index(cfg: Config) -> Path:
    return scenes_dir(cfg) / "index.parquet"


def runs_dir(cfg: Config) -> Path:
    return storage_root(cfg) / cfg.paths.runs


def method_dir(cfg: Config, method: str) -> Path:
    return runs_dir(cfg) / method


def run_dir(cfg: Config, method: str, scene_id: str) -> Path:
    return method_dir(cfg, method) / scene_id


def reports_dir(cfg: Config) -> Path:
    return (storage_root(cfg) / cfg.paths.reports).resolve()


def prior_images_root(cfg: Config) -> Path:
    """Class images for prior preservation, one folder per (model, prompt, count, sampler) key."""
    return storage_root(cfg) / cfg.paths.prior_images
