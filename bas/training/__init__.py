"""Training: one engine for every method; methods are recipes in params.yaml (`methods:`).

Public API:
- `train_scene(cfg, method, scene, run_dir=None, parts=None) -> TrainResult` (bas.training.engine)
- `get_recipe(cfg, method)`, `method_kind`, `UNAVAILABLE` (bas.training.methods)
- loss terms: `bas.training.losses` (pure), `bas.training.terms` (named attention terms);
  attention capture: `bas.attention` (shared with generation)
"""

from bas.training.engine import TrainResult, Trainer, is_complete, read_train_json, run_key, train_scene
from bas.training.methods import UNAVAILABLE, MethodNotAvailable, get_recipe, method_kind

__all__ = ["UNAVAILABLE", "MethodNotAvailable", "method_kind", "TrainResult", "Trainer", "get_recipe",
           "is_complete", "read_train_json", "run_key", "train_scene"]
