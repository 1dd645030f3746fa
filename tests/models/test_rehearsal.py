"""The sd21 profile at full size: a user's four commands on random-weight models in the hub layouts.

Marked `rehearsal`: about 10 CPU-minutes and 8 GB of model files (kept under
.cache/bas/sd21-random, or $BAS_REHEARSAL_MODELS, between runs). `scripts/test.sh` runs it beside
the rest of the suite. The numbers random weights give mean nothing; shapes, module names, heads,
dtypes, files and the commands' exits are what is checked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from safetensors import safe_open

from bas import config
from bas.models.rehearsal import local_copy_env, rehearse, write_models
from bas.paths import SCORES_FILE, TOKENS_FILE, TRAIN_DIR, TRAIN_JSON, TRAINED_WEIGHTS_FILE
from bas.training.methods import get_recipe

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.rehearsal


@pytest.fixture(scope="module")
def models() -> Path:
    root = Path(os.environ.get("BAS_REHEARSAL_MODELS") or REPO / ".cache" / "bas" / "sd21-random")
    return write_models(root)


def test_the_random_models_have_the_real_architectures_and_layouts(models):
    unet = json.loads((models / "diffusion" / "unet" / "config.json").read_text())
    assert unet["_class_name"] == "UNet2DConditionModel"
    assert unet["attention_head_dim"] == [5, 10, 20, 20] and unet["cross_attention_dim"] == 1024
    assert unet["sample_size"] == 64                               # 512 px images, 64x64 latents
    text = json.loads((models / "diffusion" / "text_encoder" / "config.json").read_text())
    assert (text["hidden_size"], text["num_hidden_layers"], text["vocab_size"]) == (1024, 23, 49408)
    for folder in ("unet", "vae", "text_encoder"):
        assert (models / "diffusion" / folder / ("diffusion_pytorch_model.safetensors" if folder != "text_encoder"
                                                   else "model.safetensors")).is_file()
    with safe_open(models / "clip" / "open_clip_model.safetensors", "pt") as f:
        assert f.get_slice("visual.conv1.weight").get_shape() == [1024, 3, 14, 14]     # ViT-L/14
    with safe_open(models / "dino" / "model.safetensors", "pt") as f:
        assert f.get_slice("patch_embed.proj.weight").get_shape() == [768, 3, 16, 16]  # ViT-B/16
    maskformer = json.loads((models / "maskformer" / "config.json").read_text())
    assert maskformer["backbone_config"]["embed_dim"] == 192                            # Swin-L
    assert set(local_copy_env(models)) >= {"BAS_SD21_DIFFUSION", "BAS_SD21_CLIP", "BAS_SD21_DINO",
                                           "BAS_SD21_MASKFORMER"}


def test_a_full_size_bas_run_stages_trains_generates_and_scores(models, coco_root, tmp_path):
    cfg = config.load(REPO / "params.yaml")
    summary = rehearse(models, tmp_path, coco_root, "bas", get_recipe(cfg, "bas"))
    log = Path(summary["log"]).read_text()
    assert summary["ok"], f"{json.dumps(summary['steps'], indent=1)}\n{log[-4000:]}"
    assert [s["name"] for s in summary["steps"]] == ["stage", "train", "generate", "score"]

    run = tmp_path / "data" / "runs" / "bas" / summary["scene"]
    train = json.loads((run / TRAIN_DIR / TRAIN_JSON).read_text())
    assert train["profile"] == "sd21" and train["device"] == "cpu"
    assert [(p["name"], p["steps"]) for p in train["phases"]] == [("phase1", 1), ("phase2", 1)]
    assert train["prior_images"] == 1 and train["weights_saved"]
    # training.memory: auto chose the options for this machine and said so.
    assert train["memory"]["setting"] == "auto" and train["memory"]["measured"]
    # BaS phase 2 (UNet + text encoder) needs 19.7 GB in fp32 and 12.4 GB with 8-bit AdamW
    # (docs/BENCHMARKS.md): within the rehearsal's 16 GB, auto picks 8-bit AdamW alone.
    assert train["memory"]["options"] == ["use_8bit_adam"] and train["memory"]["fits"]
    assert summary["memory"] == train["memory"]
    with safe_open(run / TRAIN_DIR / TOKENS_FILE, "pt") as f:
        rows = [f.get_tensor(k) for k in f.keys()]
    assert len(rows) == 2 and all(r.shape == (1024,) for r in rows)       # one OpenCLIP-H row per object
    with safe_open(run / TRAIN_DIR / TRAINED_WEIGHTS_FILE, "pt") as f:
        names = list(f.keys())
    assert any(n.startswith("unet.") for n in names) and any(n.startswith("text_encoder.") for n in names)

    images = sorted((run / "images").glob("*.png"))
    assert images and all(Image.open(p).size == (512, 512) for p in images)
    scores = pd.read_parquet(run / SCORES_FILE)
    assert len(scores) >= len(images) and set(scores["kind"]) == {"method"}
    assert scores["prompt_similarity"].notna().all()
    # pytest keeps the last runs' folders: not their 4.8 GB of fine-tuned weights.
    (run / TRAIN_DIR / TRAINED_WEIGHTS_FILE).unlink()
