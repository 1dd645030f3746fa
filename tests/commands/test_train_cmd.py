"""`bas extract`, `bas train`, `bas imagine` on the command line (tiny profile)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bas.cli import main

REPO = Path(__file__).resolve().parents[2]
PARAMS = str(REPO / "params.yaml")


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny models on a shared 2-core machine (see tests/training/conftest.py)
    yield
    torch.set_num_threads(before)


def _settings(store: Path) -> list[str]:
    values = {
        "models.profile": "tiny", "models.cache_dir": str(REPO / ".cache" / "bas" / "models"),
        "paths.storage_root": str(store), "scenes.resolution": 128, "training.progress_bar": False,
        "training.prior_images.num_images": 2, "training.prior_images.sampling_steps": 2,
        "methods.bas.phases.phase1.steps": 2, "methods.bas.phases.phase2.steps": 1,
    }
    return [item for key, value in values.items() for item in ("-S", f"{key}={value}")]


def _photo_and_masks(folder: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(folder / "desk.jpg")
    for name, columns in (("mug", slice(20, 70)), ("lamp", slice(90, 150))):
        mask = np.zeros((120, 160), np.uint8)
        mask[10:110, columns] = 255
        Image.fromarray(mask, "L").save(folder / f"{name}.png")


def test_extract_then_imagine_then_train_again(tmp_path, capsys):
    _photo_and_masks(tmp_path)
    store = tmp_path / "store"
    code = main(["--params", PARAMS, *_settings(store), "extract", "--image", str(tmp_path / "desk.jpg"),
                 "--mask", str(tmp_path / "mug.png"), "--mask", str(tmp_path / "lamp.png")])
    assert code == 0
    out = capsys.readouterr().out
    run = store / "runs" / "bas" / "desk"
    assert f"bas on desk: trained -> {run / 'train'}" in out
    assert "<asset0> = mug, <asset1> = lamp" in out and f"bas imagine --run {run}" in out
    assert (store / "scenes" / "desk" / "scene.json").exists()
    assert (run / "train" / "train.json").exists() and (run / "train" / "tokens.safetensors").exists()

    code = main(["--params", PARAMS, *_settings(store), "imagine", "--run", str(run),
                 "a photo of <asset1> and <asset0> at the beach", "--n", "2", "--steps", "2"])
    assert code == 0
    images = sorted((run / "imagine").glob("*.png"))
    assert [p.name for p in images] == ["a-photo-of-asset1-and-asset0-at-the-beach-s0.png",
                                        "a-photo-of-asset1-and-asset0-at-the-beach-s1.png"]
    assert Image.open(images[0]).size == (128, 128)

    capsys.readouterr()
    assert main(["--params", PARAMS, *_settings(store), "train", "--method", "bas", "--scene", "desk"]) == 0
    assert "bas on desk: already trained" in capsys.readouterr().out


def test_errors_say_what_is_wrong(tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["--params", PARAMS, *_settings(store), "train", "--method", "elite", "--scene", "x"]) == 2
    assert "Stable Diffusion 1.4" in capsys.readouterr().err
    assert main(["--params", PARAMS, *_settings(store), "train", "--method", "bas", "--scene", "nowhere"]) == 2
    assert "scene 'nowhere': neither a scene folder nor a scene id" in capsys.readouterr().err
    assert main(["--params", PARAMS, *_settings(store), "imagine", "--run", str(tmp_path), "a photo"]) == 2
    assert "not a finished run" in capsys.readouterr().err
