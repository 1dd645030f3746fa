"""How much each learned token attends to the *other* concepts: a disentanglement probe.

For a trained model (tokens in place), noise the scene's latent at fixed timesteps with
fixed noise, run the UNet once per timestep on "a photo of <asset0> and <asset1> ...",
and read each token's cross-attention map on the given layers (heads, layers and
timesteps averaged), masks nearest-downsampled to the map. Per token:
- `own`, `other`, `background`: shares of the map (normalised to sum 1) on its own mask,
  on the other concepts' masks (minus its own), and on no concept;
- `own_peak`, `other_peak`: the map divided by its max (as the BaS loss sees it),
  averaged over its own mask's pixels and over the other concepts' pixels.
BaS's attention loss should lower `other` and `other_peak` (BaS fig. 4).
"""

from __future__ import annotations

from typing import Sequence

import torch

from bas import attention as attn
from bas.attention import token_positions
from bas.training.data import encode_posterior, image_to_tensor, make_prompt, prompt_ids
from bas.training.losses import downsample_mask

PROBE_TIMESTEPS = (100, 300, 500, 700, 900)


@torch.no_grad()
def attention_overlap(parts, scene, tokens: Sequence[str], layers: Sequence[str],
                      timesteps: Sequence[int] = PROBE_TIMESTEPS, seed: int = 0,
                      template: str = "a photo of {tokens}", joiner: str = " and ") -> dict[str, list[float]]:
    """Per-token attention shares and peak-normalised means (see the module docstring)."""
    device = parts.unet.device
    token_ids = parts.tokenizer.convert_tokens_to_ids(list(tokens))
    ids = prompt_ids(parts.tokenizer, [make_prompt(template, joiner, tokens)], device)         # (1, 77)
    positions = token_positions(ids[0], token_ids)
    image = image_to_tensor(scene.image, parts.resolution)[None]                             # (1, 3, R, R)
    mean, _ = encode_posterior(parts.vae, image)
    latents = (mean * parts.vae_scaling_factor).to(device)                                   # (1, 4, h, w)
    generator = torch.Generator("cpu").manual_seed(seed)
    hidden = parts.text_encoder(ids)[0]                                                      # (1, 77, D)

    store = attn.AttentionStore()
    original = dict(parts.unet.attn_processors)
    attn.install(parts.unet, layers, store)
    try:
        total = None
        for t in timesteps:
            noise = torch.randn(latents.shape, generator=generator).to(device)
            step = torch.tensor([int(t)], device=device)
            noisy = parts.noise_scheduler.add_noise(latents, noise, step)
            parts.unet(noisy, step, hidden)
            maps = store.mean_map(layers)[0][:, positions].T                                 # (k, HW)
            total = maps if total is None else total + maps
            store.reset()
    finally:
        parts.unet.set_attn_processor(original)

    k, hw = total.shape
    side = int(round(hw ** 0.5))
    masks = torch.stack([torch.from_numpy(m) for m in scene.masks]).float()                # (k, H, W)
    small = downsample_mask(masks, side).reshape(k, hw).to(total.device)                     # (k, HW)
    fractions = total / total.sum(dim=1, keepdim=True)                                      # (k, HW), sums to 1
    peak = total / total.amax(dim=1, keepdim=True)                                          # (k, HW), max 1
    out: dict[str, list[float]] = {"own": [], "other": [], "background": [], "own_peak": [], "other_peak": []}
    for i in range(k):
        others = (small[[j for j in range(k) if j != i]].amax(dim=0) * (1 - small[i])).clamp(0, 1)  # (HW,)
        background = 1 - small.amax(dim=0)                                                   # (HW,)
        out["own"].append(float((fractions[i] * small[i]).sum()))
        out["other"].append(float((fractions[i] * others).sum()))
        out["background"].append(float((fractions[i] * background).sum()))
        out["own_peak"].append(float((peak[i] * small[i]).sum() / small[i].sum().clamp_min(1)))
        out["other_peak"].append(float((peak[i] * others).sum() / others.sum().clamp_min(1)))
    return out
