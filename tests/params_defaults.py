"""params.yaml as the starting point of every test that builds a config.

The config dataclasses have no defaults (params.yaml is the only home of every value), so a
test that changes a few keys starts from params.yaml: `parse({"paths": {...}})` merges the
partial mapping over the file, `generation(seeds=2)` is params.yaml's section with a field
replaced. The file's `profiles:` overlays are left out (the partial mapping is the test's
whole change), as with `config.parse` of a partial mapping before.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from pathlib import Path
from typing import Any, Optional

import yaml

from bas import config
from bas.config.recipes import merge_mappings

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


@functools.lru_cache(maxsize=1)
def _raw() -> dict[str, Any]:
    data = yaml.safe_load(PARAMS.read_text())
    data.pop("profiles", None)
    return data


def data(partial: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """params.yaml's mapping (no profile overlay) with `partial` merged in, mapping by mapping."""
    return merge_mappings(copy.deepcopy(_raw()), partial or {})


def parse(partial: Optional[dict[str, Any]] = None) -> config.Config:
    """`config.parse` of params.yaml with `partial` merged in."""
    return config.parse(data(partial))


@functools.lru_cache(maxsize=1)
def params() -> config.Config:
    return parse()


def _section(name: str):
    def section(**changes: Any) -> Any:
        return dataclasses.replace(getattr(params(), name), **changes)
    section.__name__ = name
    section.__doc__ = f"params.yaml's `{name}` section, with `changes` replaced."
    return section


models = _section("models")
scenes = _section("scenes")
generation = _section("generation")
scoring = _section("scoring")
paths = _section("paths")
report = _section("report")
orchestration = _section("orchestration")
training = _section("training")
ratings = _section("ratings")
sandbox = _section("sandbox")


def mifo_box(**changes: Any) -> config.MifoBoxConfig:
    return dataclasses.replace(params().generation.mifo_box, **changes)


def sandbox_layout(**changes: Any) -> config.SandboxLayout:
    return dataclasses.replace(params().sandbox.base_layout, **changes)


def config_with(**sections: Any) -> config.Config:
    """params.yaml's whole config with whole sections replaced."""
    return dataclasses.replace(params(), **sections)


# SD's 16x16 cross-attention layers (8x8 in the tiny profile) that BaS's attention loss reads,
# as the tests expect them; tests/training/test_recipes.py checks that params.yaml's
# methods.bas.attention_terms.attention.layers names them.
BAS_ATTENTION_LAYERS: tuple[str, ...] = (
    "down_blocks.2.attentions.0", "down_blocks.2.attentions.1",
    "up_blocks.1.attentions.0", "up_blocks.1.attentions.1", "up_blocks.1.attentions.2",
)
