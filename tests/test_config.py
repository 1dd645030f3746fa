from pathlib import Path

import pytest

from bas import config
from bas.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_project_params_parse():
    cfg = config.load(ROOT / "params.yaml")
    assert cfg.scenes.min_area_fraction == 0.15
    assert "giraffe" in cfg.scenes.excluded_classes


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown key scenes\.nope"):
        config.parse({"scenes": {"nope": 1}})


def test_bad_value_names_key_and_value():
    with pytest.raises(ConfigError, match=r"scenes\.min_area_fraction = 1\.5"):
        config.parse({"scenes": {"min_area_fraction": 1.5}})
    with pytest.raises(ConfigError, match=r"models\.profile = 'huge'"):
        config.parse({"models": {"profile": "huge"}})
    with pytest.raises(ConfigError, match=r"scenes\.max_concepts = 'four'"):
        config.parse({"scenes": {"max_concepts": "four"}})


def test_overrides_use_dotted_keys(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    cfg = config.load(params, {"scenes.num_scenes": 3})
    assert cfg.scenes.num_scenes == 3


def test_floats_accept_yaml_exponent_strings():
    # PyYAML reads `5e-4` (no dot) as a string; a float field must still take it.
    cfg = config.parse({"scenes": {"min_area_fraction": "15e-2"}})
    assert cfg.scenes.min_area_fraction == pytest.approx(0.15)


def test_a_profile_overlay_applies_under_the_overrides(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        "models: {profile: tiny}\n"
        "scenes: {coco_root: coco, resolution: 512, num_scenes: 50}\n"
        "profiles:\n"
        "  sandbox: {scenes: {coco_root: sandbox, resolution: 64}}\n"
    )
    assert config.load(params).scenes.resolution == 512            # tiny: no overlay
    sandbox = config.load(params, {"models.profile": "sandbox"})
    assert (sandbox.scenes.coco_root, sandbox.scenes.resolution, sandbox.scenes.num_scenes) == ("sandbox", 64, 50)
    # an explicit override beats the profile's overlay
    assert config.load(params, {"models.profile": "sandbox", "scenes.resolution": 32}).scenes.resolution == 32


def test_a_profile_overlay_for_an_unknown_profile_is_named():
    with pytest.raises(ConfigError, match=r"profiles\.huge: not a model profile"):
        config.parse({"profiles": {"huge": {}}})


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
        config.parse({"training": {"step_scale": 0}})
