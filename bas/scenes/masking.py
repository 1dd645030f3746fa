"""The masked input object: a scene image with everything outside one concept blacked out.

BaS shows it to human raters beside each generated image (appendix B.3) and compares
against it with DINO for identity similarity (section 4.1), so both use this one helper.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from bas.errors import DataError


def masked_concept(image: Image.Image, mask: np.ndarray | Image.Image) -> Image.Image:
    """`image` (RGB) with every pixel outside `mask` set to black.

    `mask` is a boolean array (H, W) or a PIL image whose nonzero pixels are the concept
    (our `mask_<i>.png` files are mode L, 0/255). It must be the image's size.
    """
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L")) > 0
    inside = np.asarray(mask).astype(bool)  # (H, W)
    if inside.ndim != 2:
        raise DataError(f"masked_concept: mask must be 2-D (H, W), got shape {inside.shape}")
    if inside.shape != (image.height, image.width):
        raise DataError(f"masked_concept: mask is {inside.shape[1]}x{inside.shape[0]} but the image is "
                        f"{image.width}x{image.height}")
    pixels = np.asarray(image.convert("RGB")).copy()  # (H, W, 3) uint8
    pixels[~inside] = 0
    return Image.fromarray(pixels)  # uint8 (H, W, 3) -> RGB
