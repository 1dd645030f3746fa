"""The sd21 profile at full size on a CPU, without its weights: a rehearsal of a real run.

`write_models(root)` builds every sd21 model with seeded random weights at its real
architecture (`bas.models.sd21_architectures`) and writes it in the layout the hub serves:

    root/diffusion/{unet,vae,text_encoder,tokenizer,scheduler}/   diffusers save_pretrained folders
    root/clip/open_clip_model.safetensors      the open_clip checkpoint of ViT-L/14 (timm/vit_large_patch14_clip_224.openai)
    root/dino/model.safetensors                the timm checkpoint of vit_base_patch16_224.dino
    root/maskformer/                           transformers MaskFormer folder (config, weights, processor)

`local_copy_env(root)` is the environment that points the sd21 profile at them (the
`BAS_SD21_*` variables a user sets for a local copy), and `rehearse(...)` runs the commands a
user runs, each in its own process: `bas stage`, `bas train`, `bas generate`, `bas score`,
recording each one's wall time and peak RSS. Nothing in bas knows it is a rehearsal. The
numbers these random weights give mean nothing; shapes, module names, dtypes and files are
the real ones (scripts/rehearse_sd21.py, docs/MODELS.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from bas.paths import TRAIN_DIR, TRAIN_JSON

# torch, diffusers, transformers, open_clip and timm are imported by the writers that use them: the
# rehearsal's driver (local_copy_env, rehearse) runs the bas commands in subprocesses and needs none.

COMPLETE = "COMPLETE"   # written last: a folder without it is rebuilt


def write_models(root: str | Path, seed: int = 0) -> Path:
    """Write the four sd21 models with random weights under `root` (skipped when complete)."""
    import torch

    root = Path(root)
    if (root / COMPLETE).exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    _write_diffusion(root / "diffusion")
    _write_clip(root / "clip")
    _write_dino(root / "dino")
    _write_maskformer(root / "maskformer")
    (root / COMPLETE).write_text("ok\n")
    return root


def _write_diffusion(out: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from bas.models.sd21_architectures import SD21_TEXT_ENCODER, SD21_UNET, SD21_VAE
    from bas.models.tiny import SCHEDULER_CONFIG
    from bas.models.tokenizer import write_clip_tokenizer

    # One part at a time, freed before the next: the UNet alone is 3.5 GB in fp32.
    for name, build in (("unet", lambda: UNet2DConditionModel(**SD21_UNET)),
                        ("vae", lambda: AutoencoderKL(**SD21_VAE)),
                        ("text_encoder", lambda: CLIPTextModel(CLIPTextConfig(**SD21_TEXT_ENCODER)))):
        module = build()
        module.save_pretrained(out / name, safe_serialization=True)
        del module
    write_clip_tokenizer(out / "tokenizer")
    # SD 2.1-base ships a PNDM scheduler config; bas reads its betas into DDPM / DDIM.
    DDIMScheduler(**SCHEDULER_CONFIG).save_pretrained(out / "scheduler")
    (out / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}, indent=2))
    del torch


def _write_clip(out: Path) -> None:
    import open_clip
    from safetensors.torch import save_model

    from bas.models.sd21_architectures import CLIP_MODEL

    out.mkdir(parents=True, exist_ok=True)
    model = open_clip.create_model(CLIP_MODEL, pretrained=None, force_quick_gelu=True)
    save_model(model, str(out / "open_clip_model.safetensors"))


def _write_dino(out: Path) -> None:
    import timm
    from safetensors.torch import save_model

    from bas.models.sd21_architectures import DINO_MODEL

    out.mkdir(parents=True, exist_ok=True)
    save_model(timm.create_model(DINO_MODEL, pretrained=False, num_classes=0), str(out / "model.safetensors"))


def _write_maskformer(out: Path) -> None:
    from transformers import MaskFormerForInstanceSegmentation, MaskFormerImageProcessor

    from bas.models.sd21_architectures import MASKFORMER_PROCESSOR, maskformer_config

    MaskFormerForInstanceSegmentation(maskformer_config()).save_pretrained(out, safe_serialization=True)
    MaskFormerImageProcessor(**MASKFORMER_PROCESSOR).save_pretrained(out)


def local_copy_env(root: str | Path) -> dict[str, str]:
    """The environment variables that make the sd21 profile read the models under `root`."""
    root = Path(root)
    return {"BAS_SD21_DIFFUSION": str(root / "diffusion"),
            "BAS_SD21_CLIP": str(root / "clip" / "open_clip_model.safetensors"),
            "BAS_SD21_DINO": str(root / "dino" / "model.safetensors"),
            "BAS_SD21_MASKFORMER": str(root / "maskformer"),
            "HF_HUB_OFFLINE": "1"}


# --------------------------------------------------------------------------- the commands


@dataclass
class Step:
    name: str
    argv: list[str]
    wall_s: float = 0.0
    peak_rss_gb: float = 0.0
    returncode: Optional[int] = None


def _rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and its children (Linux /proc)."""
    total = 0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    except OSError:
        return 0
    return total + sum(_rss_bytes(int(c)) for c in children)


