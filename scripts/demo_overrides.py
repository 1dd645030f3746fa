"""Print the `-S key=value` overrides of the README's main job, for a model profile.

`sandbox` (the default): the full protocol on the sandbox world with bas's own trained
models (docs/SANDBOX.md): every method, every loss term and every training step of the
sandbox profile; only the number of scenes, the prior-preservation images and the DDIM steps
shrink and images are sampled in batches, so the run takes minutes on a 2-core CPU and its numbers mean something.

`tiny`: the machinery smoke run on random-weight models (numbers mean nothing): every
training phase capped at TINY_STEPS steps, two scenes, few DDIM steps.
"""

from __future__ import annotations

import json
import sys

from bas import config
from bas.training import get_recipe

SANDBOX = {
    "models.profile": "sandbox",
    "scenes.num_scenes": 3,
    "training.progress_bar": False,
    "training.prior_images.num_images": 16,
    "training.prior_images.sampling_steps": 25,
    "generation.steps": 25,
    # Batched sampling: an image then depends (in its last bits) on its batch, which a demo
    # does not mind; one image per call would triple the CPU time.
    "generation.batch_invariant": "never",
}

TINY_STEPS = 8
TINY = {
    "models.profile": "tiny",
    "scenes.num_scenes": 2,
    "training.progress_bar": False,
    "training.prior_images.num_images": 2,
    "training.prior_images.sampling_steps": 10,
    "generation.seeds": 1,
    "generation.steps": 6,
}


def overrides_for(profile: str, params: str = "params.yaml") -> dict:
    if profile == "sandbox":
        return dict(SANDBOX)
    if profile != "tiny":
        raise SystemExit(f"demo_overrides: unknown profile {profile!r} (sandbox or tiny)")
    overrides = dict(TINY)
    cfg = config.load(params)
    for method in cfg.orchestration.methods:
        for name, phase in get_recipe(cfg, method).phases.items():
            if phase.steps > TINY_STEPS:
                overrides[f"methods.{method}.phases.{name}.steps"] = TINY_STEPS
    return overrides


def main(profile: str = "sandbox", params: str = "params.yaml") -> None:
    print(" ".join(f"-S {key}={json.dumps(value)}" for key, value in overrides_for(profile, params).items()))


if __name__ == "__main__":
    main(*sys.argv[1:])
