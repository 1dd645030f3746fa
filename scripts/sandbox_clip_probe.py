"""What a sandbox CLIP-like model's image embedding encodes: a linear probe per attribute.

    python scripts/sandbox_clip_probe.py bas/data/sandbox/clip

Least squares from the normalised image embeddings (through `bas.scoring`'s CLIP embedder) of
400 single-object renders (the judge's held-out kind, `classifiers.judge_scene`, seed stream
"clip-linear-probe") to each attribute's one-hot code, tested on 200 more; prints JSON with
each attribute's test accuracy and its chance level.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from bas.sandbox import embedders, world
from bas.sandbox.classifiers import judge_scene
from bas.sandbox.loop import stage_rng
from bas.scoring.clip_scores import ClipEmbedder

TRAIN, TEST = 400, 200


def linear_probe(directory: Path) -> dict:
    model, preprocess, tokenizer = embedders.load_sandbox_clip(directory)
    embedder = ClipEmbedder(SimpleNamespace(clip_model=model, clip_preprocess=preprocess, clip_tokenizer=tokenizer),
                            torch.device("cpu"))
    rng = stage_rng(0, "clip-linear-probe", 0)
    scenes = [judge_scene(rng) for _ in range(TRAIN + TEST)]
    x = embedder.images([Image.fromarray(s.image) for s in scenes]).numpy()         # (N, D)
    x = np.c_[x, np.ones(len(x))]                                                    # with a bias
    values = {"shape": (world.SHAPES, lambda s: s.objects[0].shape),
              "colour": (tuple(world.COLOURS), lambda s: s.objects[0].colour),
              "pattern": (world.PATTERNS, lambda s: s.objects[0].pattern),
              "background": (tuple(world.BACKGROUNDS), lambda s: s.background)}
    result = {}
    for name, (classes, read) in values.items():
        y = np.array([classes.index(read(s)) for s in scenes])
        w = np.linalg.lstsq(x[:TRAIN], np.eye(len(classes))[y[:TRAIN]], rcond=None)[0]
        accuracy = float(((x[TRAIN:] @ w).argmax(1) == y[TRAIN:]).mean())
        result[name] = {"accuracy": round(accuracy, 3), "chance": round(1 / len(classes), 3)}
    return result


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(json.dumps(linear_probe(Path(sys.argv[1]))))
