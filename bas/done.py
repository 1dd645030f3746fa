"""Is a (method, scene) done, and if not, why not; and what code each stage depends on.

One place answers it for the pipeline, the Prefect tasks' cache keys and dvc.yaml:

- `STAGE_CODE`: the code (files or packages under bas/) each stage's outputs depend on.
  `code_version(stage)` hashes it into the fingerprints; dvc.yaml's `deps` list the same
  paths (tests/test_dvc_pipeline.py checks that they agree).
- fingerprints: a stage's *inputs*, hashed: the scene's content hash, the method's run key
  (resolved recipe, training settings, model identity: `bas.training.engine.run_key`), the
  settings that decide pixels or scores, the code version, and the sandbox's weights.
- markers: a finished stage writes its fingerprint last (`done.json` in the run directory,
  `scores/<method>/<scene_id>.json`), with its outputs' sizes, mtimes and SHA-256 (as DVC's
  lock file does). `train_generate_status` / `score_status` are the one question a stage
  asks: they compare the fingerprint with the current one (and say which input changed),
  and the outputs' sizes and mtimes with the record (re-hashing a file whose mtime moved),
  and name each output that is gone or changed (`Status.changed`): the stage makes it again
  with what depends on it, and is never reported done meanwhile. A score's fingerprint holds
  the SHA-256 of the images it scored, so an image made again differently is scored again.
- `verify(cfg, rehash)`: every recorded output under the storage root against its record
  (`bas verify [--hash]`).
- within a stage: whether a finished training can be reused (`bas.training.engine.is_complete`,
  keyed by its run key) and whether its grid is complete (`grid_complete`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

from bas import paths
from bas.config import Config, to_dict
from bas.errors import DataError
from bas.io import Change, changed_files, record_files
from bas.kinds import REFERENCES
from bas.paths import DONE_FILE, SCENE_JSON, TOKENS_FILE
from bas.training.methods import get_recipe, method_kind

# The model registry, the engine, the grid and the tokens file import torch; they are imported
# in the functions that need them so that `bas stage`, `bas recipes` and the flows start without it.

PACKAGE_DIR = Path(__file__).resolve().parent

# The code each stage's outputs depend on (files or packages under bas/), for its fingerprint
# and for dvc.yaml's `deps`.
STAGE_CODE: dict[str, tuple[str, ...]] = {
    "scenes": ("scenes",),
    "train_generate": ("training", "attention", "generation", "models", "scenes", "tokens.py", "batching.py",
                       "schema.py", "done.py", "pipeline.py"),
    "score": ("scoring", "models", "scenes", "batching.py", "schema.py", "done.py", "pipeline.py"),
    # The sandbox's ground-truth references (bas.kinds.REFERENCES) may be listed in
    # orchestration.methods next to the methods; their "training and grid" is a render of the true objects.
    "reference": ("sandbox/reference.py", "sandbox/world.py", "generation/grid.py", "generation/run.py",
                  "schema.py", "done.py", "pipeline.py"),
    "report": ("report", "ratings", "schema.py", "kinds.py"),
}


@dataclass(frozen=True)
class Status:
    """Whether a stage's outputs are finished for the current inputs, and why not."""

    done: bool
    fingerprint: str
    reasons: list[str] = field(default_factory=list)   # empty when done
    # Outputs the marker records as finished that are now missing or different (relative to
    # the run directory, or to the scores directory of the method): made again by the stage.
    changed: list[Change] = field(default_factory=list)
    marker: Optional[dict] = None        # the marker as read (None when absent or unreadable)
    inputs: Optional[dict] = None        # what the fingerprint hashes, when computed (train_generate)
    grid: Optional["Status"] = None      # score_status(grid=True) of an unscored grid: the grid's own status

    def __bool__(self) -> bool:
        return self.done


# --------------------------------------------------------------------------- code and weights


