"""`params.yaml`, read into one typed, frozen config object.

Every number and switch of the protocol lives in params.yaml (see docs/PROTOCOL_MAP.md for
where each PROTOCOL.md number is set). This module turns that file into nested frozen
dataclasses and refuses anything it does not understand: an unknown key, a value of the
wrong type or out of range is a `ConfigError` naming the dotted key and the bad value.

Sections are plain dataclasses; each module that owns a section declares its dataclass
here so that one place describes the whole file. Validation beyond types lives in each
dataclass's `__post_init__` via `_check`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from bas.errors import ConfigError

PROFILES = ("sd21", "tiny", "sandbox")


def _check(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"params: {key} = {value!r}: {why}")


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class ModelSources:
    """Where the `sd21` profile finds its weights: hub ids, or local directories."""

    diffusion: str = "stabilityai/stable-diffusion-2-1-base"
    clip_model: str = "ViT-L-14"
    clip_pretrained: str = "openai"
    dino: str = "vit_base_patch16_224.dino"
    maskformer: str = "facebook/maskformer-swin-large-coco"


@dataclass(frozen=True)
class ModelsConfig:
    profile: Literal["sd21", "tiny", "sandbox"] = "tiny"
    sd21: ModelSources = field(default_factory=ModelSources)
    # Where generated models (tiny) are cached; relative paths are under the project root.
    cache_dir: str = ".cache/bas/models"
    tiny_seed: int = 0
    # Mixed precision on GPU: autocast dtype with fp32 master weights. CPU always runs fp32.
    gpu_dtype: Literal["bf16", "fp16"] = "bf16"


@dataclass(frozen=True)
class ScenesConfig:
    """PROTOCOL.md section 1 (BaS appendix B.2)."""

    coco_root: str = "../shared/coco-sample"
    split: str = "train2017"
    min_area_fraction: float = 0.15
    excluded_classes: tuple[str, ...] = ("orange", "banana", "broccoli", "carrot", "zebra", "giraffe")
    # A class counts only if exactly one of its instances passes the area bar (DECIDE, sec. 1).
    distinct: Literal["exactly_one_large"] = "exactly_one_large"
    max_concepts: int = 4
    # Which concepts to keep when more than max_concepts qualify (DECIDE, sec. 1).
    keep_when_too_many: Literal["largest"] = "largest"
    num_scenes: int = 50
    selection_seed: int = 0
    resolution: int = 512

    def __post_init__(self) -> None:
        _check(0.0 < self.min_area_fraction < 1.0, "scenes.min_area_fraction", self.min_area_fraction,
               "must be in (0, 1)")
        _check(self.max_concepts >= 2, "scenes.max_concepts", self.max_concepts, "a scene needs >= 2 concepts")
        _check(self.num_scenes >= 1, "scenes.num_scenes", self.num_scenes, "must be >= 1")
        _check(self.resolution >= 8, "scenes.resolution", self.resolution, "must be >= 8")


@dataclass(frozen=True)
class PathsConfig:
    """Every output location, named once. Relative paths are under the storage root."""

    storage_root: str = "data"
    scenes: str = "scenes"
    runs: str = "runs"
    reports: str = "../reports"


@dataclass(frozen=True)
class ReportConfig:
    """The comparison report (`bas report`, bas/report)."""

    # Bootstrap of method means: images are resampled with replacement, seeded.
    bootstrap_samples: int = 1000
    confidence: float = 0.95
    bootstrap_seed: int = 0
    # Tukey HSD pairs with p below alpha are marked significant.
    alpha: float = 0.05
    # Metrics (columns of bas.scoring.schema.METRICS) tested with Kruskal-Wallis + Tukey HSD.
    test_metrics: tuple[str, ...] = ("identity_similarity", "prompt_similarity")
    # Scenes of the picture grid (BaS fig. 9); empty = the first picture_scene_count scene ids.
    picture_scenes: tuple[str, ...] = ()
    picture_scene_count: int = 2
    # The one prompt shown per scene: this template, all concepts, this seed index.
    picture_template_id: int = 0
    picture_seed_index: int = 0
    # BaS fig. 5 draws its ablations apart from the competitors; they join the front only if true.
    pareto_include_ablations: bool = False

    def __post_init__(self) -> None:
        _check(self.bootstrap_samples >= 10, "report.bootstrap_samples", self.bootstrap_samples,
               "must be >= 10")
        _check(0.0 < self.confidence < 1.0, "report.confidence", self.confidence, "must be in (0, 1)")
        _check(0.0 < self.alpha < 1.0, "report.alpha", self.alpha, "must be in (0, 1)")
        _check(self.picture_scene_count >= 0, "report.picture_scene_count", self.picture_scene_count,
               "must be >= 0")
        _check(self.picture_template_id >= 0, "report.picture_template_id", self.picture_template_id,
               "must be >= 0")
        _check(self.picture_seed_index >= 0, "report.picture_seed_index", self.picture_seed_index,
               "must be >= 0")
        from bas.scoring.schema import METRICS

        for i, name in enumerate(self.test_metrics):
            _check(name in METRICS, f"report.test_metrics[{i}]", name,
                   f"not a metric (known: {', '.join(METRICS)})")


# --------------------------------------------------------------------------- top level


@dataclass(frozen=True)
class Config:
    seed: int = 0
    models: ModelsConfig = field(default_factory=ModelsConfig)
    scenes: ScenesConfig = field(default_factory=ScenesConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


# --------------------------------------------------------------------------- generic build


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
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp) if f.init}
        unknown = sorted(set(value) - names)
        if unknown:
            where = f"{key}." if key else ""
            raise ConfigError(f"params: unknown key {where}{unknown[0]} (known: {', '.join(sorted(names))})")
        kwargs = {name: build(hints[name], value[name], f"{key}.{name}" if key else name)
                  for name in value}
        try:
            return tp(**kwargs)
        except TypeError as err:  # a required field is missing
            raise ConfigError(f"params: {key or '<root>'}: {err}") from None
    if origin is Literal:
        _check(value in args, key, value, f"must be one of {', '.join(map(repr, args))}")
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
                errors.append(str(err))
        raise ConfigError(errors[-1] if errors else f"params: {key} = {value!r}: not allowed")
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


def parse(data: dict[str, Any]) -> Config:
    return build(Config, data, "")


def load(path: str | Path = "params.yaml", overrides: Optional[dict[str, Any]] = None) -> Config:
    """Read params.yaml; `overrides` maps dotted keys to values (as `dvc exp run -S` does)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"params file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"params file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"params file {path}: expected a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return parse(data)
