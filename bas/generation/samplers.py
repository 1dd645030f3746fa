"""The sampler registry: `params.yaml generation.sampler` names one of these.

Values are `module:function` strings, imported on first use, so that reading params (which
checks the name) does not import torch. A sampler is called as

    sampler(parts, items, scene, gen, *, dtype, batch_invariant) -> list[PIL.Image]

with `items` the `bas.generation.grid.GridItem`s of one batch (prompt, seed, subset),
`scene` the scene they belong to (samplers with spatial control read its masks), `gen` the
`GenerationConfig`, `dtype` the autocast dtype on GPU (None on CPU) and `batch_invariant`
whether every model call must handle a single image (see `bas.generation.sampler`).
It returns one image per item, in order.
"""

from __future__ import annotations

import importlib
from typing import Callable

SAMPLERS: dict[str, str] = {
    # PROTOCOL.md sec. 4: DDIM 50 steps, CFG 7.5, the BaS sampler every method uses.
    "ddim": "bas.generation.sampler:sample_ddim",
    # PROTOCOL.md sec. 3: MIFO's synthesis, DDIM + CFG with box control (generation.mifo_box).
    "mifo_box": "bas.generation.mifo_box:sample_mifo_box",
}

# Samplers with their own settings: sampler name -> its `generation` subsection. The settings
# decide pixels, so a run's images are stale when they change.
SAMPLER_SETTINGS: dict[str, str] = {"mifo_box": "mifo_box"}


def get_sampler(name: str) -> Callable:
    from bas.errors import ConfigError

    try:
        target = SAMPLERS[name]
    except KeyError:
        raise ConfigError(f"params: generation.sampler = {name!r}: must be one of "
                          f"{', '.join(sorted(SAMPLERS))}") from None
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)