@functools.lru_cache(maxsize=None)
def code_version(stage: str) -> str:
    """SHA-256 over the source of the modules `stage`'s outputs depend on."""
    h = hashlib.sha256()
    for entry in STAGE_CODE[stage]:
        target = PACKAGE_DIR / entry
        files = sorted(target.rglob("*.py")) if target.is_dir() else [target] if target.exists() else []
        for path in files:
            h.update(path.relative_to(PACKAGE_DIR).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def weights_identity(models_cfg, parts: tuple[str, ...]) -> Optional[str]:
    """What the model files under `parts` are: sd21's sources (hub id @ revision, or a local
    copy named by params or an environment variable), a digest of the sandbox's files, None for tiny.

    tiny builds its weights from a seed the models config already holds; the sandbox's weights
    are files that `bas sandbox train` rewrites in place, so a retrained model must change the
    fingerprints; sd21's environment overrides are not in the config a fingerprint hashes.
    """
    if models_cfg.profile == "sd21":   # hub ids at their revisions, or local copies (env overrides)
        from bas.models.fetch import sd21_identity

        return json.dumps(sd21_identity(models_cfg, parts), sort_keys=True)
    if models_cfg.profile != "sandbox":
        return None
    from bas.models.registry import sandbox_weights_digest   # torch: see the note at the top

    return sandbox_weights_digest(models_cfg, parts)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]


def read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def scene_content_hash(cfg: Config, scene_id: str) -> str:
    """The staged scene's content hash, from its scene.json (no image is read)."""
    scene_json = paths.scene_dir(cfg, scene_id) / SCENE_JSON
    info = read_json(scene_json)
    if info is None or "content_hash" not in info:
        raise DataError(f"scene {scene_id!r}: {scene_json} is missing or unreadable (stage the scenes first)")
    return info["content_hash"]


# --------------------------------------------------------------------------- train + generate


def train_generate_inputs(cfg: Config, method: str, scene_id: str) -> dict:
    """What the run directory's training and grid depend on, by name (hashed into the fingerprint)."""
    if method in REFERENCES:
        return {"reference": method, "scene": scene_content_hash(cfg, scene_id),
                "generation": to_dict(cfg.generation), "seed": cfg.seed, "code": code_version("reference")}
    from bas.training.engine import run_key   # torch: see the note at the top

    scene = SimpleNamespace(scene_id=scene_id, content_hash=scene_content_hash(cfg, scene_id))
    return {"train": run_key(cfg, method, get_recipe(cfg, method), scene),
            "generation": to_dict(cfg.generation), "seed": cfg.seed,
            "code": code_version("train_generate"),
            "weights": weights_identity(cfg.models, ("diffusion",))}


def train_generate_fingerprint(cfg: Config, method: str, scene_id: str) -> str:
    return _digest(train_generate_inputs(cfg, method, scene_id))


def _input_digests(inputs: dict) -> dict[str, str]:
    return {name: _digest(value) for name, value in inputs.items()}


def run_outputs(run: Path) -> list[str]:
    """The files of a run directory its marker records (POSIX, relative to the run): the
    training's outputs, the images, the grid's settings and manifest. Not the marker itself,
    not scores made in place (`bas score --run`), not hidden folders (a killed run's
    temporary ones, the training's resume state)."""
    run = Path(run)
    names = []
    for path in run.rglob("*"):
        name = path.relative_to(run).as_posix()
        if name in (DONE_FILE, paths.SCORES_FILE) or any(part.startswith(".") for part in name.split("/")):
            continue
        if path.is_file():
            names.append(name)
    return sorted(names)


def done_record(cfg: Config, method: str, scene_id: str, status: "Status | str", images: int) -> dict:
    """What `done.json` holds: the fingerprint, the image count, the method's kind (the report
    reads it), a digest of each input (so that a later status can say which one changed) and
    each output's size, mtime and SHA-256 (a file unchanged since the last record is not hashed
    again). `status`: the stage's `train_generate_status` (or its fingerprint)."""
    fingerprint = status if isinstance(status, str) else status.fingerprint
    inputs = None if isinstance(status, str) else status.inputs
    previous = None if isinstance(status, str) else status.marker
    run = paths.run_dir(cfg, method, scene_id)
    return {"fingerprint": fingerprint, "images": images, "kind": method_kind(cfg, method),
            "inputs": _input_digests(inputs or train_generate_inputs(cfg, method, scene_id)),
            "outputs": record_files(run, run_outputs(run), known=(previous or {}).get("outputs"))}


