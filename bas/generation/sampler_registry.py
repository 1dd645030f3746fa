"""The sampler registry: `params.yaml generation.sampler` names one of `bas.config.SAMPLERS`.

Its values are `module:function` strings, imported on first use, so that reading params (which
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

# The table of names lives with the params schema, which checks `generation.sampler` against it.
from bas.config import SAMPLER_SETTINGS, SAMPLERS  # noqa: F401  (SAMPLER_SETTINGS: read by bas.generation.run)
from bas.errors import ConfigError


def get_sampler(name: str) -> Callable:
    try:
        target = SAMPLERS[name]
    except KeyError:
        raise ConfigError(f"params: generation.sampler = {name!r}: must be one of "
                          f"{', '.join(sorted(SAMPLERS))}") from None
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)
