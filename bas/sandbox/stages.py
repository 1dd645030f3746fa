"""`bas sandbox train`: every sandbox model from its seed and params, with its validity record.

Stages, in order: `vae`, `base` (UNet + text encoder; needs the VAE), the scorers `clip`,
`dino`, `segmenter`, `judge`, and `validity` (samples the base model and judges them; needs
`base` and `judge`). Each stage checkpoints into a work directory, so a killed run resumes
where it stopped; finished models are written atomically into the sandbox weights directory
(`models.sandbox_weights`; empty = the weights bundled with bas, bas/data/sandbox), each
with a `training_record.json` (params, seed, steps, device, wall time, validity figures).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Iterable

import torch

from bas.config import Config, to_dict
from bas.errors import ConfigError
from bas.io import atomic_write_json
from bas.models.registry import load_diffusion, sandbox_weights_dir
from bas.models.tokenizer import write_clip_tokenizer
from bas.paths import TRAINING_RECORD_FILE
from bas.sandbox import base_model, scorers
from bas.sandbox import train_diffusion as td
from bas.sandbox.classifiers import Judge
from bas.sandbox.devices import device_record
from bas.sandbox.validity import base_model_validity, vae_judged

log = logging.getLogger(__name__)

DIFFUSION_STAGES = ("vae", "base", "validity")
SCORER_STAGES = ("clip", "dino", "segmenter", "judge")
STAGES = ("vae", "base", "clip", "dino", "segmenter", "judge", "validity")


def resolve_device(name: str = "auto") -> torch.device:
    """`auto`: the GPU when torch sees one, else the CPU; `cpu`, `cuda` or `cuda:N` as named."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"--device {name!r}: not a torch device (auto, cpu, cuda, cuda:N)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name!r}: torch sees no CUDA GPU here (torch {torch.__version__}); "
                          "use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name!r}: the sandbox trainers run on cpu or cuda")
    return device


def resolve_workers(workers: int | None, device: torch.device) -> int:
    """Render processes for the diffusion stages: none on a CPU (they would take the trainer's
    cores), up to 8 beside a GPU, which a single renderer would leave waiting."""
    if workers is None:
        return min(8, max(0, (os.cpu_count() or 1) - 1)) if device.type == "cuda" else 0
    if workers < 0:
        raise ConfigError(f"--workers {workers}: must be 0 (render in the trainer) or more")
    return workers


def parse_stages(only: str | None) -> list[str]:
    if not only:
        return list(STAGES)
    stages = [s.strip() for s in only.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"--only: unknown sandbox stage {unknown[0]!r} (stages: {', '.join(STAGES)})")
    return [s for s in STAGES if s in stages]


def weights_dir(cfg: Config) -> Path:
    return sandbox_weights_dir(cfg.models)


