"""Loading params.yaml: the file, its profile overlay, `-S` overrides -> one `Config`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import yaml

from bas.config.builder import build
from bas.config.names import check_names, did_you_mean
from bas.config.recipes import resolve_includes, scale_recipe
from bas.config.sections import PROFILES, Config
from bas.errors import ConfigError


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_profile(data: dict[str, Any], overrides: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """params.yaml's `profiles.<profile>` overlay for the selected model profile, under the overrides.

    A model profile can need its own data and amounts (the sandbox world works at 64 px, on
    its own scenes): `profiles:` holds those differences per profile, so the protocol's
    numbers stay as they are for the real models. Precedence: `-S` overrides, then the
    profile's overlay, then the rest of params.yaml.
    """
    data = dict(data)
    profiles = data.pop("profiles", None) or {}
    if not isinstance(profiles, dict):
        raise ConfigError(f"params: profiles = {profiles!r}: must map a profile name to params")
    unknown = sorted(set(profiles) - set(PROFILES))
    if unknown:
        raise ConfigError(f"params: profiles.{unknown[0]}: not a model profile (known: {', '.join(PROFILES)})"
                          f"{did_you_mean(unknown[0], PROFILES)}")
    profile = (overrides or {}).get("models.profile", (data.get("models") or {}).get("profile", "tiny"))
    overlay = profiles.get(profile) or {}
    if not isinstance(overlay, dict):
        raise ConfigError(f"params: profiles.{profile} = {overlay!r}: must be a mapping")
    data = _deep_merge(data, overlay)
    for dotted, value in (overrides or {}).items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = child = dict(child) if isinstance(child, dict) else {}
            node = child
        node[parts[-1]] = value
    return data


def parse(data: dict[str, Any]) -> Config:
    if isinstance(data, dict) and "profiles" in data:
        data = apply_profile(data)
    if isinstance(data, dict) and "methods" in data:
        data = {**data, "methods": resolve_includes(data["methods"])}
    cfg = build(Config, data, "")
    scales = (cfg.training.step_scale, cfg.training.lr_scale)
    if scales != (1.0, 1.0):
        cfg = dataclasses.replace(cfg, methods={name: scale_recipe(recipe, *scales)
                                                for name, recipe in cfg.methods.items()})
    return cfg


def load(path: str | Path = "params.yaml", overrides: Optional[dict[str, Any]] = None) -> Config:
    """Read params.yaml; `overrides` maps dotted keys to values (as `dvc exp run -S` does).

    Besides `parse`'s checks, every name that refers to another section (a method of
    `orchestration.methods`, a template id) is checked here (`bas.config.names.check_names`):
    a bad one is refused before any work starts.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"params file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"params file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"params file {path}: expected a mapping at the top level")
    cfg = parse(apply_profile(data, overrides))
    check_names(cfg)
    return cfg
