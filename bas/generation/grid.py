"""The generation grid: every non-empty concept subset x every template x `seeds` seeds.

PROTOCOL.md sec. 4. A grid item is one image to make. Its seed is a pure function of
(global seed, scene id, template id, subset, seed index), a hash rather than a counter, so
any one image can be regenerated alone, and growing the grid (more seeds, more templates
appended) leaves every existing image's seed as it was.

Grid size for one scene of N concepts: (2^N - 1) x len(templates) x seeds; a method's total
is the sum over its scenes. BaS reports 5400 a method over 50 scenes and 10 templates:
5400 / 10 = 540 = seeds x (sum of 2^N - 1). With N in 2..4 every scene adds 3, 7 or 15
subsets, so the subset total is 150 + 4*(#3-concept) + 12*(#4-concept): never 540 (seeds 1),
but 270 with seeds 2 whenever #3-concept + 3 * #4-concept = 30 (e.g. 20 two- and 30
three-concept scenes). `seeds_for_total` does this arithmetic for the scenes at hand.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass
from typing import Optional, Sequence

from bas.config import GenerationConfig

SEED_MODULUS = 2**31  # seeds fit in int32 for every RNG we hand them to


@dataclass(frozen=True)
class GridItem:
    scene_id: str
    template_id: int
    template: str
    subset: tuple[int, ...]     # concept indices, ascending; token order in the prompt
    seed_index: int
    seed: int
    prompt: str                 # with the learned tokens
    prompt_classes: str         # each token replaced by "a <class name>"

    @property
    def subset_label(self) -> str:
        return subset_label(self.subset)

    @property
    def key(self) -> str:
        return image_key(self.template_id, self.subset, self.seed_index)


def subset_label(subset: Sequence[int]) -> str:
    return "+".join(str(i) for i in subset)


def parse_subset(label: str) -> tuple[int, ...]:
    """'0+2' -> (0, 2); ValueError if malformed, not ascending or repeated."""
    subset = tuple(int(part) for part in str(label).split("+"))
    if any(i < 0 for i in subset) or list(subset) != sorted(set(subset)):
        raise ValueError(f"subset {label!r} must be distinct ascending concept indices joined by '+'")
    return subset


def image_key(template_id: int, subset: Sequence[int], seed_index: int) -> str:
    """File stem of an image: `t03_c0+2_s001` = template 3, concepts 0 and 2, seed index 1."""
    return f"t{template_id:02d}_c{subset_label(subset)}_s{seed_index:03d}"


_KEY = re.compile(r"^t(\d+)_c(\d+(?:\+\d+)*)_s(\d+)$")


def parse_image_key(key: str) -> Optional[tuple[int, tuple[int, ...], int]]:
    """(template_id, subset, seed_index) from a file stem made by `image_key`, else None."""
    match = _KEY.match(key)
    if not match:
        return None
    try:
        return int(match.group(1)), parse_subset(match.group(2)), int(match.group(3))
    except ValueError:
        return None


def concept_subsets(num_concepts: int) -> list[tuple[int, ...]]:
    """Every non-empty subset of range(num_concepts): by size, then lexicographically."""
    return [subset for size in range(1, num_concepts + 1)
            for subset in itertools.combinations(range(num_concepts), size)]


def token_phrase(tokens: Sequence[str]) -> str:
    return " and ".join(tokens)


def class_phrase(class_names: Sequence[str]) -> str:
    # PROTOCOL.md sec. 5 / BaS: each token becomes "a <class name>" (article kept as is).
    return " and ".join(f"a {name}" for name in class_names)


def image_seed(scene_id: str, template_id: int, subset: Sequence[int], seed_index: int,
               global_seed: int = 0) -> int:
    """Generator seed of one image: first 8 bytes of a SHA-256 of its keys, mod 2**31."""
    text = f"{global_seed}/{scene_id}/{template_id}/{subset_label(subset)}/{seed_index}"
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % SEED_MODULUS


def build_grid(scene_id: str, tokens: Sequence[str], class_names: Sequence[str], gen: GenerationConfig,
               global_seed: int = 0) -> list[GridItem]:
    """Every image of one trained scene, ordered by template, then subset, then seed index."""
    if len(tokens) != len(class_names):
        raise ValueError(f"scene {scene_id}: {len(tokens)} tokens but {len(class_names)} class names")
    items = []
    for template_id, template in enumerate(gen.templates):
        for subset in concept_subsets(len(tokens)):
            prompt = template.format(tokens=token_phrase([tokens[i] for i in subset]))
            prompt_classes = template.format(tokens=class_phrase([class_names[i] for i in subset]))
            for seed_index in range(gen.seeds):
                items.append(GridItem(
                    scene_id=scene_id, template_id=template_id, template=template, subset=subset,
                    seed_index=seed_index,
                    seed=image_seed(scene_id, template_id, subset, seed_index, global_seed),
                    prompt=prompt, prompt_classes=prompt_classes,
                ))
    return items


def grid_size(num_concepts: int, num_templates: int, seeds: int) -> int:
    return (2**num_concepts - 1) * num_templates * seeds


def total_grid_size(concept_counts: Sequence[int], gen: GenerationConfig) -> int:
    """Images a method makes over scenes with these concept counts."""
    return sum(grid_size(n, len(gen.templates), gen.seeds) for n in concept_counts)


def seeds_for_total(concept_counts: Sequence[int], num_templates: int, total: int) -> Optional[int]:
    """The `generation.seeds` that makes exactly `total` images over these scenes, or None."""
    per_seed = sum(grid_size(n, num_templates, 1) for n in concept_counts)
    if per_seed == 0 or total % per_seed:
        return None
    return total // per_seed
