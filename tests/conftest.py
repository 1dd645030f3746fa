"""Shared fixtures: the tiny model profile (built once per machine) and the real COCO sample."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bas.config import ModelsConfig

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    """$BAS_SHARED, else <repo>/../shared, else /work/shared; None when none exists."""
    candidates = [os.environ.get("BAS_SHARED"), REPO.parent / "shared", "/work/shared"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def coco_root() -> Path:
    """The real COCO sample (64 images); the test is skipped, saying why, when it is absent."""
    shared = shared_dir()
    root = shared / "coco-sample" if shared else None
    if root is None or not (root / "annotations" / "instances_train2017.json").exists():
        pytest.skip("COCO sample not found: set BAS_SHARED to the folder holding coco-sample/ "
                    "(looked in $BAS_SHARED, <repo>/../shared, /work/shared)")
    return root


@pytest.fixture(scope="session")
def tiny_models_cfg() -> ModelsConfig:
    # The project cache survives between runs; a fresh clone builds the models once (seconds).
    return ModelsConfig(profile="tiny", cache_dir=str(REPO / ".cache" / "bas" / "models"))


@pytest.fixture(scope="session")
def tiny_parts(tiny_models_cfg):
    """Base tiny diffusion parts, shared by the session: never modify them in a test."""
    from bas.models import load_diffusion

    return load_diffusion(tiny_models_cfg)


@pytest.fixture(scope="session")
def tiny_scorers(tiny_models_cfg):
    from bas.models import load_scorers

    return load_scorers(tiny_models_cfg)
