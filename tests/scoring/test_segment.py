import numpy as np
from PIL import Image

from bas.config import ScoringConfig
from bas.scoring.segment import MaskFormerSegmenter


def test_maskformer_segments_each_image_at_its_own_size(tiny_scorers):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)) for h, w in [(96, 96), (64, 80)]]
    # Threshold 0 keeps every query: the random tiny model then yields real segments to check.
    segmenter = MaskFormerSegmenter(tiny_scorers, ScoringConfig(maskformer_threshold=0.0,
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
