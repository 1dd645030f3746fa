import numpy as np
from PIL import Image

from bas.scoring.masking import masked_concept, resize_mask
from bas.scoring.segment import Segmentation


def test_masked_concept_keeps_only_the_mask():
    rgb = np.random.default_rng(0).integers(1, 255, size=(8, 8, 3), dtype=np.uint8)
    mask = np.zeros((8, 8), bool)
    mask[2:5, 3:7] = True
    out = np.asarray(masked_concept(Image.fromarray(rgb), mask))
    assert np.array_equal(out[mask], rgb[mask])
    assert (out[~mask] == 0).all()


def test_mask_is_resized_nearest_to_the_image():
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True                                   # top-left quarter
    big = resize_mask(mask, (8, 8))
    assert big.shape == (8, 8) and big[:4, :4].all() and not big[4:].any() and not big[:, 4:].any()
    out = np.asarray(masked_concept(Image.new("RGB", (8, 8), (9, 9, 9)), mask))
    assert (out[:4, :4] == 9).all() and (out[4:] == 0).all()


def test_class_mask_is_the_union_of_that_class_only():
    segment_map = np.array([[1, 1, 2, 0],
                            [3, 3, 2, 0]])
    seg = Segmentation(segment_map, {1: "dog", 2: "cat", 3: "dog"})
    assert np.array_equal(seg.class_mask("dog"), segment_map % 2 == 1)   # segments 1 and 3
    assert np.array_equal(seg.class_mask("cat"), segment_map == 2)
    assert not seg.class_mask("couch").any()
    assert seg.classes == {"dog", "cat"}
