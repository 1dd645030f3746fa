"""`params.yaml`, read into one typed, frozen config object.

Every number and switch of the protocol lives in params.yaml (see docs/PROTOCOL_MAP.md for
where each PROTOCOL.md number is set). This package turns that file into nested frozen
dataclasses and refuses anything it does not understand: an unknown key, a value of the
wrong type or out of range is a `ConfigError` naming the dotted key and the bad value.

One module a job:
- `sections`: each section's frozen dataclass, and `Config`, the whole file;
- `recipe_schema`: the `methods:` section, a method's recipe;
- `builder`: the generic typed builder (`build`, `to_dict`, `_check`, `_check_field`);
- `recipes`: recipe includes (`resolve_includes`) and step/lr scaling (`scale_recipe`);
- `loading`: `load`, `parse`, the profile overlays (`apply_profile`).

Every public name is importable from `bas.config` itself, as callers do.
"""

from bas.config.builder import _check, _check_field, _FieldError, build, to_dict
from bas.config.loading import apply_profile, load, parse
from bas.config.recipe_schema import (
    RESERVED_TERMS,
    TRAINABLE,
    AttentionTermRecipe,
    DataRecipe,
    DiffusionLossRecipe,
    LossWeights,
    MethodRecipe,
    PhaseRecipe,
)
from bas.config.recipes import resolve_includes, scale_recipe
from bas.config.sections import (
    PROFILES,
    SAMPLER_SETTINGS,
    SAMPLERS,
    CocoFetchConfig,
    Config,
    GenerationConfig,
    MifoBoxConfig,
    ModelsConfig,
    ModelSources,
    OrchestrationConfig,
    PathsConfig,
    PriorImagesConfig,
    RatingsConfig,
    ReportConfig,
    SandboxConfig,
    SandboxLayout,
    SandboxStage,
    ScenesConfig,
    ScoringConfig,
    SlurmConfig,
    TrainingConfig,
)
from bas.errors import ConfigError

__all__ = [
    "AttentionTermRecipe", "CocoFetchConfig", "Config", "ConfigError",
    "DataRecipe", "DiffusionLossRecipe", "GenerationConfig", "LossWeights", "MethodRecipe",
    "MifoBoxConfig", "ModelSources", "ModelsConfig", "OrchestrationConfig", "PROFILES", "PathsConfig",
    "PhaseRecipe", "PriorImagesConfig", "RESERVED_TERMS", "RatingsConfig", "ReportConfig", "SAMPLERS",
    "SAMPLER_SETTINGS", "SandboxConfig", "SandboxLayout", "SandboxStage", "ScenesConfig", "ScoringConfig", "SlurmConfig",
    "TRAINABLE", "TrainingConfig", "_FieldError", "_check", "_check_field", "apply_profile", "build", "load",
    "parse", "resolve_includes", "scale_recipe", "to_dict",
]
