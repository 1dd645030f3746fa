"""The method registry: a method's name -> its recipe from params.yaml (`methods:`).

Every runnable method is a recipe in params.yaml, run by the one engine. A method that
cannot run here has an entry in `UNAVAILABLE` saying why, so asking for it gives that
reason instead of "unknown method".
"""

from __future__ import annotations

from bas.config import Config, MethodRecipe
from bas.errors import BasError
from bas.kinds import REFERENCES

UNAVAILABLE = {
    "elite": (
        "ELITE (Wei et al. 2023) maps an image to word embeddings with encoders trained on "
        "Stable Diffusion 1.4; BaS ran the authors' code with their released encoder weights. "
        "Those weights are not part of this project and ELITE cannot be trained here from one "
        "image, so `elite` does not run (its published user-study scores are in the report)."
    ),
}


class MethodNotAvailable(BasError):
    """A method with a registry entry that cannot run here (the message says why)."""


def names(cfg: Config) -> list[str]:
    """Every runnable method in params.yaml, in file order."""
    return list(cfg.methods)


def get_recipe(cfg: Config, method: str) -> MethodRecipe:
    if method in cfg.methods:
        return cfg.methods[method]
    if method in UNAVAILABLE:
        raise MethodNotAvailable(f"method {method!r} cannot run: {UNAVAILABLE[method]}")
    known = ", ".join(list(cfg.methods) + sorted(UNAVAILABLE))
    raise BasError(f"unknown method {method!r} (params.yaml `methods:` has: {known})")


def method_kind(cfg: Config, method: str) -> str:
    """The kind of `method` (bas.kinds): its recipe's `kind`, or `reference` for a sandbox reference."""
    return "reference" if method in REFERENCES else get_recipe(cfg, method).kind
