"""How fast a vision tower learns shape at all: direct supervision, not a CLIP run.

    python scripts/sandbox_clip_tower_check.py rn16 2e-3 500     # open_clip ModifiedResNet, width 16
    python scripts/sandbox_clip_tower_check.py judgenet 2e-3 150 # the judge's conv layout, for scale

A linear head on the tower's output learns the shape of single-object renders
(`classifiers.judge_scene`, batch 64, AdamW at the given lr, one thread); every 50 steps it
prints the training loss and the accuracy on 200 held-out renders (tower in eval mode).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bas.sandbox import embedders, world
from bas.sandbox.classifiers import JudgeNet, judge_scene
from bas.sandbox.loop import stage_rng


class JudgeFeatures(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = JudgeNet()

    def forward(self, x):
        f = self.net.features(x)
        return torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], 1)


def main() -> None:
    tower, lr, steps = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    width = 16 if tower == "judgenet" else int(tower.removeprefix("rn"))
    embedders.CLIP_CONFIG = {**embedders.CLIP_CONFIG, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1],
                                                                     "width": width, "head_width": 32}}
    model, preprocess = embedders.build_clip(Path(f"/tmp/tower-check-{width}"), 0)
    normalize = embedders.Normalizer(preprocess)
    if tower == "judgenet":
        vis = JudgeFeatures()
        dim = 2 * vis.net.widths[-1]
    else:
        vis, dim = model.visual, embedders.CLIP_CONFIG["embed_dim"]
    head = torch.nn.Linear(dim, len(world.SHAPES))
    opt = torch.optim.AdamW(list(vis.parameters()) + list(head.parameters()), lr=lr)
    rng, test_rng = stage_rng(0, "sup", 0), stage_rng(0, "suptest", 0)
    test = [judge_scene(test_rng) for _ in range(200)]
    x_test = normalize(np.stack([s.image for s in test]))
    y_test = torch.tensor([world.SHAPES.index(s.objects[0].shape) for s in test])
    started = time.time()
    for step in range(steps):
        scenes = [judge_scene(rng) for _ in range(64)]
        x = normalize(np.stack([s.image for s in scenes]))
        y = torch.tensor([world.SHAPES.index(s.objects[0].shape) for s in scenes])
        vis.train()
        loss = F.cross_entropy(head(vis(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 50 == 0:
            vis.eval()
            with torch.no_grad():
                accuracy = (head(vis(x_test)).argmax(1) == y_test).float().mean().item()
            print(f"{tower} lr {lr:g} step {step + 1} loss {loss.item():.3f} held-out shape {accuracy:.3f} "
                  f"({time.time() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
