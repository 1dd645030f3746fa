"""The method registry: a method's name -> its recipe from params.yaml (`methods:`).

Every runnable method is a recipe in params.yaml, run by the one engine. A method that
cannot run here has an entry in `UNAVAILABLE` (bas.kinds) saying why, so asking for it gives that
reason instead of "unknown method".
"""

from __future__ import annotations

from bas.config import Config, MethodRecipe
from bas.config.names import did_you_mean
from bas.errors import BasError
from bas.kinds import REFERENCES, UNAVAILABLE   # UNAVAILABLE: the methods with a reason, not a recipe


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
    known = list(cfg.methods) + sorted(UNAVAILABLE)
    raise BasError(f"unknown method {method!r} (params.yaml `methods:` has: {', '.join(known)})"
                   f"{did_you_mean(method, known + list(REFERENCES))}")


def method_kind(cfg: Config, method: str) -> str:
    """The kind of `method` (bas.kinds): its recipe's `kind`, or `reference` for a sandbox reference."""
    return "reference" if method in REFERENCES else get_recipe(cfg, method).kind


def uses_prior(recipe: MethodRecipe) -> bool:
    """Whether a recipe trains with class images (prior preservation weighted in a phase that runs)."""
    return recipe.prior_preservation and any(
        phase.loss_weights.prior > 0 for phase in recipe.phases.values() if phase.steps > 0)


def trains_weights(recipe: MethodRecipe) -> bool:
    """Whether a recipe trains anything besides the token rows (so it has weights to keep)."""
    return any(set(phase.trainable) - {"tokens"} for phase in recipe.phases.values() if phase.steps > 0)
