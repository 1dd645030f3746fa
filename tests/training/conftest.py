"""Fixtures for training tests: a real COCO-sample scene and a tiny-profile config factory."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from bas import config
from bas.config import Config
from tests import params_defaults

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "bas" / "models"

# COCO sample image 650: a cat and a car, each one large instance (BaS scene rules).
SCENE_IMAGE_ID = 650


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread():
    """Tiny models on a shared 2-core machine: one thread. With two, OpenMP threads spin
    against other processes and a training step measured 20x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def coco_scene(coco_root):
    """A real scene built by bas.scenes from the COCO sample, at the protocol's 512 px."""
    from bas.scenes.coco import build_scene, read_annotations, resolve_coco_root, select_concepts

    cfg = params_defaults.scenes(coco_root=str(coco_root))
    source = resolve_coco_root(cfg)
    coco = read_annotations(source)
    skipped: list = []
    candidate = select_concepts(coco, coco.images[SCENE_IMAGE_ID], cfg, skipped)
    assert candidate is not None, f"COCO sample image {SCENE_IMAGE_ID} no longer qualifies as a scene"
    scene = build_scene(source, coco, candidate, cfg, skipped)
    assert scene.class_names == ["cat", "car"]
    return scene


@pytest.fixture(scope="session")
def shared_storage(tmp_path_factory) -> Path:
    """One storage root for the session, so class images are generated once for all tests."""
    return tmp_path_factory.mktemp("storage")


def tiny_config(storage: Path, steps: tuple[int, int] = (2, 2), **overrides: Any) -> Config:
    """params.yaml on the tiny profile with few steps: phase1 + phase2 = `steps`; -m baselines
    run the sum; 2 class images of 2 sampler steps."""
    first, second = steps
    values: dict[str, Any] = {
        "models.profile": "tiny", "models.cache_dir": str(CACHE),
        "paths.storage_root": str(storage),
        "training.progress_bar": False,
        "training.prior_images.num_images": 2, "training.prior_images.sampling_steps": 2,
        "training.prior_images.batch_size": 2,
        "methods.bas.phases.phase1.steps": first, "methods.bas.phases.phase2.steps": second,
        "methods.ti_m.phases.phase1.steps": first + second,
        "methods.db_m.phases.phase2.steps": first + second,
        "methods.tl_hard.prior_num_images": 3,    # TL's own count (200), shrunk; tl_soft inherits it
    }
    values.update(overrides)
    return config.load(REPO / "params.yaml", values)


@pytest.fixture
def make_cfg(shared_storage) -> Callable[..., Config]:
    def make(steps: tuple[int, int] = (2, 2), **overrides: Any) -> Config:
        return tiny_config(shared_storage, steps, **overrides)

    return make
