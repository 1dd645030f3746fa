"""Panoptic segmentation of generated images, as per-class masks.

BaS identity similarity (PROTOCOL.md sec. 5) keeps, in a generated image, the union of the
segments whose class is the concept's class. MaskFormer (Swin-L, COCO panoptic; a tiny
random one in the `tiny` profile) runs on a batch of images; transformers' panoptic
post-processing turns its queries into segments at each image's own size. The sandbox
profile brings its own segmenter, trained on its world (`bas.models.sandbox_segmenter`), with the
same contract; `make_segmenter` picks whichever the loaded scorers have.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

from bas.config import ScoringConfig
from bas.errors import ModelNotAvailableError
from bas.models.segmentation import Segmentation


class MaskFormerSegmenter:
    """Callable: a batch of PIL images -> one `Segmentation` each. The model stays loaded."""

    def __init__(self, scorers, cfg: ScoringConfig, device: torch.device):
        self.model = scorers.maskformer
        self.processor = scorers.maskformer_processor
        self.id2label = scorers.panoptic_id2label
        self.cfg = cfg
        self.device = device

    @property
    def labels(self) -> tuple[str, ...]:
        """The classes it can find."""
        return tuple(self.id2label.values())

    @torch.no_grad()
    def __call__(self, images: Sequence[Image.Image]) -> list[Segmentation]:
        if not images:
            return []
        inputs = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        outputs = self.model(**inputs)
        results = self.processor.post_process_panoptic_segmentation(
            outputs, threshold=self.cfg.maskformer_threshold, mask_threshold=self.cfg.maskformer_mask_threshold,
            overlap_mask_area_threshold=self.cfg.maskformer_overlap_threshold,
            label_ids_to_fuse=set(),  # instances stay apart; the union per class is taken afterwards
            target_sizes=[(im.height, im.width) for im in images],
        )
        segmentations = []
        for result in results:
            segment_map = result["segmentation"].cpu().numpy().astype(np.int64)   # (H, W)
            segment_map[segment_map < 0] = 0  # transformers marks "no segment at all" with -1
            classes = {int(info["id"]): self.id2label[int(info["label_id"])] for info in result["segments_info"]}
            segmentations.append(Segmentation(segment_map=segment_map, segment_classes=classes))
        return segmentations


def make_segmenter(scorers, cfg: ScoringConfig, device: torch.device):
    """The scorers' own segmenter when the profile has one (sandbox), on `device`; else MaskFormer."""
    # ScorerParts.segmenter is None for the MaskFormer profiles (getattr: older ScorerParts lack it).
    own = getattr(scorers, "segmenter", None)
    if own is not None:
        return own.to(device)
    if scorers.maskformer is None:
        raise ModelNotAvailableError(f"the {scorers.profile} scorers have no segmenter: identity similarity cannot "
                                     "be scored (sandbox: `bas sandbox train --only segmenter` trains it)")
    return MaskFormerSegmenter(scorers, cfg, device)
