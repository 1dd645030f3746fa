"""Print the `-S key=value` overrides that shrink the evaluation to a CPU demo.

params.yaml keeps the protocol's numbers; the demo caps every training phase at
DEMO_STEPS steps, samples with fewer DDIM steps and uses two scenes, so `scripts/demo.sh`
runs every method end to end in minutes on a laptop CPU. Only the amounts shrink: every
stage, loss term, sampler and score runs exactly as in a full run.
"""

from __future__ import annotations

import json
import sys

from bas import config
from bas.training import get_recipe

DEMO_STEPS = 8
DEMO = {
    "models.profile": "tiny",
    "scenes.num_scenes": 2,
    "training.progress_bar": False,
    "training.prior_images.num_images": 2,
    "training.prior_images.sampling_steps": 10,
    "generation.seeds": 1,
    "generation.steps": 6,
}


def main(params: str = "params.yaml") -> None:
    cfg = config.load(params)
    overrides = dict(DEMO)
    for method in cfg.orchestration.methods:
        for name, phase in get_recipe(cfg, method).phases.items():
            if phase.steps > DEMO_STEPS:
                overrides[f"methods.{method}.phases.{name}.steps"] = DEMO_STEPS
    print(" ".join(f"-S {key}={json.dumps(value)}" for key, value in overrides.items()))


if __name__ == "__main__":
    main(*sys.argv[1:])