def train_generate_status(cfg: Config, method: str, scene_id: str, fingerprint: Optional[str] = None,
                          rehash: bool = False) -> Status:
    """Whether the run directory holds the finished training and grid for the current inputs
    (or for `fingerprint`), every output as it was recorded (sizes and mtimes; with `rehash`,
    every file's SHA-256)."""
    run = paths.run_dir(cfg, method, scene_id)
    inputs = None if fingerprint else train_generate_inputs(cfg, method, scene_id)
    fingerprint = fingerprint or _digest(inputs)
    done = read_json(run / DONE_FILE)
    reasons = []
    # Outputs gone or changed since they were finished are made again, whatever else changed:
    # a training a new code version reuses must not be a truncated one.
    recorded = (done or {}).get("outputs")
    changes = changed_files(run, recorded, rehash) if isinstance(recorded, dict) else []
    if not done:
        reasons.append(f"no {run / DONE_FILE}: training and grid not finished")
    elif done.get("fingerprint") != fingerprint:
        changed = _changed_inputs(done.get("inputs"), lambda: inputs or train_generate_inputs(cfg, method, scene_id))
        reasons.append(f"{run / DONE_FILE} was written for other inputs"
                       + (f" (changed: {', '.join(changed)})" if changed else ""))
    elif not isinstance(recorded, dict):
        reasons.append(f"{run / DONE_FILE} records no outputs (written by an older bas): checked and recorded again")
    reasons += [f"{run / c.name} {c.why}" for c in changes]
    if not changes and not paths.manifest_path(run).exists():
        reasons.append(f"no {paths.manifest_path(run)}")
    return Status(done=not reasons, fingerprint=fingerprint, reasons=reasons, changed=changes, marker=done,
                  inputs=inputs)


def train_generate_done(cfg: Config, method: str, scene_id: str, fingerprint: Optional[str] = None) -> bool:
    """True when the run directory holds the finished training and grid for `fingerprint`."""
    return train_generate_status(cfg, method, scene_id, fingerprint).done


def _changed_inputs(recorded: Optional[dict], current) -> list[str]:
    if not isinstance(recorded, dict):
        return []
    now = _input_digests(current())
    return sorted(name for name in set(now) | set(recorded) if now.get(name) != recorded.get(name))


def grid_complete(cfg: Config, method: str, scene, run: Path) -> bool:
    """Whether the grid of a finished training has every image, made with its saved tokens."""
    from bas.generation.run import plan_grid, tokens_fingerprint   # torch: see the note at the top
    from bas.tokens import load_tokens

    learned, _ = load_tokens(paths.train_dir(run) / TOKENS_FILE)
    plan = plan_grid(cfg, method, scene.scene_id, list(learned), scene.class_names, cfg.models.profile,
                     tokens_fingerprint(learned), run)
    return plan.complete and paths.manifest_path(run).exists()


# --------------------------------------------------------------------------- score


def score_fingerprint(cfg: Config, method: str, scene_id: str) -> str:
    """The scores' inputs: the grid (its fingerprint and the SHA-256 of each image, as its
    done.json records them), the scoring settings, the scorers and the code."""
    done = read_json(paths.run_dir(cfg, method, scene_id) / DONE_FILE) or {}
    images = {name: (record or {}).get("sha256") for name, record in (done.get("outputs") or {}).items()
              if name.startswith(f"{paths.IMAGES_DIR}/")}
    return _digest({"run": done.get("fingerprint"), "images": images, "scoring": to_dict(cfg.scoring),
                    "models": to_dict(cfg.models), "code": code_version("score"),
                    "weights": weights_identity(cfg.models, ("clip", "dino", "segmenter"))})


def score_marker(cfg: Config, method: str, scene_id: str) -> Path:
    return paths.scene_scores_path(cfg, method, scene_id).with_suffix(".json")


