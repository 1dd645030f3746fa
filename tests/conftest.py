"""Shared fixtures: the tiny model profile (built once per machine) and the real COCO sample."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bas.config import ModelsConfig
from tests import params_defaults

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
    return params_defaults.models(profile="tiny", cache_dir=str(REPO / ".cache" / "bas" / "models"))


@pytest.fixture(scope="session")
def tiny_parts(tiny_models_cfg):
    """Base tiny diffusion parts, shared by the session: never modify them in a test."""
    from bas.models import load_diffusion

    return load_diffusion(tiny_models_cfg)


@pytest.fixture(scope="session")
def tiny_scorers(tiny_models_cfg):
    from bas.models import load_scorers

    return load_scorers(tiny_models_cfg)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real `prefect server` on 127.0.0.1 (free port, own PREFECT_HOME) for the session."""
    from prefect_harness import start_server, stop

    server = start_server(tmp_path_factory.mktemp("prefect-home"))
    try:
        yield server
    finally:
        server.stop_workers()
        stop(server.process)


# --------------------------------------------------------------------------- scenes and runs on disk
# Real scenes from the COCO sample, written in the scene folder format (docs/ARCHITECTURE.md)
# without bas.scenes, so generation and scoring tests depend only on that format.

COCO_SCENES = {  # image id -> its two concepts (each one instance covering >= 15% of the crop)
    599: ("cat", "couch"),
    394: ("dog", "frisbee"),
}


def write_coco_scene(coco_root: Path, image_id: int, scenes_dir: Path, resolution: int = 128) -> str:
    """Write `coco-train2017-<id>` (square crop, masks of the COCO_SCENES classes) under scenes_dir."""
    import numpy as np
    from PIL import Image

    from bas.scenes import write_scene
    from bas.scenes.scene import make_scene

    coco = _coco(coco_root)
    info = coco.loadImgs(image_id)[0]
    side = min(info["height"], info["width"])
    top, left = (info["height"] - side) // 2, (info["width"] - side) // 2
    image = Image.open(coco_root / "train2017" / info["file_name"]).convert("RGB")
    image = image.crop((left, top, left + side, top + side)).resize((resolution, resolution), Image.BICUBIC)
    masks, cat_ids = [], []
    for name in COCO_SCENES[image_id]:
        cat_id = coco.getCatIds(catNms=[name])[0]
        ann = max(coco.loadAnns(coco.getAnnIds(imgIds=image_id, catIds=[cat_id], iscrowd=False)),
                  key=lambda a: a["area"])
        mask = coco.annToMask(ann)[top : top + side, left : left + side].astype(np.uint8) * 255
        masks.append(np.asarray(Image.fromarray(mask).resize((resolution, resolution), Image.NEAREST)) > 127)
        cat_ids.append(cat_id)
    scene = make_scene(f"coco-train2017-{image_id}", image, masks, list(COCO_SCENES[image_id]), cat_ids,
                       {"kind": "coco", "split": "train2017", "image_id": image_id, "file_name": info["file_name"]})
    write_scene(scene, scenes_dir / scene.scene_id)
    return scene.scene_id


_COCO = {}


def _coco(coco_root: Path):
    from pycocotools.coco import COCO

    if coco_root not in _COCO:
        _COCO[coco_root] = COCO(str(coco_root / "annotations" / "instances_train2017.json"))
    return _COCO[coco_root]


@pytest.fixture(scope="session")
def coco_scenes(coco_root, tmp_path_factory) -> Path:
    """A scenes directory with the COCO_SCENES scenes (128 px)."""
    scenes_dir = tmp_path_factory.mktemp("scenes")
    for image_id in COCO_SCENES:
        write_coco_scene(coco_root, image_id, scenes_dir)
    return scenes_dir


def write_untrained_run(models_cfg: ModelsConfig, run_dir: Path, method: str, scene_id: str,
                        class_names) -> None:
    """A valid finished training run whose tokens are still their class-name initialisation."""
    import json

    from bas.models import load_diffusion
    from bas.tokens import TOKENS_FILE, add_placeholder_tokens, save_tokens

    parts = load_diffusion(models_cfg)
    tokens, ids = add_placeholder_tokens(parts.tokenizer, parts.text_encoder, list(class_names))
    train = run_dir / "train"
    train.mkdir(parents=True, exist_ok=True)
    save_tokens(train / TOKENS_FILE, tokens, ids, parts.text_encoder, list(class_names))
    (train / "train.json").write_text(json.dumps({"method": method, "scene_id": scene_id, "placeholders": tokens,
                                                  "class_names": list(class_names)}))


@pytest.fixture(scope="session")
def make_untrained_run(tiny_models_cfg):
    """Callable (run_dir, method, scene_id, class_names) writing an untrained run's train/ folder."""
    def make(run_dir: Path, method: str, scene_id: str, class_names) -> Path:
        write_untrained_run(tiny_models_cfg, run_dir, method, scene_id, class_names)
        return run_dir
    return make


@pytest.fixture(scope="session")
def coco_scene_writer(coco_root):
    """Callable (image_id, scenes_dir) -> scene id: writes one COCO_SCENES scene."""
    return lambda image_id, scenes_dir, resolution=128: write_coco_scene(coco_root, image_id, scenes_dir, resolution)
