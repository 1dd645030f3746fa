"""Every params key that names a registry entry is checked when params load (bas.config.names).

Each kind of name key is refused with one line naming the key, the bad name and the known
names, and a near miss gets "did you mean 'X'?" (difflib). The misspelt method through the
real `bas` command: tests/commands/test_bad_names_cli.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bas import config
from bas.config.names import did_you_mean, unknown_name
from bas.errors import BasError, ConfigError

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def _refusal(overrides: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        config.load(PARAMS, overrides)
    message = str(caught.value)
    assert "\n" not in message                      # one line
    return message


def test_did_you_mean_offers_the_closest_name_or_nothing():
    assert did_you_mean("bass", ["bas", "ti_m", "db_m"]) == "; did you mean 'bas'?"
    assert did_you_mean("nosuch", ["bas", "ti_m", "db_m"]) == ""
    assert did_you_mean(3, ["bas"]) == ""           # not a name: nothing to match
    assert did_you_mean("atuo", ("manual", "auto")) == "; did you mean 'auto'?"
    line = unknown_name("generation.sampler", "dim", "not a sampler", ["ddim", "mifo_box"])
    assert line == "params: generation.sampler = 'dim': not a sampler (known: ddim, mifo_box); did you mean 'ddim'?"


def test_an_unknown_method_lists_the_methods():
    message = _refusal({"orchestration.methods": ["bas", "nosuch"]})
    assert message.startswith("params: orchestration.methods[1] = 'nosuch': not a method of params.yaml `methods:` "
                              "(known: bas, bas_no_phase1, ")
    assert "did you mean" not in message
    assert "with models.profile: sandbox also ground_truth, other_identity" in message


def test_a_misspelt_method_gets_did_you_mean():
    assert _refusal({"orchestration.methods": ["tl_sfot"]}).endswith("did you mean 'tl_soft'?")
    assert _refusal({"orchestration.methods": ["ground_trut"]}).endswith("did you mean 'ground_truth'?")


def test_a_reference_needs_the_sandbox_profile():
    message = _refusal({"orchestration.methods": ["bas", "other_identity"], "models.profile": "tiny"})
    assert message == ("params: orchestration.methods[1] = 'other_identity': a ground-truth reference of the "
                       "sandbox world, it needs models.profile: sandbox (not 'tiny')")
    cfg = config.load(PARAMS, {"orchestration.methods": ["bas", "ground_truth", "other_identity"],
                               "models.profile": "sandbox"})
    assert cfg.orchestration.methods == ("bas", "ground_truth", "other_identity")
    on_sandbox = _refusal({"orchestration.methods": ["ground_trth"], "models.profile": "sandbox"})
    # On the sandbox the known names are params.yaml's methods, then the world's references.
    assert "(known: bas, " in on_sandbox
    assert on_sandbox.endswith(", sne, full_finetune, ground_truth, other_identity); did you mean 'ground_truth'?")


def test_an_unavailable_method_says_why():
    assert re.match(r"params: orchestration\.methods\[0\] = 'elite': cannot run: ELITE ",
                    _refusal({"orchestration.methods": ["elite"]}))


@pytest.mark.parametrize("overrides, start, near", [
    # model profiles (a Literal; the overlays: test below)
    ({"models.profile": "tny"}, "params: models.profile = 'tny': must be one of 'sd21', 'tiny', 'sandbox'", "tiny"),
    ({"models.gpu_dtype": "bf61"}, "params: models.gpu_dtype = 'bf61': must be one of ", "bf16"),
    # the sampler registry (bas.config.SAMPLERS) and how it batches
    ({"generation.sampler": "mifo_bx"}, "params: generation.sampler = 'mifo_bx': must be one of ddim, mifo_box",
     "mifo_box"),
    ({"generation.batch_invariant": "alway"}, "params: generation.batch_invariant = 'alway': must be one of ",
     "always"),
    # the metrics the report tests (bas.schema.METRICS: what the scorers write)
    ({"report.test_metrics": ["identity_similarity", "prompt_simlarity"]},
     "params: report.test_metrics[1] = 'prompt_simlarity': not a metric (known: ", "prompt_similarity"),
    # memory settings and the other switches that name a choice
    ({"training.memory": "atuo"}, "params: training.memory = 'atuo': must be one of 'manual', 'auto'", "auto"),
    ({"training.attention_capture": "every_layers"}, "params: training.attention_capture = ", "every_layer"),
    ({"sandbox.base_text": "frozn"}, "params: sandbox.base_text = 'frozn': must be one of ", "frozen"),
    ({"scenes.keep_when_too_many": "larges"}, "params: scenes.keep_when_too_many = ", "largest"),
    # a key a section does not have
    ({"training.memry": "auto"}, "params: unknown key training.memry (known: ", "memory"),
    ({"orchestration.slurm.partiton": "gpu"}, "params: unknown key orchestration.slurm.partiton (known: ",
     "partition"),
    # the recipes: a parent, an attention term's kind, a phase's term, what a phase trains, the data
    ({"methods.mifo.include": "bass"}, "params: methods.mifo.include = 'bass': no such method (known: ", "bas"),
    ({"methods.bas.attention_terms.attention.kind": "mifo_rewrd"},
     "params: methods.bas.attention_terms.attention.kind = 'mifo_rewrd': not an attention term kind", "mifo_reward"),
    ({"methods.bas.phases.phase1.term_weights": {"atention": 0.01}},
     "params: methods.bas.phases.phase1.term_weights.atention = 0.01: no such term in attention_terms", "attention"),
    ({"methods.bas.phases.phase1.trainable": ["tokens", "unett"]},
     "params: methods.bas.phases.phase1.trainable[1] = 'unett': must be one of ", "unet"),
    ({"methods.bas.data.source": "masked_colection"}, "params: methods.bas.data.source = ", "masked_collection"),
    ({"methods.bas.data.concepts_per_sample": "unoin"}, "params: methods.bas.data.concepts_per_sample = ", "union"),
    ({"methods.bas.token_init": "class_nam"}, "params: methods.bas.token_init = 'class_nam': must be ", "class_name"),
    ({"methods.bas.kind": "ablaton"}, "params: methods.bas.kind = 'ablaton': must be one of ", "ablation"),
    # a template id names one of generation.templates
    ({"report.picture_template_id": 10},
     "params: report.picture_template_id = 10: no such template (generation.templates has ids 0-9)", None),
])
def test_each_kind_of_name_key_is_refused_in_one_line(overrides, start, near):
    message = _refusal(overrides)
    assert message.startswith(start), message
    if near:
        assert message.endswith(f"; did you mean {near!r}?"), message


def test_a_profile_overlay_of_a_misspelt_profile_gets_did_you_mean(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS.read_text() + "  sandbx: {}\n")     # under `profiles:`, the file's last section
    with pytest.raises(ConfigError, match=r"profiles\.sandbx: not a model profile .*did you mean 'sandbox'\?$"):
        config.load(params)


def test_a_method_named_on_the_command_line_gets_did_you_mean():
    from bas.training.methods import get_recipe

    cfg = config.load(PARAMS)
    with pytest.raises(BasError, match=r"unknown method 'db_n' .*did you mean 'db_m'\?$"):
        get_recipe(cfg, "db_n")
