"""CLIP embeddings (open_clip ViT-L/14; tiny random in the `tiny` profile).

Prompt similarity (BaS) = SIM-C (MIFO) = CLIP-T (TL): cosine between the image embedding and
the embedding of the prompt with tokens replaced by "a <class name>". CLIP-I (TL): cosine
between the generated image and the masked input concept. Embeddings come back L2-normalised,
so a cosine is a dot product.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image


class ClipEmbedder:
    def __init__(self, scorers, device: torch.device):
        self.model = scorers.clip_model
        self.preprocess = scorers.clip_preprocess
        self.tokenizer = scorers.clip_tokenizer
        self.device = device

    @torch.no_grad()
    def images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        pixels = torch.stack([self.preprocess(im.convert("RGB")) for im in images]).to(self.device)  # (B, 3, S, S)
        return F.normalize(self.model.encode_image(pixels).float(), dim=-1)                         # (B, D)

    @torch.no_grad()
    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        ids = self.tokenizer(list(texts)).to(self.device)                                          # (B, 77)
        return F.normalize(self.model.encode_text(ids).float(), dim=-1)                            # (B, D)