def read_record(directory: Path) -> dict:
    path = directory / TRAINING_RECORD_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def train_diffusion_model(cfg: Config, work_dir: Path, device: torch.device | str = "cpu", workers: int = 0) -> dict:
    """Train VAE and base model on `device`, write `<weights_dir>/diffusion`; returns its training record."""
    from transformers import CLIPTokenizer   # transformers: only when the base model is trained

    sb = cfg.sandbox
    started = time.time()
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True   # TF32 matmuls: the GPU's fast fp32 path
    vae, vae_metrics = td.train_vae(sb, work_dir, device=device, workers=workers)
    write_clip_tokenizer(work_dir / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(work_dir / "tokenizer")
    checkpoint = work_dir / "base.pt"   # a resumed (or warm-restarted) run says where it started
    resumed_at = (torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=False)["step"]
                  if checkpoint.exists() else 0)
    base_record: dict = {}
    unet, text_encoder = td.train_base(sb, vae, tokenizer, work_dir, device=device, workers=workers,
                                       record=base_record)
    vae, unet, text_encoder = (m.to("cpu") for m in (vae, unet, text_encoder))
    record = {
        "model": "sandbox base text-to-image model (diffusers UNet2DConditionModel + CLIPTextModel + AutoencoderKL)",
        "seed": sb.seed, "params": {"vae": to_dict(sb.vae), "vae_calibration": sb.vae_calibration,
                                    "base": to_dict(sb.base),
                                    "base_restart": to_dict(sb.base_restart) if sb.base_restart else None,
                                    "ema_decay": sb.ema_decay,
                                    "caption_dropout": sb.caption_dropout, "attribute_dropout": sb.attribute_dropout,
                                    "min_snr_gamma": sb.min_snr_gamma, "base_text": sb.base_text,
                                    "text_pretrain": to_dict(sb.text_pretrain) if sb.base_text == "frozen" else None,
                                    "base_layout": to_dict(sb.base_layout),
                                    "object_loss_weight": sb.object_loss_weight},
        "architecture": {"unet": _jsonable(base_model.UNET_CONFIG), "vae": _jsonable(base_model.VAE_CONFIG),
                         "text_encoder": base_model.TEXT_CONFIG},
        "device": device_record(device, workers), "wall_time_s": round(time.time() - started, 1), "base_resumed_at_step": resumed_at,
        "vae_calibration": vae_metrics["calibration"],
        "validity": {"vae_psnr_db": round(vae_metrics["psnr_db"], 2),
                     "vae_posterior": td.posterior_spread(vae, sb),
                     **({"text_pretrain": base_record["text_pretrain"]} if "text_pretrain" in base_record else {})},
    }
    td.save_diffusion(weights_dir(cfg) / "diffusion", vae, unet, text_encoder, record)
    return record


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=list))


def write_validity(cfg: Config, figures: dict) -> dict:
    """Add the base model's validity figures to its training record (atomically)."""
    path = weights_dir(cfg) / "diffusion" / TRAINING_RECORD_FILE
    record = json.loads(path.read_text())
    record.setdefault("validity", {}).update(figures)
    atomic_write_json(path, record)
    return record


def write_record_entry(cfg: Config, key: str, value: dict) -> Path:
    """Set `key` of the base model's training record (atomically); returns the record's path."""
    path = weights_dir(cfg) / "diffusion" / TRAINING_RECORD_FILE
    record = json.loads(path.read_text())
    record[key] = value
    atomic_write_json(path, record)
    return path


def run_stages(cfg: Config, stages: Iterable[str], work_dir: Path, device: torch.device | str = "cpu",
               workers: int = 0) -> dict[str, dict]:
    """Run `stages` in order. `device` and `workers` apply to the diffusion stages (vae, base,
    validity); the scorers train on the CPU in minutes."""
    stages = list(stages)
    records = {}
    if "vae" in stages or "base" in stages:
        if not ("vae" in stages and "base" in stages):
            raise ConfigError("--only: the stages vae and base run together (the base model is trained on the VAE's latents)")
        records["diffusion"] = train_diffusion_model(cfg, work_dir, device, workers)
    for stage in SCORER_STAGES:
        if stage in stages:
            records[stage] = train_scorer(cfg, stage, work_dir)
    if "validity" in stages:
        records["validity"] = measure_base_validity(cfg, device=device)
    return records


def train_scorer(cfg: Config, stage: str, work_dir: Path) -> dict:
    return scorers.train_and_save(cfg, stage, work_dir, weights_dir(cfg) / stage)


def measure_base_validity(cfg: Config, count: int | None = None, device: torch.device | str = "cpu") -> dict:
    """Sample the committed base model on held-out captions (on `device`), judge, and record the figures."""
    parts = load_diffusion(dataclasses.replace(cfg.models, profile="sandbox"))
    for module in (parts.unet, parts.vae, parts.text_encoder):
        module.to(device)
    judge = Judge.load(weights_dir(cfg) / "judge")
    judge.net.to(device)
    figures = base_model_validity(parts, judge, cfg.sandbox, count=count)
    write_validity(cfg, {"text_following": figures, "vae_judged": vae_judged(parts.vae, judge, cfg.sandbox)})
    return figures
