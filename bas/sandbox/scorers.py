"""The sandbox's scorers, one training entry point: `train_and_save(cfg, stage, work_dir, out_dir)`.

CLIP and DINO live in `bas.sandbox.embedders`, the segmenter and the judge in
`bas.sandbox.classifiers`; each stage's trainer has the signature
`(cfg, work_dir, out_dir) -> training record`.
"""

from __future__ import annotations

from pathlib import Path

from bas.config import Config

STAGES = ("clip", "dino", "segmenter", "judge")


def train_and_save(cfg: Config, stage: str, work_dir: Path, out_dir: Path) -> dict:
    """Train scorer `stage` (resumable from `work_dir`) and write it into `out_dir`; its record."""
    # Each stage imports only its trainer's module (embedders: CLIP, DINO; classifiers: segmenter, judge).
    if stage == "clip":
        from bas.sandbox.embedders import train_clip as trainer
    elif stage == "dino":
        from bas.sandbox.embedders import train_dino as trainer
    elif stage == "segmenter":
        from bas.sandbox.classifiers import train_segmenter as trainer
    elif stage == "judge":
        from bas.sandbox.classifiers import train_judge as trainer
    else:
        raise ValueError(f"unknown sandbox scorer stage {stage!r} (stages: {', '.join(STAGES)})")
    return trainer(cfg, Path(work_dir), Path(out_dir))


def __getattr__(name: str):
    # `Judge` lives with the segmenter (bas.sandbox.classifiers); imported on first use so that
    # CLIP and DINO do not need that module.
    if name == "Judge":
        from bas.sandbox.classifiers import Judge

        return Judge
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
