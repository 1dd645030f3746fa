"""Train the sandbox's base text-to-image model: a 2x AutoencoderKL, then UNet + CLIP text encoder.

Data is drawn fresh every step from the world (`bas.sandbox.world`) with a seed derived
from (run seed, stage, step), so a run is reproducible and a resumed run sees exactly the
batches an uninterrupted one would. Only the *seen* identities appear; the novel ones are
left for personalization.

The UNet is trained as SD was: epsilon prediction on SD 2.1-base's DDPM schedule (scaled
linear 0.00085-0.012, 1000 steps), text dropped from 10% of captions for classifier-free
guidance. Two choices speed up learning from scratch on a CPU: Min-SNR-5 loss weighting
(Hang et al., 2023) and an EMA of the weights, which is what gets saved.

Both trainers run on any torch device (`device`). Randomness that shapes a step (its images,
captions, latent samples, noise and timesteps) is drawn on the CPU from the step's own seed
whatever the device, so a GPU run sees exactly the batches a CPU run would. Rendering the
world is numpy work (about 5 ms an image), which would starve a GPU, so `workers` > 0 renders
steps ahead in that many processes; each step's batch is a function of its step alone, so the
result does not depend on the number of workers (tested).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import random
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from bas.config import SandboxConfig, SandboxLayout, SandboxStage
from bas.io import atomic_dir
from bas.models.tokenizer import write_clip_tokenizer
from bas.paths import TRAINING_RECORD_FILE
from bas.sandbox import base_model, world
from bas.sandbox.loop import lr_at, stage_rng, train_steps
from bas.sandbox.text_pretrain import pretrain_text_encoder

log = logging.getLogger(__name__)

SCHEDULER_CONFIG = dict(  # SD 2.1-base's scheduler_config.json (PNDM, read as DDPM/DDIM by bas)
    _class_name="PNDMScheduler", num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
    beta_schedule="scaled_linear", prediction_type="epsilon", clip_sample=False,
    set_alpha_to_one=False, steps_offset=1, skip_prk_steps=True,
)


def world_batch(seed: int, stage: str, step: int, batch_size: int, identities=None,
                layout: Optional[SandboxLayout] = None) -> list[world.WorldImage]:
    rng = stage_rng(seed, stage, step)
    identities = identities or world.seen_identities(seed)
    kwargs = {} if layout is None else dict(counts=layout.counts, count_probs=layout.count_probs, sides=layout.sides)
    return [world.sample_training_image(rng, identities, **kwargs) for _ in range(batch_size)]


def to_pixels(images: list[world.WorldImage]) -> torch.Tensor:
    """(B, 3, 64, 64) float in [-1, 1]."""
    array = np.stack([w.image for w in images]).astype(np.float32)  # (B, H, W, 3)
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1.0


class _StepBatches(Dataset):
    """Item i is the batch of step `start + i`, made by `make(step)` (a picklable callable)."""

    def __init__(self, make: Callable[[int], object], start: int, stop: int):
        self.make, self.start, self.stop = make, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, i: int):
        return self.make(self.start + i)


def step_batches(make: Callable[[int], object], start: int, stop: int, workers: int = 0) -> Iterable:
    """The batches of steps start..stop-1 in order, rendered `workers` processes ahead (0: inline)."""
    if workers <= 0:
        return (make(step) for step in range(start, stop))
    # Its own generator: a DataLoader otherwise draws its workers' seed from torch's global RNG,
    # which the VAE's posterior sampling reads, and the weights would depend on `workers`.
    return DataLoader(_StepBatches(make, start, stop), batch_size=None, shuffle=False, num_workers=workers,
                      prefetch_factor=4, generator=torch.Generator().manual_seed(0))


def vae_batch(cfg: SandboxConfig, step: int) -> torch.Tensor:
    """The VAE's training pixels of `step`."""
    return to_pixels(world_batch(cfg.seed, "vae", step, cfg.vae.batch_size))