def run_step(step: Step, env: dict[str, str], cwd: Path, max_rss_gb: float, log_file: Path) -> Step:
    """Run one command, sampling its RSS; killed (and failed) above `max_rss_gb`."""
    start = time.perf_counter()
    with open(log_file, "ab") as log:
        log.write(f"\n$ {' '.join(step.argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(step.argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _rss_bytes(proc.pid))
            if peak > max_rss_gb * 1e9:
                proc.kill()
                proc.wait()
                log.write(f"killed: RSS {peak / 1e9:.1f} GB above the limit {max_rss_gb} GB\n".encode())
                break
            time.sleep(0.2)
    step.wall_s = round(time.perf_counter() - start, 1)
    step.peak_rss_gb = round(peak / 1e9, 2)
    step.returncode = proc.returncode
    return step


# User overrides of the run: one scene, one step of each phase, one class image and one
# prompt template, 2 DDIM steps; `bas generate` runs in its own process, so a method that
# fine-tunes weights keeps them (`training.keep_weights`). The memory options are left to
# `training.memory: auto`, as a user's run leaves them, within 16 GB: the rehearsal shares its
# machine (the test suite runs beside it), as a user on a shared machine would set the limit.
REHEARSAL_OVERRIDES = (
    "models.profile=sd21",
    "training.keep_weights=true",
    "training.prior_images.num_images=1",
    "training.prior_images.sampling_steps=2",
    "training.prior_images.batch_size=1",
    "training.progress_bar=false",
    "training.memory_limit_gb=16",
    "generation.steps=2",
    "generation.batch_size=1",
    'generation.templates=["a photo of {tokens} at the beach"]',
    "scoring.batch_size=1",
)


def one_step_overrides(method: str, recipe) -> list[str]:
    """`-S` settings that run each phase of `recipe` (a MethodRecipe) that has steps for one step."""
    return [f"methods.{method}.phases.{name}.steps=1" for name, phase in recipe.phases.items() if phase.steps > 0]


def rehearse(models_root: str | Path, work: str | Path, coco_root: str | Path, method: str, recipe,
             max_rss_gb: float = 20.0, extra_overrides: Sequence[str] = (), python: str = sys.executable) -> dict:
    """Stage one COCO scene at 512 px, train `method` (its `recipe`) one step a phase, generate,
    score. -> summary."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **local_copy_env(models_root)}
    overrides = [*REHEARSAL_OVERRIDES, *one_step_overrides(method, recipe), *extra_overrides]
    sets = [a for o in (*overrides, f"paths.storage_root={work / 'data'}") for a in ("-S", o)]
    bas = [python, "-m", "bas.cli", *sets]
    repo = Path(__file__).resolve().parents[2]
    log_file = work / "rehearsal.log"
    steps = [Step("stage", [*bas, "stage", "--coco-root", str(coco_root), "--num-scenes", "1"])]
    summary: dict = {"models": str(models_root), "method": method, "overrides": overrides, "steps": []}
    total = time.perf_counter()
    for step in steps:
        run_step(step, env, repo, max_rss_gb, log_file)
        summary["steps"].append(step.__dict__)
        if step.returncode != 0:
            break
    if steps[-1].returncode == 0:
        index = sorted((work / "data" / "scenes").glob("coco-*"))
        scene = index[0].name
        summary["scene"] = scene
        for step in (Step("train", [*bas, "train", "--method", method, "--scene", scene]),
                     Step("generate", [*bas, "generate", "--method", method, "--scene", scene, "--no-progress"]),
                     Step("score", [*bas, "score", "--run", str(work / "data" / "runs" / method / scene),
                                    "--no-progress"])):
            run_step(step, env, repo, max_rss_gb, log_file)
            summary["steps"].append(step.__dict__)
            if step.returncode != 0:
                break
            if step.name == "train":   # what `training.memory: auto` chose on this machine
                train_json = work / "data" / "runs" / method / scene / TRAIN_DIR / TRAIN_JSON
                summary["memory"] = json.loads(train_json.read_text()).get("memory")
    summary["wall_s"] = round(time.perf_counter() - total, 1)
    summary["ok"] = all(s["returncode"] == 0 for s in summary["steps"]) and len(summary["steps"]) == 4
    summary["log"] = str(log_file)
    return summary
