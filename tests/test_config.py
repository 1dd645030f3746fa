import dataclasses
from pathlib import Path

import pytest
import yaml

from bas import config
from bas.errors import ConfigError
from tests import params_defaults

ROOT = Path(__file__).resolve().parents[1]


def test_project_params_parse():
    cfg = config.load(ROOT / "params.yaml")
    assert cfg.scenes.min_area_fraction == 0.15
    assert "giraffe" in cfg.scenes.excluded_classes


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown key scenes\.nope"):
        params_defaults.parse({"scenes": {"nope": 1}})


def test_bad_value_names_key_and_value():
    with pytest.raises(ConfigError, match=r"scenes\.min_area_fraction = 1\.5"):
        params_defaults.parse({"scenes": {"min_area_fraction": 1.5}})
    with pytest.raises(ConfigError, match=r"models\.profile = 'huge'"):
        params_defaults.parse({"models": {"profile": "huge"}})
    with pytest.raises(ConfigError, match=r"scenes\.max_concepts = 'four'"):
        params_defaults.parse({"scenes": {"max_concepts": "four"}})


def test_overrides_use_dotted_keys(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    cfg = config.load(params, {"scenes.num_scenes": 3})
    assert cfg.scenes.num_scenes == 3


def test_floats_accept_yaml_exponent_strings():
    # PyYAML reads `5e-4` (no dot) as a string; a float field must still take it.
    cfg = params_defaults.parse({"scenes": {"min_area_fraction": "15e-2"}})
    assert cfg.scenes.min_area_fraction == pytest.approx(0.15)


def test_a_profile_overlay_applies_under_the_overrides(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(params_defaults.data({
        "models": {"profile": "tiny"},
        "scenes": {"coco_root": "coco", "resolution": 512, "num_scenes": 50},
        "profiles": {"sandbox": {"scenes": {"coco_root": "sandbox", "resolution": 64}}},
    })))
    assert config.load(params).scenes.resolution == 512            # tiny: no overlay
    sandbox = config.load(params, {"models.profile": "sandbox"})
    assert (sandbox.scenes.coco_root, sandbox.scenes.resolution, sandbox.scenes.num_scenes) == ("sandbox", 64, 50)
    # an explicit override beats the profile's overlay
    assert config.load(params, {"models.profile": "sandbox", "scenes.resolution": 32}).scenes.resolution == 32


def test_a_profile_overlay_for_an_unknown_profile_is_named():
    with pytest.raises(ConfigError, match=r"profiles\.huge: not a model profile"):
        params_defaults.parse({"profiles": {"huge": {}}})


def test_step_and_lr_scale_rescale_every_recipe_alike():
    base = config.load(ROOT / "params.yaml", {"models.profile": "tiny"})
    scaled = config.load(ROOT / "params.yaml", {"models.profile": "tiny", "training.step_scale": 0.25,
                                                "training.lr_scale": 4.0})
    for name, recipe in base.methods.items():
        for phase_name, phase in recipe.phases.items():
            other = scaled.methods[name].phases[phase_name]
            assert other.steps == (0 if phase.steps == 0 else max(1, round(phase.steps / 4))), (name, phase_name)
            assert other.lr == pytest.approx(phase.lr * 4)
            assert other.warmup_steps <= max(other.steps, 0) or other.steps == 0
            assert (other.trainable, other.loss_weights) == (phase.trainable, phase.loss_weights)
    assert scaled.methods["bas"].phases["phase1"].steps == 100
    assert scaled.methods["ti_m"].phases["phase1"].steps == 200
    with pytest.raises(ConfigError, match=r"training\.step_scale = 0"):
        params_defaults.parse({"training": {"step_scale": 0}})


@pytest.mark.parametrize("dotted", ["seed", "generation.steps", "generation.mifo_box.alpha_end",
                                    "training.prior_images.guidance_scale", "sandbox.vae.warmup_steps",
                                    "orchestration.methods", "methods.bas.phases.phase1.lr",
                                    "methods.mifo.attention_terms.reward.target_scale",
                                    "methods.sne.attention_terms.enhance.smoothing_sigma"])
def test_a_key_params_yaml_lacks_is_one_error_naming_it(dotted):
    data = params_defaults.data()
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node[part]
    del node[last]
    with pytest.raises(ConfigError, match=rf"^params: missing key {dotted.replace('.', r'[.]')} "):
        config.parse(data)


def test_params_yaml_is_the_only_home_of_a_value():
    """No section of params.yaml restates its values as dataclass defaults."""
    sections = [config.Config]
    seen = set()
    while sections:
        tp = sections.pop()
        if tp in seen:
            continue
        seen.add(tp)
        for f in dataclasses.fields(tp):
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, \
                f"{tp.__name__}.{f.name} has a default: params.yaml is the only home of its value"
            if isinstance(f.type, str) and f.type in config.__all__ and f.type != "MethodRecipe":
                sections.append(getattr(config, f.type))
    assert config.SandboxStage in seen and config.MifoBoxConfig in seen and config.SlurmConfig in seen
