"""Names in params that must name an entry of a registry, and the one-line refusal of a bad one.

A key whose value names something (a method of `orchestration.methods`, a sampler, a metric,
a model profile, an attention term's kind, one of a Literal's choices, a key of a section) is
refused when params load, before any work starts: one line naming the key, the bad name, the
known names and, for a near miss, "did you mean 'X'?" (difflib's closest match).

`unknown_name` words that line; `check_names` makes the checks that span sections, which a
single section's dataclass cannot make: `config.load` calls it on the whole config.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any, Iterable

from bas.errors import ConfigError
from bas.kinds import REFERENCES, UNAVAILABLE

if TYPE_CHECKING:
    from bas.config.sections import Config

# The sandbox profile renders these references (bas.kinds.REFERENCES); no other profile has them.
REFERENCE_PROFILE = "sandbox"


def did_you_mean(name: Any, known: Iterable[Any]) -> str:
    """" did you mean 'X'?" for the closest of `known` to `name` (difflib), else ""."""
    if not isinstance(name, str):
        return ""
    by_text = {str(k): k for k in known}
    match = difflib.get_close_matches(name, list(by_text), n=1)
    return f"; did you mean {by_text[match[0]]!r}?" if match else ""


def unknown_name(key: str, name: Any, what: str, known: Iterable[Any], extra: str = "",
                 near: Iterable[Any] = ()) -> str:
    """The one-line refusal of `name` at `key`: what it is not, the known names, a near miss
    among `known` and `near` (names valid elsewhere, said in `extra`).

    `params: generation.sampler = 'dim': not a sampler (known: ddim, mifo_box); did you mean 'ddim'?`
    """
    known = list(known)
    listed = ", ".join(str(k) for k in known)
    return f"params: {key} = {name!r}: {what} (known: {listed}{extra}){did_you_mean(name, known + list(near))}"


def unknown_key(where: str, name: str, known: Iterable[str]) -> str:
    """The refusal of a key a section does not have (`params: unknown key training.foo (known: ...)`)."""
    known = sorted(known)
    return f"params: unknown key {where}{name} (known: {', '.join(known)}){did_you_mean(name, known)}"


def check_method_names(cfg: "Config") -> None:
    """Each name of `orchestration.methods` is a recipe of `methods:`, or a reference on the sandbox profile."""
    profile = cfg.models.profile
    for i, name in enumerate(cfg.orchestration.methods):
        key = f"orchestration.methods[{i}]"
        if name in cfg.methods:
            continue
        if name in REFERENCES:
            if profile == REFERENCE_PROFILE:
                continue
            raise ConfigError(f"params: {key} = {name!r}: a ground-truth reference of the sandbox world, "
                              f"it needs models.profile: {REFERENCE_PROFILE} (not {profile!r})")
        if name in UNAVAILABLE:
            raise ConfigError(f"params: {key} = {name!r}: cannot run: {UNAVAILABLE[name]}")
        known = list(cfg.methods) + (list(REFERENCES) if profile == REFERENCE_PROFILE else [])
        extra = ("" if profile == REFERENCE_PROFILE
                 else f"; with models.profile: {REFERENCE_PROFILE} also {', '.join(REFERENCES)}")
        raise ConfigError(unknown_name(key, name, "not a method of params.yaml `methods:`", known, extra,
                                       near=REFERENCES))


def check_names(cfg: "Config") -> None:
    """The names that refer from one section to another: refused here, before any work starts."""
    check_method_names(cfg)
    templates = cfg.generation.templates
    if cfg.report.picture_template_id >= len(templates):
        raise ConfigError(f"params: report.picture_template_id = {cfg.report.picture_template_id}: no such "
                          f"template (generation.templates has ids 0-{len(templates) - 1})")
