"""Every output location of a run, named in one place.

Relative entries of `params.yaml: paths` are under `paths.storage_root`; the storage root
itself is relative to the working directory (the project root for DVC stages), so a team
can point it at shared storage all workers write to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from bas.config import Config

# File names, spelled once: every module of bas names these files through these constants.
# Inside a scene directory (`scene_dir`) and the scenes directory:
SCENE_JSON = "scene.json"                 # the scene's metadata, written last
SCENE_IMAGE_FILE = "image.png"
SCENE_INDEX_FILE = "index.parquet"        # in the scenes directory: one row per concept
# Inside a run directory (`run_dir`):
TRAIN_DIR = "train"                       # the training's outputs
# While a training is unfinished: the state after its last finished phase (it resumes from there).
RESUME_DIR = ".train-phases"
RESUME_STATE = "state.pt"                 # in .train-phases/: random states, log, phase summaries
RESUME_TENSORS = "state.safetensors"      # in .train-phases/: token rows and weights trained so far
TRAIN_JSON = "train.json"                 # in train/: the training summary, its marker (written last)
LOG_FILE = "log.jsonl"                    # in train/: one line per step
TOKENS_FILE = "tokens.safetensors"        # in train/: the learned token embeddings
TRAINED_WEIGHTS_FILE = "weights/trained.safetensors"   # in train/: other trained parameters, when kept
IMAGES_DIR = "images"
MANIFEST_FILE = "manifest.parquet"        # one row per generated image, written last
GENERATION_JSON = "generation.json"       # the settings the images were made with
SCORES_FILE = "scores.parquet"            # a run's scores when scored in place (`bas score --run`)
DONE_FILE = "done.json"                   # train + grid finished for this fingerprint
# Beside each trained sandbox model's weights (bas/sandbox):
TRAINING_RECORD_FILE = "training_record.json"


def storage_root(cfg: Config) -> Path:
    return Path(cfg.paths.storage_root)


def scenes_dir(cfg: Config) -> Path:
    return storage_root(cfg) / cfg.paths.scenes


def scene_index(cfg: Config) -> Path:
    return scenes_dir(cfg) / SCENE_INDEX_FILE


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
    return Path(run) / TRAIN_DIR


def images_dir(run: Path) -> Path:
    return Path(run) / IMAGES_DIR


def manifest_path(run: Path) -> Path:
    """One row per generated image; written last, so it marks the images as complete."""
    return Path(run) / MANIFEST_FILE


def generation_settings_path(run: Path) -> Path:
    """The settings the images were made with; a rerun with other settings starts afresh."""
    return Path(run) / GENERATION_JSON


def scores_path(run: Path) -> Path:
    return Path(run) / SCORES_FILE


def prior_images_root(cfg: Config) -> Path:
    """Class images for prior preservation, one folder per (model, prompt, count, sampler) key."""
    return storage_root(cfg) / cfg.paths.prior_images


def describe(cfg: Config, path: str | Path) -> Optional[str]:
    """What the output at `path` is, in words (errors that name a file say what it was), or None."""
    path = Path(path).absolute()

    def within(directory: Path) -> Optional[tuple[str, ...]]:
        directory = Path(directory).absolute()
        return path.relative_to(directory).parts if path == directory or directory in path.parents else None

    if within(scenes_dir(cfg)) is not None:
        return "a staged scene"
    if within(prior_images_root(cfg)) is not None:
        return "class images for prior preservation"
    run = within(runs_dir(cfg))
    if run is not None:
        inside = run[2] if len(run) > 2 else ""
        if RESUME_DIR in inside:   # .train-phases, or atomic_dir's ..train-phases.<x>.tmp
            return "the training's state after a phase, to resume from"
        if inside == TRAIN_DIR or inside.startswith(f".{TRAIN_DIR}."):
            return "the training's outputs: tokens, log, kept weights"
        if inside == IMAGES_DIR:
            return "a grid image"
        return "the grid's records: settings, manifest, done marker"
    if within(scores_dir(cfg)) is not None:
        return "scores"
    if within(recipes_dir(cfg)) is not None:
        return "a resolved recipe"
    if within(records_dir(cfg)) is not None:
        return "run records: attempts, leases, Prefect results, run summaries"
    if within(reports_dir(cfg)) is not None:
        return "the report"
    return None
