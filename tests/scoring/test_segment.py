import numpy as np
from PIL import Image

from bas.scoring.segment import MaskFormerSegmenter
from tests import params_defaults


def test_maskformer_segments_each_image_at_its_own_size(tiny_scorers):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)) for h, w in [(96, 96), (64, 80)]]
    # Threshold 0 keeps every query: the random tiny model then yields real segments to check.
    segmenter = MaskFormerSegmenter(tiny_scorers, params_defaults.scoring(maskformer_threshold=0.0,
                                                                maskformer_mask_threshold=0.0,
                                                                maskformer_overlap_threshold=0.0),
                                    tiny_scorers.maskformer.device)
    results = segmenter(images)
    assert [r.segment_map.shape for r in results] == [(96, 96), (64, 80)]
    labels = set(tiny_scorers.panoptic_id2label.values())
    assert any(r.segment_classes for r in results)
    for r in results:
        assert r.segment_map.min() >= 0
        assert set(np.unique(r.segment_map)) - {0} <= set(r.segment_classes)
        assert r.classes <= labels
        for name in r.classes:
            assert r.class_mask(name).any()


def test_class_mask_keeps_only_that_class_union():
    from bas.scenes.masking import masked_concept
    from bas.scoring.segment import Segmentation

    segment_map = np.array([[1, 1, 2, 0],
                            [3, 3, 2, 0]])
    seg = Segmentation(segment_map, {1: "dog", 2: "cat", 3: "dog"})
    dog = seg.class_mask("dog")
    assert np.array_equal(dog, np.isin(segment_map, [1, 3]))            # both dog segments, nothing else
    assert np.array_equal(seg.class_mask("cat"), segment_map == 2)
    assert not seg.class_mask("couch").any()
    assert seg.classes == {"dog", "cat"}
    rgb = np.full((2, 4, 3), 200, np.uint8)
    kept = np.asarray(masked_concept(Image.fromarray(rgb), dog))
    assert (kept[dog] == 200).all() and (kept[~dog] == 0).all()
