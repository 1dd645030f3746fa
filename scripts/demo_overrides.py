"""Print the `-S key=value` overrides (one argument a line) of the README's main job, for a model profile.

`sandbox` (the default): the protocol on the sandbox world with bas's own trained models
(docs/SANDBOX.md) for the five methods behind the papers' central claims (BaS, TI-m, DB-m,
CD-m, BaS without its attention loss), every loss term and every training step of the
sandbox profile; only the amounts shrink (two scenes, five of the ten prompt contexts, 20 DDIM
steps, 16 prior-preservation images, batched sampling), so the run takes about 20 minutes on
a 2-core CPU; what its numbers show: docs/SANDBOX.md, *Results on the sandbox*.

`tiny`: the machinery smoke run on random-weight models (numbers mean nothing): every
training phase capped at TINY_STEPS steps, two scenes, few DDIM steps.
"""

from __future__ import annotations

import json
import sys

from bas import config
from bas.training import get_recipe

FIRST_TEMPLATES = 5   # the first five of the protocol's ten contexts (beach, jungle, snow, street, fabric)

SANDBOX = {
    "models.profile": "sandbox",
    # The methods behind the papers' central claims (TI-m vs DB-m vs BaS, the attention loss);
    # `bas -S models.profile=sandbox run` runs all twelve. Then the sandbox's ground-truth
    # references (bas.sandbox.reference): each metric's ceiling and identity's floor.
    "orchestration.methods": ["bas", "ti_m", "db_m", "cd_m", "bas_no_attn_loss", "ground_truth", "other_identity"],
    "scenes.num_scenes": 2,
    "training.progress_bar": False,
    "training.prior_images.num_images": 16,
    "training.prior_images.sampling_steps": 25,
    "generation.steps": 20,
    "generation.templates": FIRST_TEMPLATES,
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
        overrides = dict(SANDBOX)
        overrides["generation.templates"] = list(config.load(params).generation.templates[:FIRST_TEMPLATES])
        return overrides
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
    # One argument a line (values hold spaces): demo.sh reads them into an array.
    for key, value in overrides_for(profile, params).items():
        print("-S")
        print(f"{key}={json.dumps(value)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
