"""Read a results directory into tables the report works on.

A results directory is a storage root holding `runs/<method>/<scene_id>/` (and usually
`scenes/`, and `scores/<method>/<scene_id>.parquet` where the pipeline scored), or the runs
directory itself (scores then in each run's `scores.parquet`, as `bas score --run` writes).
Every complete run (one with scores) is read and checked against `bas.schema`; runs without it are listed as incomplete
and left out, so a report can be made while other methods are still running.

The scores file has one row per (image, concept in its prompt). Statistics are computed on
per-image scores: the rows of one image are averaged (NaN-skipping, so an image's identity
similarity is the mean over its detected concepts), which makes every image weigh the same
whatever its number of concepts, and makes the samples of the tests independent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import pandas as pd

from bas.errors import DataError
from bas.paths import MANIFEST_FILE, SCORES_FILE
from bas.schema import MANIFEST_COLUMNS, METRICS, SCORE_COLUMNS, validate

log = logging.getLogger(__name__)

IMAGE_KEY = ("method", "scene_id", "path")  # `path` is relative to the run dir
# Columns constant over the rows of one image, kept on the per-image table.
IMAGE_COLUMNS = ("kind", "template_id", "template", "subset", "subset_size", "seed_index", "seed",
                 "prompt", "prompt_classes", "sampler", "profile")


@dataclass(frozen=True)
class MethodKinds:
    """What each method of the results is to the comparison (`bas.kinds`), as its scores record
    it: `ablation`s are drawn apart and kept off the front, `reference`s (the sandbox's ground
    truth) are a ceiling and a floor, off the front and out of the tests; every other kind is
    compared. A method the results do not hold (e.g. one of a published table) is compared."""

    kinds: Mapping[str, str]

    @classmethod
    def of(cls, frame: pd.DataFrame) -> "MethodKinds":
        """The kinds of a table with `method` and `kind` columns (per-image rows or a summary)."""
        pairs = frame[["method", "kind"]].drop_duplicates()
        repeated = pairs[pairs["method"].duplicated(keep=False)]
        if len(repeated):
            method = repeated["method"].iloc[0]
            raise DataError(f"method {method!r} is recorded with several kinds "
                            f"({', '.join(sorted(repeated.loc[repeated['method'] == method, 'kind']))}): "
                            "score its runs again")
        return cls(dict(zip(pairs["method"], pairs["kind"])))

    def is_ablation(self, method: str) -> bool:
        return self.kinds.get(method) == "ablation"

    def is_reference(self, method: str) -> bool:
        return self.kinds.get(method) == "reference"

    def is_competitor(self, method: str) -> bool:
        return not (self.is_ablation(method) or self.is_reference(method))

    def label(self, method: str) -> str:
        """'' for a compared method, else 'ablation' or 'reference' (its label and row style)."""
        return self.kinds[method] if not self.is_competitor(method) else ""

    def order(self, methods) -> list[str]:
        """Competitors first (alphabetically), then the ablations, then the references."""
        unique = sorted(set(methods))
        return ([m for m in unique if self.is_competitor(m)] + [m for m in unique if self.is_ablation(m)]
                + [m for m in unique if self.is_reference(m)])


@dataclass
class Results:
    """Everything the report reads from one results directory."""

    runs_dir: Path
    scenes_dir: Path
    rows: pd.DataFrame  # scores.parquet rows of every complete run, schema-checked
    images: pd.DataFrame  # one row per image: IMAGE_KEY + IMAGE_COLUMNS + per-image metric means
    manifests: pd.DataFrame  # manifest.parquet rows (images generated, scored or not)
    incomplete: list[str] = field(default_factory=list)  # "method/scene" dirs without scores.parquet

    @property
    def kinds(self) -> MethodKinds:
        return MethodKinds.of(self.images)

    @property
    def methods(self) -> list[str]:
        return self.kinds.order(self.images["method"])

    @property
    def profiles(self) -> list[str]:
        return sorted(self.rows["profile"].unique())

    def run_dir(self, method: str, scene_id: str) -> Path:
        return self.runs_dir / method / scene_id


def locate(results_dir: str | Path) -> tuple[Path, Path, Path]:
    """(runs dir, default scenes dir, pipeline scores dir) of a storage root or of a runs dir."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise DataError(f"results directory not found: {results_dir}")
    if (results_dir / "runs").is_dir():
        return results_dir / "runs", results_dir / "scenes", results_dir / "scores"
    return results_dir, results_dir.parent / "scenes", results_dir.parent / "scores"


def scores_file(run: Path, scores_dir: Path) -> Path:
    """The scores of one run: the pipeline's `scores/<method>/<scene>.parquet`, else the run's own."""
    pipeline_file = scores_dir / run.parent.name / f"{run.name}.parquet"
    return pipeline_file if pipeline_file.exists() else run / SCORES_FILE


def per_image(rows: pd.DataFrame) -> pd.DataFrame:
    """Average the per-(image, concept) rows of each image; NaNs are skipped."""
    metric_names = list(METRICS)
    values = rows[list(IMAGE_KEY) + metric_names].copy()
    values["detected"] = values["detected"].astype("float64")
    means = values.groupby(list(IMAGE_KEY), sort=True)[metric_names].mean()
    constants = rows.groupby(list(IMAGE_KEY), sort=True)[list(IMAGE_COLUMNS)].first()
    out = constants.join(means).reset_index()
    out["n_concepts_scored"] = rows.groupby(list(IMAGE_KEY), sort=True).size().to_numpy()
    return out


def load_results(results_dir: str | Path, scenes_dir: str | Path | None = None) -> Results:
    runs_dir, default_scenes, scores_dir = locate(results_dir)
    scenes = Path(scenes_dir) if scenes_dir is not None else default_scenes
    frames, manifests, incomplete = [], [], []
    for method_path in sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for run in sorted(p for p in method_path.iterdir() if p.is_dir() and not p.name.startswith(".")):
            manifest_file = run / MANIFEST_FILE
            if manifest_file.exists():
                manifests.append(_read(manifest_file, MANIFEST_COLUMNS))
            scores_path = scores_file(run, scores_dir)
            if not scores_path.exists():
                incomplete.append(f"{method_path.name}/{run.name}")
                continue
            frame = _read(scores_path, SCORE_COLUMNS)
            wrong = set(frame["method"]) - {method_path.name} or set(frame["scene_id"]) - {run.name}
            if wrong:
                raise DataError(f"{scores_path}: rows of {sorted(wrong)} in the run dir of "
                                f"{method_path.name}/{run.name}")
            frames.append(frame)
    if not frames:
        raise DataError(f"{runs_dir}: no scores.parquet under <method>/<scene_id>/ "
                        "(has `bas score` run?)")
    if incomplete:
        log.warning("left out %d run(s) without scores.parquet: %s", len(incomplete), ", ".join(incomplete))
    rows = pd.concat(frames, ignore_index=True)
    manifest = (pd.concat(manifests, ignore_index=True) if manifests
                else rows[[c.name for c in MANIFEST_COLUMNS]].drop_duplicates(list(IMAGE_KEY)))
    return Results(runs_dir=runs_dir, scenes_dir=scenes, rows=rows, images=per_image(rows),
                   manifests=manifest, incomplete=incomplete)


def _read(path: Path, columns) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for a broken file
        raise DataError(f"{path}: not a readable Parquet file: {err}") from None
    return validate(frame, columns, source=str(path))
