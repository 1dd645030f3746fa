"""Small synthetic COCO roots for the staging tests, built in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bas.config import ScenesConfig
from tests import params_defaults

CATEGORIES = [
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 17, "name": "cat", "supercategory": "animal"},
    {"id": 18, "name": "dog", "supercategory": "animal"},
    {"id": 25, "name": "giraffe", "supercategory": "animal"},
    {"id": 47, "name": "cup", "supercategory": "kitchen"},
    {"id": 52, "name": "banana", "supercategory": "food"},
    {"id": 62, "name": "chair", "supercategory": "furniture"},
]
CAT_ID = {c["name"]: c["id"] for c in CATEGORIES}


def rect(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    """A one-part COCO polygon segmentation of a rectangle."""
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def scenes_cfg(root: Path, split: str = "train", **changes) -> ScenesConfig:
    values = dict(coco_root=str(root), split=split, resolution=32, num_scenes=50)
    values.update(changes)
    return params_defaults.scenes(**values)


class CocoBuilder:
    """Images and annotations of a fake COCO root; `write()` puts it on disk."""

    def __init__(self, root: Path, split: str = "train"):
        self.root, self.split = root, split
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.colours: dict[int, tuple[int, int, int]] = {}

    def image(self, image_id: int, width: int = 120, height: int = 100) -> int:
        self.images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": width, "height": height})
        rng = np.random.default_rng(image_id)
        self.colours[image_id] = tuple(int(v) for v in rng.integers(0, 255, 3))
        return image_id

    def ann(self, image_id: int, category: str | int, segmentation, iscrowd: int = 0, ann_id=None) -> int:
        ann_id = ann_id if ann_id is not None else 1000 + len(self.annotations)
        category_id = CAT_ID[category] if isinstance(category, str) else category
        self.annotations.append({"id": ann_id, "image_id": image_id, "category_id": category_id,
                                 "segmentation": segmentation, "iscrowd": iscrowd, "area": 0.0,
                                 "bbox": [0, 0, 0, 0]})
        return ann_id

    @property
    def annotation_file(self) -> Path:
        return self.root / "annotations" / f"instances_{self.split}.json"

    def image_path(self, image_id: int) -> Path:
        entry = next(i for i in self.images if i["id"] == image_id)
        return self.root / self.split / entry["file_name"]

    def write(self, write_images: bool = True) -> Path:
        (self.root / "annotations").mkdir(parents=True, exist_ok=True)
        (self.root / self.split).mkdir(parents=True, exist_ok=True)
        data = {"info": {}, "licenses": [], "categories": CATEGORIES, "images": self.images,
                "annotations": self.annotations}
        self.annotation_file.write_text(json.dumps(data))
        if write_images:
            for entry in self.images:
                path = self.root / self.split / entry["file_name"]
                if not path.exists():
                    Image.new("RGB", (entry["width"], entry["height"]), self.colours[entry["id"]]).save(path)
        return self.root


def two_concept_image(builder: CocoBuilder, image_id: int, first: str = "cat", second: str = "dog") -> int:
    """A 120x100 image (crop x 10..110) with two large non-overlapping objects."""
    builder.image(image_id)
    builder.ann(image_id, first, rect(10, 0, 60, 100))  # 50% of the crop
    builder.ann(image_id, second, rect(60, 0, 110, 60))  # 30%
    return image_id


@pytest.fixture
def coco(tmp_path) -> CocoBuilder:
    return CocoBuilder(tmp_path / "coco")
