"""The sd21 profile at full size on the CPU: random weights in the hub layouts, the user's commands.

Needs about 8 GB of disk for the models (BAS_REHEARSAL_MODELS names a folder to keep them
between runs) and about 15 GB of free memory: BaS phase 2 holds every weight of the UNet and
text encoder, their gradients and 8-bit AdamW's moments (12.4 GB, docs/MODELS.md).
"""

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from bas.models.rehearsal import rehearse, write_models

pytestmark = [pytest.mark.slow, pytest.mark.rehearsal]

NEED_MEMORY_GB = 15.5
NEED_DISK_GB = 9.0


def _available_memory_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024 / 1e9
    return 0.0


@pytest.fixture(scope="module")
def sd21_random(tmp_path_factory):
    if _available_memory_gb() < NEED_MEMORY_GB:
        pytest.skip(f"the full-size rehearsal needs {NEED_MEMORY_GB} GB of free memory "
                    f"({_available_memory_gb():.1f} GB available)")
    kept = os.environ.get("BAS_REHEARSAL_MODELS")
    root = Path(kept) if kept else tmp_path_factory.mktemp("sd21-random")
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "COMPLETE").exists() and shutil.disk_usage(root).free / 1e9 < NEED_DISK_GB:
        pytest.skip(f"the full-size rehearsal writes about 8 GB of models; {root} has less free disk")
    return write_models(root)


def check_models(models: Path) -> None:
    """The layouts the hub serves, at the real architecture."""
    unet = json.loads((models / "diffusion" / "unet" / "config.json").read_text())
    assert unet["attention_head_dim"] == [5, 10, 20, 20] and unet["sample_size"] == 64
    assert unet["cross_attention_dim"] == 1024
    assert (models / "diffusion" / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size > 3.4e9
    assert (models / "maskformer" / "preprocessor_config.json").exists()


def check_run(work: Path, scene: str) -> None:
    """What `bas train`, `bas generate` and `bas score` left, at full size."""
    run = work / "data" / "runs" / "bas" / scene
    concepts = json.loads((work / "data" / "scenes" / scene / "scene.json").read_text())["concepts"]
    train = json.loads((run / "train" / "train.json").read_text())
    assert train["profile"] == "sd21"
    phase1, phase2 = train["phases"]
    assert (phase1["steps"], phase2["steps"]) == (1, 1)
    # Phase 2 trains the whole UNet and text encoder: SD 2.1-base's 865.9M + 340.4M parameters,
    # and a 1024-wide embedding row for each new token.
    assert phase2["optimizer"]["num_elements"] == 865_910_724 + 340_387_840 + 1024 * len(concepts)
    assert phase2["optimizer"]["kind"] == "AdamW8bit"
    log = [json.loads(line) for line in (run / "train" / "log.jsonl").read_text().splitlines()]
    assert [entry["phase"] for entry in log] == ["phase1", "phase2"]
    assert all(entry["terms"]["attention"] > 0 for entry in log)   # the 16x16 maps were read
    manifest = pd.read_parquet(run / "manifest.parquet")
    assert len(manifest) == 2 ** len(concepts) - 1              # one template, every subset, one seed
    for path in manifest["path"]:
        assert Image.open(run / path).size == (512, 512)
    scores = pd.read_parquet(run / "scores.parquet")
    assert len(scores) >= len(manifest) and scores["prompt_similarity"].notna().all()


def test_full_size_sd21_rehearsal(sd21_random, coco_root, tmp_path):
    check_models(sd21_random)
    from bas import config
    from bas.training.methods import get_recipe

    recipe = get_recipe(config.load("params.yaml"), "bas")
    summary = rehearse(sd21_random, tmp_path / "work", coco_root, "bas", recipe, max_rss_gb=NEED_MEMORY_GB)
    assert summary["ok"], (summary, Path(summary["log"]).read_text()[-4000:])
    check_run(tmp_path / "work", summary["scene"])
