"""The columns of `manifest.parquet` and `scores.parquet`, and the metric registry.

One place says what every column is called, its type and what it means; writers build
frames with `frame(rows, SCHEMA)` and readers call `validate`. The metric registry gives each
score its direction and aggregation, and the report reads both from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping

from bas.errors import DataError

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # pandas dtype name
    meaning: str


# One row per generated image.
MANIFEST_COLUMNS: tuple[Column, ...] = (
    Column("method", "string", "method name, a key of params.yaml `methods`"),
    Column("scene_id", "string", "scene id (`coco-<split>-<image_id>` or the user's name)"),
    Column("template_id", "int64", "index of the template in params.yaml `generation.templates`; -1 for a scored folder that gives none"),
    Column("template", "string", "the template text, verbatim, with `{tokens}`; '' when not known"),
    Column("subset", "string", "concept indices in the prompt, ascending, joined by '+' (e.g. '0+2')"),
    Column("subset_size", "int64", "number of concepts in the prompt"),
    Column("seed_index", "int64", "index of the seed, 0..seeds-1"),
    Column("seed", "int64", "the generator seed: sha256(global seed, scene, template id, subset, seed index)[:8] mod 2**31; -1 when not known"),
    Column("prompt", "string", "the prompt with the learned tokens (= prompt_classes for a scored folder that gives none)"),
    Column("prompt_classes", "string", "the prompt with each token replaced by 'a <class name>'"),
    Column("sampler", "string", "sampler that made the image (e.g. 'ddim', 'mifo_box'); 'external' for a scored folder that gives none"),
    Column("path", "string", "image path relative to the run directory (or to the scored folder)"),
)

# One row per (generated image, concept in its subset).
SCORE_COLUMNS: tuple[Column, ...] = MANIFEST_COLUMNS + (
    Column("kind", "string", "what the method is to the comparison (bas.kinds: method, ablation, baseline, "
           "successor, reference); 'external' for a scored folder of images bas did not make"),
    Column("profile", "string", "model profile that scored it: sd21, tiny or sandbox"),
    Column("concept_index", "int64", "the concept this row scores"),
    Column("class_name", "string", "its class name"),
    Column("prompt_similarity", "float64", "CLIP cosine(image, prompt_classes) (BaS prompt sim. = SIM-C = CLIP-T)"),
    Column("clip_i", "float64", "CLIP cosine(generated image, masked input concept) (TL's CLIP-I)"),
    Column("detected", "bool", "MaskFormer found a segment of this class in the generated image"),
    Column("detected_area", "float64", "fraction of the generated image covered by this class's segments"),
    Column("identity_similarity", "float64",
           "DINO CLS cosine(masked input concept, generated image masked to the class's segments) "
           "(BaS identity sim. = SIM-D); NaN when not detected"),
    Column("identity_similarity_fallback", "float64",
           "DINO CLS cosine(masked input concept, whole generated image); always set"),
    Column("nsim_d", "float64",
           "MIFO NSIM-D: mean DINO cosine(generated concept, each other masked input concept of the scene); "
           "uses the detected mask, else the whole image; NaN for a one-concept scene"),
    Column("cs", "float64", "MIFO composite CS = prompt_similarity * identity_similarity * (1 - nsim_d) of this row; NaN when "
           "not detected (MIFO's tables apply the formula to the means: use `score.composite_score`)"),
)


@dataclass(frozen=True)
class Metric:
    name: str  # column in scores.parquet
    label: str
    higher_is_better: bool
    aggregation: str = "mean"


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("prompt_similarity", "Prompt similarity (CLIP)", True),
        Metric("identity_similarity", "Identity similarity (DINO)", True),
        Metric("identity_similarity_fallback", "Identity similarity, whole image (DINO)", True),
        Metric("nsim_d", "NSIM-D (similarity to other concepts)", False),
        Metric("cs", "CS = SIM-C x SIM-D x (1 - NSIM-D)", True),
        Metric("clip_i", "CLIP-I (image-image)", True),
        Metric("detected", "Detection rate (MaskFormer)", True),
    )
}


def frame(rows: Iterable[Mapping], columns: tuple[Column, ...]) -> pd.DataFrame:
    """A DataFrame with exactly `columns`, in order, with their dtypes."""
    import pandas as pd   # the config reads the metric registry from here; `bas config` needs no pandas

    df = pd.DataFrame(list(rows), columns=[c.name for c in columns])
    return df.astype({c.name: c.dtype for c in columns})


def validate(df: pd.DataFrame, columns: tuple[Column, ...], source: str = "frame") -> pd.DataFrame:
    """Raise DataError naming `source` and the column if `df` does not match the schema."""
    names = [c.name for c in columns]
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {', '.join(missing)}")
    extra = [n for n in df.columns if n not in names]
    if extra:
        raise DataError(f"{source}: unexpected column(s) {', '.join(extra)}")
    for c in columns:
        try:
            df[c.name] = df[c.name].astype(c.dtype)
        except (TypeError, ValueError) as err:
            raise DataError(f"{source}: column {c.name} is not {c.dtype}: {err}") from None
    return df[names]