def base_batch(cfg: SandboxConfig, step: int) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """The base model's training pixels, (augmented) captions and object masks at the latent's
    side, (B, 1, 32, 32) (the share of each latent pixel covered by objects), of global `step`."""
    phase, _ = phase_at(base_phases(cfg), step)
    # Batches, noise and captions are keyed by the global step: a restart continues the stream.
    images = world_batch(cfg.seed, "base", step, phase.batch_size, layout=cfg.base_layout)
    text_rng = random.Random(f"{cfg.seed}:base-captions:{step}")
    captions = ["" if text_rng.random() < cfg.caption_dropout else
                w.caption(text_rng, drop_attribute=cfg.attribute_dropout, drop_background=0.1)
                for w in images]
    masks = np.stack([np.any(w.masks, axis=0) if len(w.masks) else np.zeros(w.image.shape[:2], bool)
                      for w in images]).astype(np.float32)                                   # (B, 64, 64)
    return to_pixels(images), captions, F.avg_pool2d(torch.from_numpy(masks)[:, None], 2)


def diffusion_loss(pred: torch.Tensor, noise: torch.Tensor, sample_weight: torch.Tensor,
                   object_share: torch.Tensor, object_weight: float) -> torch.Tensor:
    """The base model's loss: each sample's MSE weighted by `sample_weight` (B,) (Min-SNR), the
    batch averaged. With `object_weight` w != 1 a latent pixel weighs 1 + (w - 1) x its object
    share `object_share` (B, 1, h, w), normalised per sample so the loss keeps its scale."""
    if object_weight == 1:
        return (sample_weight * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
    pixel_weight = 1.0 + (object_weight - 1.0) * object_share                               # (B, 1, h, w)
    per_sample = (pixel_weight * (pred - noise).pow(2)).mean(dim=(1, 2, 3)) / pixel_weight.mean(dim=(1, 2, 3))
    return (sample_weight * per_sample).mean()


def base_phases(cfg: SandboxConfig) -> list[SandboxStage]:
    """The base model's training phases, in order: `base`, then its warm restart if any."""
    return [cfg.base] + ([cfg.base_restart] if cfg.base_restart is not None else [])


def phase_at(phases: list[SandboxStage], step: int) -> tuple[SandboxStage, int]:
    """(phase, step within it) of a global step; steps past the end belong to the last phase."""
    for phase in phases[:-1]:
        if step < phase.steps:
            return phase, step
        step -= phase.steps
    return phases[-1], step


# --------------------------------------------------------------------------- VAE


def train_vae(cfg: SandboxConfig, work_dir: Path, log_every: int = 50, checkpoint_every: int = 100,
              metric_batches: int = 8, device: torch.device | str = "cpu", workers: int = 0):
    """Train the 2x AutoencoderKL; returns (vae with its latent scaling factor set, metrics), on `device`."""
    torch.manual_seed(cfg.seed)
    vae = base_model.build_vae().to(device)
    stage = cfg.vae
    opt = torch.optim.AdamW(vae.parameters(), lr=stage.lr, weight_decay=0.0)

    def loss_of(step: int, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.to(device)
        posterior = vae.encode(pixels).latent_dist
        recon = vae.decode(posterior.sample()).sample
        # L1 keeps edges and patterns crisp; the KL term only keeps latents bounded (SD: 1e-6).
        return F.l1_loss(recon, pixels) + F.mse_loss(recon, pixels) + 1e-6 * posterior.kl().mean()

    vae.train()
    train_steps("vae", {"model": vae, "opt": opt}, opt, stage.steps, functools.partial(lr_at, stage), loss_of,
                work_dir, batches=lambda start: step_batches(functools.partial(vae_batch, cfg), start, stage.steps,
                                                             workers),
                checkpoint_every=checkpoint_every, log_every=log_every)
    vae.eval()
    calibration = calibrate_vae(vae, cfg, cfg.vae_calibration, batches=metric_batches)
    metrics = _vae_metrics(vae, cfg, batches=metric_batches)
    vae.register_to_config(scaling_factor=metrics["scaling_factor"])
    return vae, {**metrics, "calibration": calibration}


# A log-variance of -20 is a posterior std of 4.5e-5 in raw latent units: far below any latent
# channel's spread, yet inside DiagonalGaussianDistribution's clamp (-30, 20).
DETERMINISTIC_LOGVAR = -20.0


@torch.no_grad()
def calibrate_vae(vae, cfg: SandboxConfig, mode: str, batches: int = 8) -> dict:
    """Make the trained VAE's latents fit for diffusion, leaving `decode(encode(x).mean)` unchanged.

    The KL weight that keeps latents bounded (1e-6, SD's) never narrows the posterior, and the
    decoder learns to ignore its noise: sampled latents then carry a jitter of about a third of
    their spread, a target no diffusion model can predict. `deterministic` replaces the encoder's
    log-variance head by a constant (`DETERMINISTIC_LOGVAR`), as SD's own VAE is in effect.
    `deterministic_per_channel` also centres every latent channel and scales it to unit spread on
    calibration renders (the channels' spreads differ 5x, so diffusion noise would drown the
    smallest first); the decoder's first layer (`post_quant_conv`, 1x1) absorbs the inverse map,
    so decoding is exact. `none` keeps the trained VAE. Returns the per-channel shift and scale."""
    if mode == "none":
        return {"mode": mode}
    channels = vae.config.latent_channels
    quant, post = vae.quant_conv, vae.post_quant_conv
    shift, scale = torch.zeros(channels), torch.ones(channels)
    if mode == "deterministic_per_channel":
        device = next(vae.parameters()).device
        means = torch.cat([vae.encode(to_pixels(world_batch(cfg.seed, "vae-calibration", b, 32)).to(device)
                                      ).latent_dist.mean.cpu() for b in range(batches)])
        per_channel = means.transpose(0, 1).flatten(1)                         # (C, N)
        shift, scale = per_channel.mean(1), 1.0 / per_channel.std(1)
    # new mean = scale * (old mean - shift); decode(new) = post(old mean) when post's weight is
    # divided by scale column-wise and its bias takes the shift.
    w_mean, b_mean = quant.weight[:channels], quant.bias[:channels]
    quant.weight[:channels] = w_mean * scale.view(-1, 1, 1, 1).to(w_mean)
    quant.bias[:channels] = (b_mean - shift.to(b_mean)) * scale.to(b_mean)
    quant.weight[channels:] = 0.0
    quant.bias[channels:] = DETERMINISTIC_LOGVAR
    w_post = post.weight.clone()                                               # (C, C, 1, 1)
    post.bias += (w_post[:, :, 0, 0] @ shift.to(w_post))
    post.weight.copy_(w_post / scale.view(1, -1, 1, 1).to(w_post))
    return {"mode": mode, "shift": [round(v, 6) for v in shift.tolist()],
            "scale": [round(v, 6) for v in scale.tolist()]}


@torch.no_grad()
def posterior_spread(vae, cfg: SandboxConfig, batches: int = 2, batch_size: int = 8) -> dict:
    """Per latent channel, on held-out renders: the std of the posterior mean over images and
    pixels, the mean posterior std, and their ratio (how much of a sampled latent is noise)."""
    device = next(vae.parameters()).device
    means, stds = [], []
    for b in range(batches):
        pixels = to_pixels(world_batch(cfg.seed, "vae-heldout", b, batch_size, identities=world.ALL_IDENTITIES))
        dist = vae.encode(pixels.to(device)).latent_dist
        means.append(dist.mean.cpu())
        stds.append(dist.std.cpu())
    spread = torch.cat(means).transpose(0, 1).flatten(1).std(1)
    noise = torch.cat(stds).transpose(0, 1).flatten(1).mean(1)
    ratio = noise / spread
    return {"mean_std": [round(v, 5) for v in spread.tolist()], "posterior_std": [float(f"{v:.3g}") for v in noise.tolist()],
            "ratio": [float(f"{v:.3g}") for v in ratio.tolist()], "max_ratio": float(f"{ratio.max().item():.3g}")}


@torch.no_grad()
def _vae_metrics(vae, cfg: SandboxConfig, batches: int = 8) -> dict:
    """Held-out reconstruction PSNR (novel identities too) and the latent scaling factor 1/std."""
    latents, psnrs = [], []
    device = next(vae.parameters()).device
    for b in range(batches):
        images = world_batch(cfg.seed, "vae-heldout", b, 32, identities=world.ALL_IDENTITIES)
        pixels = to_pixels(images).to(device)
        mean = vae.encode(pixels).latent_dist.mean
        recon = vae.decode(mean).sample.clamp(-1, 1)
        mse = ((recon - pixels) / 2).pow(2).flatten(1).mean(1)   # on [0, 1] pixels
        psnrs.append((-10 * torch.log10(mse)).mean().item())
        latents.append(mean)
    std = torch.cat(latents).std().item()
    return {"psnr_db": float(np.mean(psnrs)), "scaling_factor": 1.0 / std}


# --------------------------------------------------------------------------- base model


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1.0 - decay)


def encode_text(tokenizer, text_encoder, captions: list[str]) -> torch.Tensor:
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids.to(text_encoder.device))[0]


