"""Recipe includes and scaling: raw `methods:` recipes -> the recipes a run uses.

`resolve_includes` expands `include: <method>` before the recipes are built;
`scale_recipe` rescales a built recipe's steps and learning rates (`training.step_scale`,
`training.lr_scale`: the sandbox profile's schedule).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from bas.config.builder import _check
from bas.config.names import did_you_mean
from bas.config.recipe_schema import MethodRecipe


def merge_mappings(base: Any, child: Any) -> Any:
    """`child` over `base`: mappings merge key by key (recursively), any other value replaces."""
    if isinstance(base, dict) and isinstance(child, dict):
        out = dict(base)
        for k, v in child.items():
            out[k] = merge_mappings(base[k], v) if k in base else v
        return out
    return child


def resolve_includes(methods: Any, key: str = "methods") -> dict[str, Any]:
    """Expand `include: <method>` in each raw recipe: the parent's mapping, then the child's keys.

    Mappings merge key by key (recursively); any other value replaces the parent's. Chains
    are allowed, cycles and unknown parents are errors naming the key.
    """
    if methods is None:
        return {}
    _check(isinstance(methods, dict), key, methods, "expected a mapping of method name -> recipe")
    resolved: dict[str, Any] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> dict[str, Any]:
        if name in resolved:
            return resolved[name]
        raw = methods[name]
        _check(isinstance(raw, dict), f"{key}.{name}", raw, "expected a mapping")
        parent = raw.get("include")
        body = {k: v for k, v in raw.items() if k != "include"}
        if parent is not None:
            _check(isinstance(parent, str) and parent in methods, f"{key}.{name}.include", parent,
                   f"no such method (known: {', '.join(sorted(methods))}){did_you_mean(parent, methods)}")
            _check(parent not in chain, f"{key}.{name}.include", parent,
                   f"include cycle {' -> '.join(chain + (name, parent))}")
            body = merge_mappings(resolve(parent, chain + (name,)), body)
        resolved[name] = body
        return body

    for name in methods:
        resolve(name, ())
    return resolved



def _scaled_steps(steps: Optional[int], scale: float) -> Optional[int]:
    return steps if steps is None or steps == 0 else max(1, round(steps * scale))


def scale_recipe(recipe: MethodRecipe, step_scale: float, lr_scale: float) -> MethodRecipe:
    """`recipe` with every phase's steps and warm-up, term windows and learning rates rescaled."""
    phases = {name: dataclasses.replace(
        phase, steps=_scaled_steps(phase.steps, step_scale), lr=phase.lr * lr_scale,
        warmup_steps=min(_scaled_steps(phase.warmup_steps, step_scale), _scaled_steps(phase.steps, step_scale)))
        for name, phase in recipe.phases.items()}
    terms = {name: dataclasses.replace(term, from_step=_scaled_steps(term.from_step, step_scale),
                                       until_step=_scaled_steps(term.until_step, step_scale))
             for name, term in recipe.attention_terms.items()}
    return dataclasses.replace(recipe, phases=phases, attention_terms=terms)
