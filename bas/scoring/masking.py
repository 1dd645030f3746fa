"""Black out everything but one concept (BaS identity similarity, PROTOCOL.md sec. 5)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`mask` (H, W) bool resized to `size` = (width, height) with nearest neighbour."""
    mask = np.asarray(mask, dtype=bool)
    if (mask.shape[1], mask.shape[0]) == tuple(size):
        return mask
    resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(tuple(size), Image.NEAREST)
    return np.asarray(resized) > 127


def masked_concept(image: Image.Image, mask: np.ndarray) -> Image.Image:
    """`image` (RGB) with every pixel outside `mask` set to black; the mask is resized to fit."""
    rgb = np.asarray(image.convert("RGB"))                     # (H, W, 3) uint8
    keep = resize_mask(mask, image.size)                        # (H, W) bool
    return Image.fromarray(np.where(keep[..., None], rgb, 0).astype(np.uint8))
