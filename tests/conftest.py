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


# --------------------------------------------------------------------------- scenes and runs on disk
# Real scenes from the COCO sample, written in the scene folder format (docs/ARCHITECTURE.md)
# without bas.scenes, so generation and scoring tests depend only on that format.

COCO_SCENES = {  # image id -> its two concepts (each one instance covering >= 15% of the crop)
    599: ("cat", "couch"),
    394: ("dog", "frisbee"),
}


def write_coco_scene(coco_root: Path, image_id: int, scenes_dir: Path, resolution: int = 128) -> str:
    """Write `coco-train2017-<id>` (square crop, masks of the COCO_SCENES classes) under scenes_dir."""
    import json

    import numpy as np
    from PIL import Image
    from pycocotools.coco import COCO

    coco = _coco(coco_root)
    info = coco.loadImgs(image_id)[0]
    side = min(info["height"], info["width"])
    top, left = (info["height"] - side) // 2, (info["width"] - side) // 2
    scene_id = f"coco-train2017-{image_id}"
    out = scenes_dir / scene_id
    out.mkdir(parents=True, exist_ok=True)
    image = Image.open(coco_root / "train2017" / info["file_name"]).convert("RGB")
    image.crop((left, top, left + side, top + side)).resize((resolution, resolution), Image.BICUBIC).save(
        out / "image.png")
    concepts = []
    for index, name in enumerate(COCO_SCENES[image_id]):
        cat_id = coco.getCatIds(catNms=[name])[0]
        ann = max(coco.loadAnns(coco.getAnnIds(imgIds=image_id, catIds=[cat_id], iscrowd=False)),
                  key=lambda a: a["area"])
        mask = coco.annToMask(ann)[top : top + side, left : left + side].astype(np.uint8) * 255
        Image.fromarray(mask).resize((resolution, resolution), Image.NEAREST).save(out / f"mask_{index}.png")
        concepts.append({"index": index, "class_name": name, "category_id": cat_id, "mask": f"mask_{index}.png"})
    (out / "scene.json").write_text(json.dumps({"scene_id": scene_id, "resolution": resolution,
                                                "content_hash": f"test-{image_id}", "concepts": concepts}))
    return scene_id


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
