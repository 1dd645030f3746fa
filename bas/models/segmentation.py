"""What a segmenter returns: the contract between the scorers' segmenters and scoring.

MaskFormer (`bas.scoring.segment`) and the sandbox's own segmenter
(`bas.models.sandbox_segmenter`) both map a batch of images to one `Segmentation` each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Segmentation:
    """One image's panoptic segments: a map of segment ids (0 = no segment) and their classes."""

    segment_map: np.ndarray                                  # (H, W) int, 0 = unassigned
    segment_classes: dict[int, str] = field(default_factory=dict)  # segment id -> class name

    def class_mask(self, class_name: str) -> np.ndarray:
        """(H, W) bool: the union of every segment of `class_name` (all False if none)."""
        ids = [sid for sid, name in self.segment_classes.items() if name == class_name]
        return np.isin(self.segment_map, ids)

    @property
    def classes(self) -> set[str]:
        return set(self.segment_classes.values())
