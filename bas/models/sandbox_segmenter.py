"""The sandbox profile's segmenter at run time: its network, its files, and loading it.

`SandboxSegmenter` plays MaskFormer's role for identity similarity in the sandbox profile:
a small convolutional encoder-decoder labels every pixel background or one of the world's
shapes, and each connected component of a shape becomes one segment, so instances stay apart
as MaskFormer's do. It is trained by the sandbox factory (`bas.sandbox.classifiers`), which
also holds the judge; the model registry loads it from here, so nothing that scores imports
the factory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from scipy import ndimage
from torch import nn

from bas.models.segmentation import Segmentation

# The sandbox world's image side (px) and segmenter classes (pixel label k -> name; 0 = no
# object), which the factory trains it on: `bas.sandbox.world.SIZE` and ("background",) +
# `world.SHAPES`, written out so that loading does not import the factory
# (tests/sandbox/test_classifiers.py checks that they agree).
IMAGE_SIZE = 64
SEGMENTER_CLASSES: tuple[str, ...] = ("background", "circle", "square", "triangle", "star", "cross")
MIN_SEGMENT_FRACTION = 20 / (IMAGE_SIZE * IMAGE_SIZE)   # smallest kept component: 20 px at 64x64
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SegmenterNet(nn.Module):
    """A small U-Net: 64 -> 8 px in three stride-2 stages and back, with skips; per-pixel logits.

    The 8x8 stage's receptive field spans the whole image, so a pixel's class can depend on
    its object's outline, which is what tells the shapes apart.
    """

    def __init__(self, widths: Sequence[int] = (12, 24, 64, 96), classes: int = len(SEGMENTER_CLASSES)):
        super().__init__()
        w = list(widths)
        self.widths = w
        self.stem = nn.Sequential(_conv(3, w[0]), _conv(w[0], w[0]))
        self.down = nn.ModuleList(nn.Sequential(_conv(w[i], w[i + 1], 2), _conv(w[i + 1], w[i + 1]))
                                  for i in range(len(w) - 1))
        self.bottom = _conv(w[-1], w[-1])
        # One conv per decoder stage: the decoder runs at the high resolutions, where convs cost most.
        # The last stage, at full resolution, only mixes the upsampled features with the stem's (1x1).
        self.up = nn.ModuleList(_conv(w[i + 1] + w[i], w[i]) for i in reversed(range(1, len(w) - 1)))
        self.fuse = nn.Sequential(nn.Conv2d(w[1] + w[0], w[0], 1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU(inplace=True))
        self.head = nn.Conv2d(w[0], classes, 1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.stem(pixels)                                   # (B, w0, 64, 64)
        skips = [x]
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = self.bottom(skips.pop())                            # (B, w3, 8, 8)
        for block in [*self.up, self.fuse]:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)                                     # (B, classes, 64, 64)



def split_instances(labels: np.ndarray, class_names: Sequence[str], min_area: int) -> Segmentation:
    """Per-pixel class labels (0 = background) -> one segment per 8-connected component of a class.

    Components smaller than `min_area` pixels are dropped (their pixels are left unassigned).
    Segment ids count from 1 in class order, then in scan order of each component's first pixel.
    """
    segment_map = np.zeros(labels.shape, np.int64)
    segment_classes: dict[int, str] = {}
    for k in range(1, len(class_names)):
        components, count = ndimage.label(labels == k, structure=np.ones((3, 3), bool))
        if not count:
            continue
        areas = np.bincount(components.ravel(), minlength=count + 1)
        for component in range(1, count + 1):
            if areas[component] >= min_area:
                segment_id = len(segment_classes) + 1
                segment_map[components == component] = segment_id
                segment_classes[segment_id] = class_names[k]
    return Segmentation(segment_map=segment_map, segment_classes=segment_classes)


def _pixels_of(images: Sequence[Image.Image]) -> torch.Tensor:
    """(B, 3, 64, 64) in [-1, 1]; images of another size are resized (bilinear) to the world's."""
    arrays = [np.asarray(im.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
                         if im.size != (IMAGE_SIZE, IMAGE_SIZE) else im.convert("RGB")) for im in images]
    return torch.from_numpy(np.stack(arrays).astype(np.float32)).permute(0, 3, 1, 2) / 127.5 - 1.0



def _save(directory: Path, net: nn.Module, config: dict) -> None:
    """fp16 safetensors (float tensors; BatchNorm's step counter stays an integer) + config json."""
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


def _load(directory: Path, kind: str, build: Callable[[dict], nn.Module]) -> tuple[nn.Module, dict]:
    directory = Path(directory)
    config = json.loads((directory / CONFIG_FILE).read_text())
    if config.get("kind") != kind:
        raise ValueError(f"{directory}: holds a sandbox {config.get('kind')!r}, not a {kind!r}")
    net = build(config)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(directory / WEIGHTS_FILE)).items()}
    net.load_state_dict(state)
    return net.eval(), config


def as_saved(net: nn.Module) -> nn.Module:
    """`net` with its weights rounded to fp16, as saving and loading it gives them back (in place)."""
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return net.eval()


class SandboxSegmenter:
    """Callable: a batch of PIL images -> one `Segmentation` each (MaskFormerSegmenter's contract)."""

    def __init__(self, net: SegmenterNet, class_names: Sequence[str] = SEGMENTER_CLASSES,
                 min_segment_fraction: float = MIN_SEGMENT_FRACTION):
        self.net = net.eval()
        self.class_names = tuple(class_names)
        self.min_segment_fraction = min_segment_fraction
        self.device = next(net.parameters()).device

    @property
    def labels(self) -> tuple[str, ...]:
        """The classes it can find (background is not one)."""
        return self.class_names[1:]

    @classmethod
    def load(cls, directory: str | Path) -> "SandboxSegmenter":
        net, config = _load(Path(directory), "segmenter", lambda c: SegmenterNet(c["widths"], len(c["classes"])))
        return cls(net, config["classes"], config["min_segment_fraction"])

    def to(self, device: torch.device | str) -> "SandboxSegmenter":
        self.net.to(device)
        self.device = torch.device(device)
        return self

    @torch.no_grad()
    def __call__(self, images: Sequence[Image.Image]) -> list[Segmentation]:
        if not images:
            return []
        logits = self.net(_pixels_of(images).to(self.device)).float().cpu()      # (B, classes, 64, 64)
        out = []
        for image, image_logits in zip(images, logits):
            size = (image.height, image.width)
            if size != tuple(image_logits.shape[-2:]):
                image_logits = F.interpolate(image_logits[None], size=size, mode="bilinear", align_corners=False)[0]
            labels = image_logits.argmax(0).numpy()                              # (H, W)
            min_area = max(1, round(self.min_segment_fraction * size[0] * size[1]))
            out.append(split_instances(labels, self.class_names, min_area))
        return out
