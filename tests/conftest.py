"""Shared fixtures: the tiny model profile (built once per machine) and the real COCO sample."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bas.config import ModelsConfig

REPO = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path | None:
    for candidate in (os.environ.get("BAS_SHARED"), REPO.parent / "shared", Path("/work/shared")):
        if candidate and (Path(candidate) / "coco-sample").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def coco_root() -> Path:
    shared = _shared_dir()
    if shared is None:
        pytest.skip("real COCO sample not found: expected ../shared/coco-sample beside the repo "
                    "(or set BAS_SHARED to the folder that holds coco-sample/)")
    return shared / "coco-sample"


@pytest.fixture(scope="session")
def tiny_models_cfg() -> ModelsConfig:
    # The project cache survives between runs; a fresh clone builds the models once (seconds).
    return ModelsConfig(profile="tiny", cache_dir=str(REPO / ".cache" / "bas" / "models"))


@pytest.fixture(scope="session")
def tiny_parts(tiny_models_cfg):
    from bas.models import load_diffusion

    return load_diffusion(tiny_models_cfg)


@pytest.fixture(scope="session")
def tiny_scorers(tiny_models_cfg):
    from bas.models import load_scorers

    return load_scorers(tiny_models_cfg)