def score_record(cfg: Config, method: str, scene_id: str, fingerprint: str, rows: int) -> dict:
    """What a score marker holds: the fingerprint, the row count, the scores file's record."""
    out = paths.scene_scores_path(cfg, method, scene_id)
    return {"fingerprint": fingerprint, "rows": rows, "outputs": record_files(out.parent, [out.name])}


def score_status(cfg: Config, method: str, scene_id: str, fingerprint: Optional[str] = None,
                 rehash: bool = False, grid: bool = False) -> Status:
    """Whether the (method, scene) is scored for the current grid, settings and scorers, its
    scores file as recorded. `grid`: when it is not, also the grid's own status (`Status.grid`:
    the score stage needs the grid finished first)."""
    fingerprint = fingerprint or score_fingerprint(cfg, method, scene_id)
    marker_path = score_marker(cfg, method, scene_id)
    out = paths.scene_scores_path(cfg, method, scene_id)
    marker = read_json(marker_path)
    reasons, changes = [], []
    if not marker:
        reasons.append(f"no {marker_path}: not scored")
    elif marker.get("fingerprint") != fingerprint:
        reasons.append(f"{marker_path} was written for another grid, scoring settings, scorer or code")
    elif isinstance(marker.get("outputs"), dict):
        changes = changed_files(out.parent, marker["outputs"], rehash)
        reasons += [f"{out.parent / c.name} {c.why}" for c in changes]
    if not changes and not out.exists():
        reasons.append(f"no {out}")
    return Status(done=not reasons, fingerprint=fingerprint, reasons=reasons, changed=changes, marker=marker,
                  grid=train_generate_status(cfg, method, scene_id) if grid and reasons else None)


def score_done(cfg: Config, method: str, scene_id: str, fingerprint: Optional[str] = None) -> bool:
    return score_status(cfg, method, scene_id, fingerprint).done


# --------------------------------------------------------------------------- bas verify


@dataclass
class Verification:
    """What `verify` found: how many recorded outputs it checked, and one line per difference."""

    checked: int = 0
    differences: list[str] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)   # class images made before they were recorded

    @property
    def ok(self) -> bool:
        return not self.differences


def verify(cfg: Config, rehash: bool = False) -> Verification:
    """Every recorded output under the storage root against its marker's record: the run
    directories (done.json), the scores (scores/<method>/<scene>.json), the class images
    (images.json); sizes and mtimes, and with `rehash` every file's SHA-256 and every staged
    scene's content hash. Each difference is one line naming the file and its marker."""
    from bas.scenes.scene import load_scene, scene_dirs   # PIL and numpy: only when asked
    from bas.training.prior import MARKER as CLASS_IMAGES_MARKER

    found = Verification()
    markers = [(p, "outputs") for p in sorted(paths.runs_dir(cfg).glob(f"*/*/{DONE_FILE}"))]
    markers += [(p, "outputs") for p in sorted(paths.scores_dir(cfg).glob("*/*.json"))]
    markers += [(p, "files") for p in sorted(paths.prior_images_root(cfg).glob(f"*/{CLASS_IMAGES_MARKER}"))]
    for marker, key in markers:
        record = read_json(marker)
        recorded = (record or {}).get(key)
        if not isinstance(recorded, dict):
            if record is not None and key == "files":   # taken as they are; recorded when next loaded
                found.unrecorded.append(f"{marker}: made before class images were recorded: not checked")
            else:   # the stage is not done for it: its next run checks and records the outputs
                found.differences.append(f"{marker}: records no outputs (unreadable, or written by an older "
                                         "bas); the next run of its stage checks and records them")
            continue
        found.checked += len(recorded)
        found.differences += [f"{marker.parent / c.name} {c.why} (recorded in {marker})"
                              for c in changed_files(marker.parent, recorded, rehash)]
    if rehash and paths.scenes_dir(cfg).is_dir():
        for directory in scene_dirs(paths.scenes_dir(cfg)):
            found.checked += 1
            try:
                load_scene(directory)   # recomputes the content hash from the pixels
            except DataError as err:
                found.differences.append(str(err))
    return found
