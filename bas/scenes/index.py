"""`<scenes>/index.parquet`: one row per concept of every scene of the current selection.

The index is the truth about which scenes exist: staging replaces its COCO rows with the
new selection and keeps the user's scenes; `bas scene add` replaces the rows of one scene.
A scene directory that is not in the index is not a scene of this selection (staging keeps
the directories it drops, so earlier runs that used them stay explainable).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import pandas as pd

from bas.errors import DataError
from bas.io import atomic_write_parquet

if TYPE_CHECKING:   # for annotations only: bas.scenes.scene reads the index
    from bas.scenes.scene import Scene

# name -> pandas dtype. `source_kind` ("coco" / "user") is what staging uses to tell its own
# rows from the user's; image_id and category_id are null for a user's scene.
INDEX_COLUMNS: dict[str, str] = {
    "scene_id": "string",
    "source_kind": "string",
    "image_id": "Int64",
    "file_name": "string",
    "concept_index": "int64",
    "class_name": "string",
    "category_id": "Int64",
    "coverage": "float64",
    "num_concepts": "int64",
    "content_hash": "string",
}


def scene_rows(scene: Scene) -> list[dict]:
    source = scene.source
    kind = source.get("kind")
    if kind == "coco":
        image_id, file_name = source["image_id"], source["file_name"]
    else:
        image_id, file_name = None, Path(source.get("image", "")).name
    return [
        {"scene_id": scene.scene_id, "source_kind": kind, "image_id": image_id, "file_name": file_name,
         "concept_index": i, "class_name": name, "category_id": category,
         "coverage": round(coverage, 6), "num_concepts": scene.num_concepts,
         "content_hash": scene.content_hash}
        for i, (name, category, coverage) in enumerate(zip(scene.class_names, scene.category_ids,
                                                             scene.coverages))
    ]


def frame(rows: Iterable[dict]) -> pd.DataFrame:
    """An index frame with the declared columns and dtypes, sorted by scene and concept."""
    data = pd.DataFrame(list(rows), columns=list(INDEX_COLUMNS))
    data = data.astype(INDEX_COLUMNS)
    return data.sort_values(["scene_id", "concept_index"], kind="stable").reset_index(drop=True)


def empty() -> pd.DataFrame:
    return frame([])


def read_index(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    try:
        data = pd.read_parquet(path)
    except FileNotFoundError:
        raise DataError(f"scene index not found: {path} (run `bas stage` or `bas scene add`)") from None
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise DataError(f"scene index {path} is not a readable Parquet file: {err}") from None
    missing = [c for c in INDEX_COLUMNS if c not in data.columns]
    if missing:
        raise DataError(f"scene index {path}: missing column(s) {', '.join(missing)}")
    return frame(data[list(INDEX_COLUMNS)].to_dict("records"))


def read_or_empty(path: str | Path) -> pd.DataFrame:
    return read_index(path) if Path(path).exists() else empty()


def write_index(path: str | Path, data: pd.DataFrame) -> bool:
    """Write the index atomically unless the file already holds the same rows; True if written."""
    path = Path(path)
    data = frame(data.to_dict("records"))
    if path.exists():
        try:
            if read_index(path).equals(data):
                return False
        except DataError:
            pass  # a damaged index is replaced
    atomic_write_parquet(path, data)
    return True


def replace_rows(existing: pd.DataFrame, scenes: Iterable[Scene], drop_kind: str | None = None) -> pd.DataFrame:
    """`existing` without the rows of `scenes` (and of every `drop_kind` scene), plus `scenes`' rows."""
    scenes = list(scenes)
    ids = {s.scene_id for s in scenes}
    keep = ~existing["scene_id"].isin(ids)
    if drop_kind is not None:
        keep &= existing["source_kind"] != drop_kind
    rows = existing[keep].to_dict("records")
    for scene in scenes:
        rows += scene_rows(scene)
    return frame(rows)
