"""The generic typed builder: params data -> a dataclass, checked against its type hints.

`build(tp, value, key)` builds `value` as type `tp` (dataclasses, Literal, Optional/Union,
lists, tuples, dicts, bool/int/float/str), raising a `ConfigError` naming the dotted key and
the bad value at the first mismatch. `_check` is the check a section's `__post_init__` makes
under its own dotted key; `_check_field` the one of a dataclass used under many keys (method
recipes), whose key `build` adds.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

from bas.config.names import did_you_mean, unknown_key
from bas.errors import ConfigError


def _check(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"params: {key} = {value!r}: {why}")


class _FieldError(ConfigError):
    """A bad field of a dataclass that does not know its dotted key; `build` adds it."""

    def __init__(self, name: str, value: Any, why: str) -> None:
        super().__init__(name, value, why)
        self.name, self.value, self.why = name, value, why


def _check_field(ok: bool, name: str, value: Any, why: str) -> None:
    """`_check` for dataclasses used under many keys (method recipes): the key is added by `build`."""
    if not ok:
        raise _FieldError(name, value, why)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def build(tp: Any, value: Any, key: str) -> Any:
    """Build `value` as type `tp`, raising ConfigError at the first mismatch under `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        _check(isinstance(value, dict), key or "<root>", value, f"expected a mapping for {tp.__name__}")
        if hasattr(tp, "gather_options"):   # a dataclass whose kind brings its own keys
            value = tp.gather_options(value, key)
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp) if f.init}
        unknown = sorted(set(value) - names)
        if unknown:
            where = f"{key}." if key else ""
            raise ConfigError(unknown_key(where, unknown[0], names))
        missing = [f.name for f in dataclasses.fields(tp) if f.init and f.name not in value
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            where = f"{key}." if key else ""
            raise ConfigError(f"params: missing key {where}{missing[0]} (params.yaml must set it)")
        kwargs = {name: build(hints[name], value[name], f"{key}.{name}" if key else name)
                  for name in value}
        try:
            return tp(**kwargs)
        except _FieldError as err:  # a check that names its field only
            raise ConfigError(f"params: {key}.{err.name} = {err.value!r}: {err.why}") from None
        except TypeError as err:  # a check that met a value it could not compare
            raise ConfigError(f"params: {key or '<root>'}: {err}") from None
    if origin is Literal:
        _check(value in args, key, value, f"must be one of {', '.join(map(repr, args))}{did_you_mean(value, args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return build(arg, value, key)
            except ConfigError as err:
                # A name among a Literal's names says more than "expected an integer" (a near miss).
                named = typing.get_origin(arg) is Literal and any(type(a) is type(value) for a in typing.get_args(arg))
                errors.append((named, str(err)))
        if not errors:
            raise ConfigError(f"params: {key} = {value!r}: not allowed")
        raise ConfigError(next((e for named, e in errors if named), errors[-1][1]))
    if origin in (list, tuple):
        _check(isinstance(value, (list, tuple)), key, value, "expected a list")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            _check(len(value) == len(args), key, value, f"expected {len(args)} items")
            return tuple(build(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [build(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        _check(isinstance(value, dict), key, value, "expected a mapping")
        kt, vt = args if args else (Any, Any)
        return {build(kt, k, key): build(vt, v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        _check(isinstance(value, bool), key, value, "expected true or false")
        return value
    if tp is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key, value, "expected an integer")
        return value
    if tp is float:
        # YAML reads 5e-4 as a string (YAML 1.1); accept numeric strings for floats only.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), key, value, "expected a number")
        return float(value)
    if tp is str:
        _check(isinstance(value, str), key, value, "expected a string")
        return value
    raise ConfigError(f"params: {key}: unsupported type {_type_name(tp)}")


def to_dict(obj: Any) -> Any:
    """Plain YAML/JSON-able data from a config object (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
