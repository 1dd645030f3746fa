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


# Scores live outside the runs: `runs/<method>/` and `scores/<method>/` are outputs of two
# different DVC stages, and DVC outputs must not overlap.
def scores_dir(cfg: Config) -> Path:
    return storage_root(cfg) / cfg.paths.scores


def method_scores_dir(cfg: Config, method: str) -> Path:
    return scores_dir(cfg) / method


def scene_scores_path(cfg: Config, method: str, scene_id: str) -> Path:
    return method_scores_dir(cfg, method) / f"{scene_id}.parquet"


def recipes_dir(cfg: Config) -> Path:
    return storage_root(cfg) / cfg.paths.recipes


def recipe_path(cfg: Config, method: str) -> Path:
    return recipes_dir(cfg) / f"{method}.json"


def records_dir(cfg: Config) -> Path:
    return storage_root(cfg) / cfg.paths.records


def attempts_dir(cfg: Config, stage: str, method: str, scene_id: str) -> Path:
    """Attempt records of one (stage, method, scene): one JSON file per execution."""
    return records_dir(cfg) / "attempts" / stage / method / scene_id


def run_summaries_dir(cfg: Config) -> Path:
    return records_dir(cfg) / "summaries"


def prefect_results_dir(cfg: Config) -> Path:
    """Prefect's persisted task results and cache records, shared by every worker."""
    return records_dir(cfg) / "prefect-results"


def ratings_db(cfg: Config) -> Path:
    """The human rating study's SQLite database."""
    return storage_root(cfg) / cfg.paths.ratings_db


def ratings_export(cfg: Config) -> Path:
    return storage_root(cfg) / cfg.paths.ratings_export


def scene_dir(cfg: Config, scene_id: str) -> Path:
    return scenes_dir(cfg) / scene_id


# Inside a run directory (`run_dir(cfg, method, scene_id)`, or any folder the user names).

def train_dir(run: Path) -> Path:
    return Path(run) / "train"


def images_dir(run: Path) -> Path:
    return Path(run) / "images"


def manifest_path(run: Path) -> Path:
    """One row per generated image; written last, so it marks the images as complete."""
    return Path(run) / "manifest.parquet"


def generation_settings_path(run: Path) -> Path:
    """The settings the images were made with; a rerun with other settings starts afresh."""
    return Path(run) / "generation.json"


def scores_path(run: Path) -> Path:
    return Path(run) / "scores.parquet"


def prior_images_root(cfg: Config) -> Path:
    """Class images for prior preservation, one folder per (model, prompt, count, sampler) key."""
    return storage_root(cfg) / cfg.paths.prior_images
