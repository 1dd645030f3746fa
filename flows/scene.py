"""The per-(method, scene) flows: the unit of work a GPU worker runs.

They take the caller's resolved config as a plain mapping (a deployment's parameters must
be JSON), so a worker runs exactly the parent run's params, whatever its own checkout says.
"""

from __future__ import annotations

from prefect import flow

from bas.config import parse
from tasks import stages
from tasks.stages import configured


@flow(name="train-generate-scene", flow_run_name="train-generate {method}/{scene_id}")
def train_generate_scene(config: dict, method: str, scene_id: str) -> dict:
    """Train one method on one scene and make its image grid, on one GPU (one task: the
    fine-tuned weights stay in this process)."""
    cfg = parse(config)
    return configured(stages.train_generate, cfg)(cfg, method, scene_id)


@flow(name="score-scene", flow_run_name="score {method}/{scene_id}")
def score_scene(config: dict, method: str, scene_id: str) -> dict:
    """Score one (method, scene) grid."""
    cfg = parse(config)
    return configured(stages.score, cfg)(cfg, method, scene_id)


SCENE_FLOWS = {"train_generate": train_generate_scene, "score": score_scene}
