import subprocess
import sys
from pathlib import Path

import pytest

from bas import config
from bas.errors import ConfigError
from bas.generation.grid import (build_grid, concept_subsets, grid_size, image_key, image_seed, parse_image_key,
                                 seeds_for_total, total_grid_size)
from tests import params_defaults

ROOT = Path(__file__).resolve().parents[2]

# PROTOCOL.md sec. 4, copied by hand: the templates must match these character for character.
PROTOCOL_TEMPLATES = [
    "a photo of {tokens} at the beach",
    "a photo of {tokens} in the jungle",
    "a photo of {tokens} in the snow",
    "a photo of {tokens} in the street",
    "a photo of {tokens} on top of a pink fabric",
    "a photo of {tokens} on top of a wooden floor",
    "a photo of {tokens} with a city in the background",
    "a photo of {tokens} with a mountain in the background",
    "a photo of {tokens} with the Eiffel tower in the background",
    "a photo of {tokens} floating on top of water",
]
CLASSES = ["cat", "dog", "couch", "dining table"]
TOKENS = [f"<asset{i}>" for i in range(4)]


@pytest.mark.parametrize("n, subsets", [(2, 3), (3, 7), (4, 15)])
@pytest.mark.parametrize("seeds", [1, 3])
def test_grid_counts(n, subsets, seeds):
    gen = params_defaults.generation(seeds=seeds)
    items = build_grid("s", TOKENS[:n], CLASSES[:n], gen)
    assert len(items) == subsets * 10 * seeds == grid_size(n, 10, seeds)
    assert len({it.key for it in items}) == len(items)            # one file per image
    assert {it.subset for it in items} == set(concept_subsets(n))
    assert all(it.subset and list(it.subset) == sorted(set(it.subset)) for it in items)


def test_templates_are_verbatim_in_params_and_prompts():
    assert list(config.load(ROOT / "params.yaml").generation.templates) == PROTOCOL_TEMPLATES
    assert list(params_defaults.generation().templates) == PROTOCOL_TEMPLATES
    items = build_grid("s", TOKENS[:3], CLASSES[:3], params_defaults.generation())
    snow = next(it for it in items if it.template_id == 2 and it.subset == (0, 2))
    assert snow.template == "a photo of {tokens} in the snow"
    assert snow.prompt == "a photo of <asset0> and <asset2> in the snow"
    assert snow.prompt_classes == "a photo of a cat and a couch in the snow"
    one = next(it for it in items if it.template_id == 8 and it.subset == (1,))
    assert one.prompt == "a photo of <asset1> with the Eiffel tower in the background"


def test_seeds_are_stable_constants():
    # Fixed values: any change to the seed derivation breaks regeneration of old grids.
    assert image_seed("coco-train2017-599", 3, (0, 1), 0, 0) == 1557581033
    assert image_seed("coco-train2017-599", 0, (1,), 2, 7) == 13673594
    # ... and a fresh interpreter (different hash randomisation) agrees.
    code = ("from bas.generation.grid import image_seed; "
            "print(image_seed('coco-train2017-599', 3, (0, 1), 0, 0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "123"})
    assert out.stdout.strip() == "1557581033"


def test_seeds_depend_on_every_key_and_survive_grid_growth():
    small = build_grid("s", TOKENS[:2], CLASSES[:2], params_defaults.generation(templates=tuple(PROTOCOL_TEMPLATES[:2]), seeds=1))
    big = build_grid("s", TOKENS[:2], CLASSES[:2], params_defaults.generation(seeds=3))
    by_key = {it.key: it.seed for it in big}
    assert all(by_key[it.key] == it.seed for it in small)           # more seeds/templates: same seeds
    assert len(set(by_key.values())) == len(by_key)                 # all distinct
    other_scene = build_grid("t", TOKENS[:2], CLASSES[:2], params_defaults.generation())
    other_global = build_grid("s", TOKENS[:2], CLASSES[:2], params_defaults.generation(), global_seed=1)
    assert {it.seed for it in other_scene}.isdisjoint(by_key.values())
    assert {it.seed for it in other_global}.isdisjoint(by_key.values())
    assert all(0 <= s < 2**31 for s in by_key.values())


def test_paper_5400_is_reached_by_seeds():
    gen = params_defaults.generation(seeds=2)
    counts = [2] * 20 + [3] * 30
    assert total_grid_size(counts, gen) == 5400
    assert seeds_for_total(counts, 10, 5400) == 2
    assert seeds_for_total([2] * 50, 10, 5400) is None              # 1500 a seed does not divide 5400


def test_image_key_round_trip():
    assert image_key(3, (0, 2), 1) == "t03_c0+2_s001"
    assert parse_image_key("t03_c0+2_s001") == (3, (0, 2), 1)
    assert parse_image_key("t03_c2+0_s001") is None
    assert parse_image_key("photo") is None


def test_bad_generation_params_are_named():
    with pytest.raises(ConfigError, match=r"generation\.templates\[0\]"):
        params_defaults.parse({"generation": {"templates": ["a photo at the beach"]}})
    with pytest.raises(ConfigError, match=r"generation\.sampler = 'euler'"):
        params_defaults.parse({"generation": {"sampler": "euler"}})
    with pytest.raises(ConfigError, match=r"generation\.seeds = 0"):
        params_defaults.parse({"generation": {"seeds": 0}})
