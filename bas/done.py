"""Is a (method, scene) done, and if not, why not; and what code each stage depends on.

One place answers it for the pipeline, the Prefect tasks' cache keys and dvc.yaml:

- `STAGE_CODE`: the code (files or packages under bas/) each stage's outputs depend on.
  `code_version(stage)` hashes it into the fingerprints; dvc.yaml's `deps` list the same
  paths (tests/test_dvc_pipeline.py checks that they agree).
- fingerprints: a stage's *inputs*, hashed: the scene's content hash, the method's run key
  (resolved recipe, training settings, model identity: `bas.training.engine.run_key`), the
  settings that decide pixels or scores, the code version, and the sandbox's weights.
- markers: a finished stage writes its fingerprint last (`done.json` in the run directory,
  `scores/<method>/<scene_id>.json`); `train_generate_status` / `score_status` compare it
  with the current fingerprint and say which input changed.
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
    if method_kind(cfg, method) == "reference":
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


def done_record(cfg: Config, method: str, scene_id: str, fingerprint: str, images: int) -> dict:
    """What `done.json` holds: the fingerprint, the image count, the method's kind (the report
    reads it), and a digest of each input (so that a later status can say which one changed)."""
    return {"fingerprint": fingerprint, "images": images, "kind": method_kind(cfg, method),
            "inputs": _input_digests(train_generate_inputs(cfg, method, scene_id))}


def train_generate_status(cfg: Config, method: str, scene_id: str, fingerprint: Optional[str] = None) -> Status:
    """Whether the run directory holds the finished training and grid for the current inputs."""
    run = paths.run_dir(cfg, method, scene_id)
    fingerprint = fingerprint or train_generate_fingerprint(cfg, method, scene_id)
    done = read_json(run / DONE_FILE)
    reasons = []
    if not done:
        reasons.append(f"no {run / DONE_FILE}: training and grid not finished")
    elif done.get("fingerprint") != fingerprint:
        changed = _changed_inputs(done.get("inputs"), lambda: train_generate_inputs(cfg, method, scene_id))
        reasons.append(f"{run / DONE_FILE} was written for other inputs"
                       + (f" (changed: {', '.join(changed)})" if changed else ""))
    if not paths.manifest_path(run).exists():
        reasons.append(f"no {paths.manifest_path(run)}")
    return Status(done=not reasons, fingerprint=fingerprint, reasons=reasons)


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
    done = read_json(paths.run_dir(cfg, method, scene_id) / DONE_FILE) or {}
    return _digest({"run": done.get("fingerprint"), "scoring": to_dict(cfg.scoring),
                    "models": to_dict(cfg.models), "code": code_version("score"),
                    "weights": weights_identity(cfg.models, ("clip", "dino", "segmenter"))})


def score_marker(cfg: Config, method: str, scene_id: str) -> Path:
    return paths.scene_scores_path(cfg, method, scene_id).with_suffix(".json")


def score_status(cfg: Config, method: str, scene_id: str, fingerprint: Optional[str] = None) -> Status:
    fingerprint = fingerprint or score_fingerprint(cfg, method, scene_id)
    marker_path = score_marker(cfg, method, scene_id)
    marker = read_json(marker_path)
    reasons = []
    if not marker:
        reasons.append(f"no {marker_path}: not scored")
    elif marker.get("fingerprint") != fingerprint:
        reasons.append(f"{marker_path} was written for another grid, scoring settings, scorer or code")
    if not paths.scene_scores_path(cfg, method, scene_id).exists():
        reasons.append(f"no {paths.scene_scores_path(cfg, method, scene_id)}")
    return Status(done=not reasons, fingerprint=fingerprint, reasons=reasons)


def score_done(cfg: Config, method: str, scene_id: str, fingerprint: Optional[str] = None) -> bool:
    return score_status(cfg, method, scene_id, fingerprint).done
