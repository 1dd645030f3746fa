"""Training: one engine for every method; methods are recipes in params.yaml (`methods:`).

Public API:
- `train_scene(cfg, method, scene, run_dir=None, parts=None) -> TrainResult` (bas.training.engine)
- `get_recipe(cfg, method)`, `method_kind`, `UNAVAILABLE` (bas.training.methods)
- loss terms: `bas.training.losses` (pure), `bas.training.terms` (named attention terms);
  attention capture: `bas.attention` (shared with generation)
"""

from bas.training.methods import UNAVAILABLE, MethodNotAvailable, get_recipe, method_kind

_ENGINE = ("TrainResult", "Trainer", "is_complete", "read_train_json", "run_key", "train_scene")


def __getattr__(name: str):
    # The engine (torch, diffusers) loads on first use: `bas stage`, `bas recipes`, `bas.done`
    # and the flows read recipes through this package without it.
    if name in _ENGINE:
        from bas.training import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'bas.training' has no attribute {name!r}")

__all__ = ["UNAVAILABLE", "MethodNotAvailable", "method_kind", "TrainResult", "Trainer", "get_recipe",
           "is_complete", "read_train_json", "run_key", "train_scene"]
