"""Does the sandbox's base model follow its text? Judged on held-out captions.

Each caption names one object and a background ("a photo of a red striped circle at the
beach"); the model samples it with the protocol's sampler (DDIM, classifier-free guidance)
and the judge, a classifier trained on ground-truth renders, says which background, shape,
colour and pattern it sees. The captions are drawn with their own seed stream, so they are
held out in the sense that matters here: no training step was built from this stream. Two
sets are judged: *seen* identities, which the validity targets apply to (background >= 0.9,
colour >= 0.8, shape >= 0.7; docs/SANDBOX.md), and *novel* ones, combinations of known words
the model never saw together, reported for information.

`vae_judged` is the ceiling of those figures that the VAE allows: the judge's accuracy on
held-out renders of one object (the judge's own held-out set) after a round trip through the
VAE. A base model can draw no better than its decoder can show, so when text following is low
but this is high, the UNet is what has not learned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from bas.config import SandboxConfig
from bas.generation.sampler import generate
from bas.sandbox import world
from bas.sandbox.classifiers import judge_accuracy, judge_scene
from bas.sandbox.loop import stage_rng
from bas.sandbox.train_diffusion import to_pixels

ATTRIBUTES = ("background", "shape", "colour", "pattern")


@dataclass(frozen=True)
class Probe:
    caption: str
    identity: world.Identity
    background: str
    seed: int


def probes(cfg: SandboxConfig, novel: bool, count: int) -> list[Probe]:
    identities = sorted(world.novel_identities(cfg.seed) if novel else world.seen_identities(cfg.seed))
    rng = stage_rng(cfg.seed, "validity-novel" if novel else "validity", 0)
    backgrounds = list(world.BACKGROUNDS)
    out = []
    for k in range(count):
        ident = identities[int(rng.integers(len(identities)))]
        background = backgrounds[int(rng.integers(len(backgrounds)))]
        caption = f"a photo of {world.article(ident.colour)} {ident.phrase} {world.BACKGROUNDS[background]}"
        out.append(Probe(caption, ident, background, seed=int(rng.integers(2**31))))
    return out


def accuracy(probes_: Sequence[Probe], judged: Sequence[dict]) -> dict[str, float]:
    """Share of samples whose judged attribute equals the caption's, per attribute."""
    truth = [{"background": p.background, "shape": p.identity.shape, "colour": p.identity.colour,
              "pattern": p.identity.pattern} for p in probes_]
    return {a: float(np.mean([t[a] == j[a] for t, j in zip(truth, judged)])) for a in ATTRIBUTES}


VAE_JUDGED_IMAGES = 400


@torch.no_grad()
def vae_judged(vae, judge, cfg: SandboxConfig, images: int = VAE_JUDGED_IMAGES, batch_size: int = 50) -> dict:
    """{'images', 'accuracy': {head: accuracy}} of the judge on VAE reconstructions of held-out renders."""
    rng = stage_rng(cfg.seed, "judge-heldout", 0)
    scenes = [judge_scene(rng) for _ in range(images)]
    device = next(vae.parameters()).device
    judged = []
    for start in range(0, images, batch_size):
        pixels = to_pixels(scenes[start:start + batch_size]).to(device)
        recon = vae.decode(vae.encode(pixels).latent_dist.mode()).sample.clamp(-1, 1)
        array = ((recon + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        judged += judge.predict([Image.fromarray(a) for a in array])
    return {"images": images, "accuracy": judge_accuracy(judged, scenes)}


def base_model_validity(parts, judge, cfg: SandboxConfig, count: int | None = None,
                        batch_size: int = 25, return_images: bool = False):
    """{'seen': {attribute: accuracy}, 'novel': {...}, 'samples', 'steps', 'guidance'}."""
    count = count or cfg.validity_samples
    result = {"samples": count, "steps": cfg.validity_steps, "guidance": cfg.validity_guidance}
    shown = {}
    for name, novel in (("seen", False), ("novel", True)):
        batch = probes(cfg, novel, count)
        images = generate(parts, [p.caption for p in batch], [p.seed for p in batch], steps=cfg.validity_steps,
                          guidance_scale=cfg.validity_guidance, batch_size=batch_size)
        result[name] = accuracy(batch, judge.predict(images))
        shown[name] = (batch, images)
    return (result, shown) if return_images else result
