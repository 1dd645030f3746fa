"""DINO ViT-B/16 CLS embeddings (timm; tiny random in the `tiny` profile).

Identity similarity (BaS) = SIM-D (MIFO): cosine between the CLS embeddings of the masked
input concept and the masked generated concept; NSIM-D (MIFO): the same against the scene's
other concepts. Inputs are resized whole to the model's input size (`scoring.dino_crop_pct`
1.0), as the Hugging Face ViT processor BaS used does, rather than centre-cropped as timm's
default transform would, which cuts off concepts touching the border.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image


def dino_transform(model, crop_pct: float):
    """Eval transform for `model` at its own input size (tiny: 64, real: 224)."""
    import timm   # timm: only when a transform is made (the scorers' loaders import this module)

    side = model.patch_embed.img_size  # the model's real input size, whatever its pretrained tag says
    data_cfg = timm.data.resolve_data_config({"input_size": (3, *side), "crop_pct": crop_pct}, model=model)
    return timm.data.create_transform(**data_cfg)


class DinoEmbedder:
    def __init__(self, scorers, device: torch.device, crop_pct: float = 1.0):
        self.model = scorers.dino_model
        self.transform = dino_transform(self.model, crop_pct)
        self.device = device

    @torch.no_grad()
    def images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        pixels = torch.stack([self.transform(im.convert("RGB")) for im in images]).to(self.device)  # (B, 3, S, S)
        return F.normalize(self.model(pixels).float(), dim=-1)                                     # (B, D) CLS
