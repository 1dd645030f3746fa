"""bas.scenes.masking.masked_concept: the masked input object."""

import numpy as np
import pytest
from PIL import Image

from bas.errors import DataError
from bas.scenes.masking import masked_concept


def _image() -> Image.Image:
    pixels = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3) + 10  # (H, W, 3), no black pixel
    return Image.fromarray(pixels)


def test_outside_the_mask_is_black_inside_is_unchanged():
    mask = np.zeros((4, 5), dtype=bool)
    mask[1:3, 2:4] = True
    for given in (mask, Image.fromarray(mask.astype(np.uint8) * 255)):  # bool array or mask_<i>.png (L, 0/255)
        out = np.asarray(masked_concept(_image(), given))
        assert out.shape == (4, 5, 3)
        assert (out[mask] == np.asarray(_image())[mask]).all()
        assert (out[~mask] == 0).all()


def test_any_image_mode_gives_rgb_and_the_input_is_untouched():
    image = _image().convert("RGBA")
    before = np.asarray(image).copy()
    out = masked_concept(image, np.ones((4, 5), dtype=bool))
    assert out.mode == "RGB" and (np.asarray(out) == before[..., :3]).all()
    assert (np.asarray(image) == before).all()


def test_a_mask_of_another_size_is_refused():
    with pytest.raises(DataError, match=r"mask is 4x5 but the image is 5x4"):
        masked_concept(_image(), np.ones((5, 4), dtype=bool))
