"""`bas generate` then `bas score` on an (untrained) tiny run of a real COCO scene."""

import pandas as pd

from bas.cli import main
from bas.schema import MANIFEST_COLUMNS, SCORE_COLUMNS, validate


def test_generate_then_score_a_run(coco_scene_writer, tiny_models_cfg, tmp_path, make_untrained_run, capsys):
    data = tmp_path / "data"
    scene_id = coco_scene_writer(394, data / "scenes")        # dog + frisbee
    run = data / "runs" / "bas" / scene_id
    make_untrained_run(run, "bas", scene_id, ["dog", "frisbee"])
    common = ["-S", f"models.cache_dir={tiny_models_cfg.cache_dir}", "-S", f"paths.storage_root={data}",
              "-S", "generation.steps=2"]

    assert main(common + ["generate", "--count"]) == 0
    out = capsys.readouterr().out
    assert f"{scene_id}: 2 concepts -> 30 images" in out and "total: 30 images" in out

    assert main(common + ["generate", "--method", "bas", "--scene", scene_id, "--no-progress"]) == 0
    manifest = validate(pd.read_parquet(run / "manifest.parquet"), MANIFEST_COLUMNS, "manifest")
    assert len(manifest) == 30 and all((run / p).exists() for p in manifest["path"])
    assert set(manifest["subset"]) == {"0", "1", "0+1"} and manifest["template_id"].nunique() == 10

    assert main(common + ["score", "--run", str(run), "--no-progress"]) == 0
    scores = validate(pd.read_parquet(run / "scores.parquet"), SCORE_COLUMNS, "scores")
    assert len(scores) == 10 * (1 + 1 + 2)                                      # one row per (image, concept)
    assert set(scores["path"]) == set(manifest["path"])
    assert scores["prompt_similarity"].notna().all()
    assert set(scores["kind"]) == {"method"}                                    # bas's recipe: kind method

    # Missing scene or training: one clear error line, exit status 2.
    assert main(common + ["generate", "--method", "bas", "--scene", "nope"]) == 2
    assert "train.json is missing" in capsys.readouterr().err
