"""Published numbers to compare against (PROTOCOL.md section 6), with their sources.

These come from the papers, not from any run of ours. The report shows them only in their
own tables and figures, labelled "published", next to ours where the method names match;
they never enter our means, fronts or tests.

Method labels are the papers'; `our_method_key` turns a label into the form our method
names take (lower case, no '-', '_' or spaces), so "TI-m" meets our `ti_m`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedTable:
    key: str
    title: str
    source: str  # paper and table
    note: str
    columns: tuple[str, ...]  # column labels, in order
    metric_of_column: dict[str, str]  # column label -> our metric name, where one matches
    rows: dict[str, tuple[float, ...]]  # paper's method label -> values in column order
    digits: int  # decimals as printed in the paper


BAS_USER_STUDY = PublishedTable(
    key="bas_user_study",
    title="Break-A-Scene user study: mean human ratings (1-5)",
    source="Avrahami et al., Break-A-Scene: Extracting Multiple Concepts from a Single Image, "
           "Table 4 (plotted as its Figure 5, right)",
    note="Amazon Mechanical Turk ratings on a 1-5 scale, 3 ratings per question; not on the scale "
         "of our cosine similarities, so shown in their own plot.",
    columns=("Identity (1-5)", "Prompt (1-5)"),
    metric_of_column={},
    rows={
        "TI-m": (2.69, 3.88),
        "DB-m": (3.97, 2.37),
        "CD-m": (2.47, 4.08),
        "ELITE": (3.05, 3.53),
        "BaS": (3.56, 3.85),
    },
    digits=2,
)

MIFO_TABLE_1 = PublishedTable(
    key="mifo_table_1",
    title="MIFO multi-instance semantic learning: SIM-D / NSIM-D",
    source="MIFO: Learning and Synthesizing Multi-Instance from One Image, Table 1",
    note="DINO similarities on MIFO's own evaluation set; 'MIFO' is the paper's 'Ours'.",
    columns=("SIM-D", "NSIM-D"),
    metric_of_column={"SIM-D": "identity_similarity", "NSIM-D": "nsim_d"},
    rows={
        "TI-m": (0.7525, 0.7094),
        "DB-m": (0.7685, 0.7220),
        "BaS": (0.7781, 0.7253),
        "MIFO": (0.7918, 0.7258),
    },
    digits=4,
)

MIFO_TABLE_2 = PublishedTable(
    key="mifo_table_2",
    title="MIFO precise synthesis: SIM-C / SIM-D / NSIM-D / CS",
    source="MIFO: Learning and Synthesizing Multi-Instance from One Image, Table 2 (row 'Ours')",
    note="CS = SIM-C x SIM-D x (1 - NSIM-D); the published CS equals this product of the "
         "published means (0.609 x 0.792 x 0.274 = 0.132).",
    columns=("SIM-C", "SIM-D", "NSIM-D", "CS"),
    metric_of_column={"SIM-C": "prompt_similarity", "SIM-D": "identity_similarity",
                      "NSIM-D": "nsim_d", "CS": "cs"},
    rows={
        "MIFO": (0.609, 0.792, 0.726, 0.132),
    },
    digits=3,
)

TL_VS_CUSTOM_DIFFUSION = PublishedTable(
    key="tl_vs_custom_diffusion",
    title="Textual Localization vs Custom Diffusion: relative gain in %",
    source="Shentu et al., Textual Localization: Decomposing Multi-concept Images for "
           "Subject-Driven Text-to-Image Generation, abstract (hard guidance)",
    note="Relative improvement of TL over Custom Diffusion, single-concept / multi-concept "
         "generation. Our counterpart, where runs named tl_hard and cd_m exist, is "
         "(TL hard - CD-m) / CD-m on prompts of 1 concept / 2+ concepts.",
    columns=("CLIP-I single", "CLIP-I multi", "CLIP-T single", "CLIP-T multi"),
    metric_of_column={"CLIP-I single": "clip_i", "CLIP-I multi": "clip_i",
                      "CLIP-T single": "prompt_similarity", "CLIP-T multi": "prompt_similarity"},
    rows={
        "TL vs Custom Diffusion": (7.04, 8.13, 2.22, 5.85),
    },
    digits=2,
)

# TL's comparison as our method names: (method, baseline). The published gains are hard guidance's.
TL_METHODS = ("tl_hard", "cd_m")

TABLES = (BAS_USER_STUDY, MIFO_TABLE_1, MIFO_TABLE_2, TL_VS_CUSTOM_DIFFUSION)


def formatted(table: PublishedTable, value: float) -> str:
    return f"{value:.{table.digits}f}"


def our_method_key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def match_method(label: str, methods) -> str | None:
    """Our method whose name matches the paper's label, or None."""
    key = our_method_key(label)
    for method in methods:
        if our_method_key(method) == key:
            return method
    return None