def train_base(cfg: SandboxConfig, vae, tokenizer, work_dir: Path, log_every: int = 20,
               checkpoint_every: int = 100, device: torch.device | str = "cpu", workers: int = 0,
               record: Optional[dict] = None):
    """Train UNet + text encoder on world captions; returns the EMA (unet, text_encoder), on `device`.

    With `cfg.base_text: frozen` the text encoder is first pretrained on captions alone and then
    frozen (only the UNet trains); its held-out accuracies go into `record["text_pretrain"]`."""
    # diffusers: only when the base model trains (classifiers, embedders and validity import this module)
    from diffusers import DDPMScheduler

    torch.manual_seed(cfg.seed + 1)
    unet = base_model.build_unet()
    text_encoder = base_model.build_text_encoder()
    frozen_text = cfg.base_text == "frozen"
    if frozen_text:
        accuracies = pretrain_text_encoder(text_encoder, tokenizer, cfg.seed, cfg.text_pretrain, work_dir,
                                           drop_attribute=cfg.attribute_dropout)
        log.info("text encoder pretrained on captions: held-out %s", accuracies)
        if record is not None:
            record["text_pretrain"] = accuracies
        text_encoder.requires_grad_(False)
    ema_unet, ema_text = copy.deepcopy(unet), copy.deepcopy(text_encoder)
    for module in (unet, text_encoder, ema_unet, ema_text):
        module.to(device)
    vae = vae.to(device)
    scheduler = DDPMScheduler.from_config(SCHEDULER_CONFIG)
    alphas_cumprod = scheduler.alphas_cumprod                      # (1000,)
    snr = alphas_cumprod / (1 - alphas_cumprod)
    phases = base_phases(cfg)
    total_steps = sum(p.steps for p in phases)
    params = list(unet.parameters()) + ([] if frozen_text else list(text_encoder.parameters()))
    opt = torch.optim.AdamW(params, lr=cfg.base.lr, weight_decay=1e-2)
    unet.train()
    text_encoder.train(not frozen_text)
    vae.eval()

    def lr_of(step: int) -> float:
        phase, phase_step = phase_at(phases, step)
        return lr_at(phase, phase_step)

    def loss_of(step: int, batch: tuple[torch.Tensor, list[str], torch.Tensor]) -> torch.Tensor:
        pixels, captions, object_share = batch
        # The step's randomness comes from a CPU generator on every device (module docstring).
        gen = torch.Generator().manual_seed(int(stage_rng(cfg.seed, "base-noise", step).integers(2**62)))
        with torch.no_grad():
            latents = vae.encode(pixels.to(device)).latent_dist.sample(gen) * vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=gen).to(device)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), generator=gen)
        # Min-SNR-gamma for epsilon prediction: weight min(SNR, gamma) / SNR per sample.
        weight = (torch.clamp(snr[timesteps], max=cfg.min_snr_gamma) / snr[timesteps]).to(device)   # (B,)
        timesteps = timesteps.to(device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        with torch.set_grad_enabled(not frozen_text):
            context = encode_text(tokenizer, text_encoder, captions)
        pred = unet(noisy, timesteps, context).sample
        return diffusion_loss(pred, noise, weight, object_share.to(device), cfg.object_loss_weight)

    def ema_step(step: int) -> None:
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        _ema_update(ema_unet, unet, decay)
        if not frozen_text:
            _ema_update(ema_text, text_encoder, decay)

    train_steps("base", {"unet": unet, "text": text_encoder, "ema_unet": ema_unet, "ema_text": ema_text, "opt": opt},
                opt, total_steps, lr_of, loss_of, work_dir,
                batches=lambda start: step_batches(functools.partial(base_batch, cfg), start, total_steps, workers),
                clip=(params, 1.0), after_step=ema_step, checkpoint_every=checkpoint_every, log_every=log_every)
    ema_unet.eval()
    ema_text.eval()
    return ema_unet, ema_text


def save_diffusion(root: Path, vae, unet, text_encoder, record: dict) -> None:
    """Write the diffusers layout that `bas.models.registry.load_diffusion` reads, in fp16."""
    with atomic_dir(root) as tmp:
        for name, module in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder)):
            copy.deepcopy(module).to(torch.float16).save_pretrained(tmp / name, safe_serialization=True)
        write_clip_tokenizer(tmp / "tokenizer")
        (tmp / "scheduler").mkdir()
        (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2) + "\n")
        (tmp / TRAINING_RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
