"""Params of the orchestration tests: the tiny profile, 2 COCO scenes, 2+2 training steps,
1 template, 1 seed, 2 DDIM steps (PROTOCOL numbers shrunk only through params overrides)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
FIRST_TEMPLATE = "a photo of {tokens} at the beach"


def tiny_overrides(storage_root: Path, coco_root: Path, methods: Sequence[str] = ("bas", "ti_m"),
                   num_scenes: int = 2) -> dict[str, Any]:
    return {
        "paths.storage_root": str(storage_root),
        "models.profile": "tiny",
        "models.cache_dir": str(REPO / ".cache" / "bas" / "models"),
        "scenes.coco_root": str(coco_root),
        "scenes.num_scenes": num_scenes,
        "scenes.resolution": 64,
        "training.progress_bar": False,
        "training.prior_images.num_images": 2,
        "training.prior_images.sampling_steps": 2,
        "training.prior_images.batch_size": 2,
        "methods.bas.phases.phase1.steps": 2,
        "methods.bas.phases.phase2.steps": 2,
        "methods.ti_m.phases.phase1.steps": 2,
        "generation.templates": [FIRST_TEMPLATE],
        "generation.seeds": 1,
        "generation.steps": 2,
        "orchestration.methods": list(methods),
    }


def set_args(overrides: dict[str, Any]) -> list[str]:
    """`-S key=value` arguments of the bas CLI (values as JSON, which YAML reads back)."""
    args: list[str] = []
    for key, value in overrides.items():
        args += ["-S", f"{key}={json.dumps(value)}"]
    return args
