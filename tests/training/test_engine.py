"""The engine on the tiny profile and a real COCO-sample scene: phase rules, every shipped
method end to end, ablation switches, saved artifacts, resuming."""

import json
import sys

import pytest
import torch
from safetensors.torch import load_file

from bas.errors import BasError
from bas.models import load_diffusion
from bas.paths import TRAINED_WEIGHTS_FILE as WEIGHTS_FILE
from bas.tokens import TOKENS_FILE, apply_trained, load_tokens
from bas.training import Trainer, get_recipe, train_scene
from bas.training.engine import LOG_FILE, TRAIN_JSON, phase_token_file
from bas.training.prior import class_images_dir, ensure_class_images
from tests.shipped_methods import SHIPPED
from tests.training.conftest import tiny_config



def _snapshot(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def test_phase_rules(make_cfg, coco_scene, tiny_models_cfg, tmp_path):
    cfg = make_cfg((2, 2))
    parts = load_diffusion(tiny_models_cfg)
    trainer = Trainer(cfg, "bas", get_recipe(cfg, "bas"), coco_scene, parts=parts)
    trainer.setup()
    new = trainer.token_ids
    unet0, te0 = _snapshot(parts.unet), _snapshot(parts.text_encoder)
    EMBEDDING = next(n for n, p in parts.text_encoder.named_parameters()
                     if p is parts.text_encoder.get_input_embeddings().weight)
    (name1, phase1), (name2, phase2) = trainer.active_phases()

    state = trainer.start_phase(name1, phase1)
    assert [p is parts.text_encoder.get_input_embeddings().weight for p in state.params] == [True]
    group = state.optimizer.param_groups[0]
    assert isinstance(state.optimizer, torch.optim.AdamW)
    assert (group["lr"], group["betas"], group["weight_decay"], group["eps"]) == (5e-4, (0.9, 0.999), 1e-2, 1e-8)
    for _ in range(phase1.steps):
        trainer.step()
    trainer.end_phase(state, tmp_path, 0.0)
    # Phase 1: every UNet tensor and every other text-encoder tensor and row bitwise equal.
    assert all(torch.equal(p, unet0[n]) for n, p in parts.unet.named_parameters())
    te1 = _snapshot(parts.text_encoder)
    assert [n for n in te0 if n != EMBEDDING and not torch.equal(te1[n], te0[n])] == []
    old_rows = torch.ones(te0[EMBEDDING].shape[0], dtype=torch.bool)
    old_rows[new] = False
    assert torch.equal(te1[EMBEDDING][old_rows], te0[EMBEDDING][old_rows])
    assert all(not torch.equal(te1[EMBEDDING][i], te0[EMBEDDING][i]) for i in new)
    assert (tmp_path / phase_token_file("phase1")).exists()

    state = trainer.start_phase(name2, phase2)
    group = state.optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["weight_decay"], group["eps"]) == (2e-6, (0.9, 0.999), 1e-2, 1e-8)
    assert len(state.params) == len(unet0) + len(te0)
    for _ in range(phase2.steps):
        trainer.step()
    trainer.end_phase(state, tmp_path, 0.0)
    unet2, te2 = _snapshot(parts.unet), _snapshot(parts.text_encoder)
    changed_unet = sum(not torch.equal(unet2[n], unet0[n]) for n in unet0)
    changed_te = sum(not torch.equal(te2[n], te1[n]) for n in te1)
    assert changed_unet > 0.9 * len(unet0) and changed_te > 0.9 * len(te1)
    assert not torch.equal(te2[EMBEDDING][old_rows], te0[EMBEDDING][old_rows])   # the whole text encoder trains
    trainer.cleanup()
    assert not any(p.requires_grad for p in parts.unet.parameters())


@pytest.fixture(scope="module")
def runs(shared_storage, coco_scene, tiny_models_cfg, tmp_path_factory):
    """Every shipped method, 2 + 2 steps (-m baselines 4), weights kept."""
    root = tmp_path_factory.mktemp("runs")
    cfg = tiny_config(shared_storage, (2, 2), **{"training.keep_weights": True})
    out = {}
    for method in SHIPPED:
        parts = load_diffusion(tiny_models_cfg)
        result = train_scene(cfg, method, coco_scene, run_dir=root / method, parts=parts)
        log = [json.loads(line) for line in (result.train_dir / LOG_FILE).read_text().splitlines()]
        out[method] = (result, log, parts)
    return out


@pytest.mark.parametrize("method", SHIPPED)
def test_every_method_trains_and_writes_tokens_and_log(runs, method, tiny_models_cfg):
    result, log, parts = runs[method]
    info = json.loads((result.train_dir / TRAIN_JSON).read_text())
    assert not result.skipped and info["method"] == method
    assert info["content_hash"] and info["placeholders"] == ["<asset0>", "<asset1>"]
    assert info["class_names"] == ["cat", "car"]
    active = [p["name"] for p in info["phases"]]
    planned = sum(p["steps"] for p in info["recipe"]["phases"].values())
    assert len(log) == info["steps"] == sum(p["steps"] for p in info["phases"]) == planned
    assert planned == (2 if method == "bas_no_phase1" else 4)
    assert [r["phase"] for r in log] == [p for p in active for _ in range(len([r for r in log if r["phase"] == p]))]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    for phase in active:
        assert (result.train_dir / phase_token_file(phase)).exists()
    tokens, classes = load_tokens(result.train_dir / TOKENS_FILE)
    assert list(tokens) == ["<asset0>", "<asset1>"] and classes == ["cat", "car"]
    assert all(t.shape == (parts.text_encoder.config.hidden_size,) for t in tokens.values())
    # The saved run rebuilds the trained model from the base one.
    fresh = load_diffusion(tiny_models_cfg)
    apply_trained(fresh, result.train_dir)
    assert torch.equal(fresh.text_encoder.get_input_embeddings().weight,
                       parts.text_encoder.get_input_embeddings().weight)
    assert all(torch.equal(a, b) for a, b in zip(fresh.unet.parameters(), parts.unet.parameters()))


def test_ablations_switch_their_component_off(runs):
    bas = runs["bas"][1]
    assert all("attention" in r["terms"] for r in bas) and all(r["mask_fraction"] < 1 for r in bas)
    info = runs["bas"][0].summary
    assert all(len(p["recording_processors"]) == 5 for p in info["phases"])

    no_attn = runs["bas_no_attn_loss"]
    assert all("attention" not in r["terms"] for r in no_attn[1])
    assert all(p["recording_processors"] == [] for p in no_attn[0].summary["phases"])

    assert all(r["mask_fraction"] == 1.0 for r in runs["bas_no_masked_loss"][1])
    assert all(len(c) == 1 for r in runs["bas_no_union_sampling"][1] for c in r["concepts"])
    assert [p["name"] for p in runs["bas_no_phase1"][0].summary["phases"]] == ["phase2"]
    assert not (runs["bas_no_phase1"][0].train_dir / phase_token_file("phase1")).exists()
    # Same seed, same draws: the ablation without attention loss sees bas's samples.
    assert [r["concepts"] for r in no_attn[1]] == [r["concepts"] for r in bas]


def test_masked_baselines_and_saved_weights(runs, shared_storage, coco_scene):
    ti, db, cd = (runs[m] for m in ("ti_m", "db_m", "cd_m"))
    assert [p["name"] for p in ti[0].summary["phases"]] == ["phase1"] and ti[0].summary["phases"][0]["rows_frozen"]
    assert all(r["prior_images"] == 0 for r in ti[1]) and all(r["prior_images"] == 1 for r in db[1])
    assert not ti[0].summary["weights_saved"] and not (ti[0].train_dir / WEIGHTS_FILE).exists()
    # Nothing but tokens trained: the run is complete without a weights file.
    cfg = tiny_config(shared_storage, (2, 2), **{"training.keep_weights": True})
    assert train_scene(cfg, "ti_m", coco_scene, run_dir=ti[0].train_dir.parent).skipped
    kv = [n for n, _ in cd[2].unet.named_parameters() if ".attn2.to_k." in n or ".attn2.to_v." in n]
    cd_phase = cd[0].summary["phases"][0]
    assert cd_phase["optimizer"]["num_tensors"] == len(kv) + 1 and cd_phase["optimizer"]["lr"] == 1e-5
    saved = load_file(str(cd[0].train_dir / WEIGHTS_FILE))
    assert sorted(saved) == sorted(f"unet.{n}" for n in kv)
    db_saved = load_file(str(db[0].train_dir / WEIGHTS_FILE))
    assert any(k.startswith("text_encoder.") for k in db_saved) and any(k.startswith("unet.") for k in db_saved)


def test_finished_runs_are_skipped_and_killed_runs_restart(make_cfg, coco_scene, tiny_models_cfg, tmp_path,
                                                           monkeypatch):
    cfg = make_cfg((1, 1))
    run_dir = tmp_path / "run"
    calls = {"n": 0}
    original = Trainer.step

    def dying_step(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed in phase 2
        return original(self)

    monkeypatch.setattr(Trainer, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train_scene(cfg, "bas", coco_scene, run_dir=run_dir, parts=load_diffusion(tiny_models_cfg))
    assert not (run_dir / "train").exists()          # never looks complete
    (run_dir / ".train.left-by-kill.tmp").mkdir()    # what a SIGKILL leaves behind
    monkeypatch.setattr(Trainer, "step", original)

    first = train_scene(cfg, "bas", coco_scene, run_dir=run_dir, parts=load_diffusion(tiny_models_cfg))
    assert not first.skipped and (run_dir / "train" / TRAIN_JSON).exists()
    assert sorted(p.name for p in run_dir.iterdir()) == ["train"]
    stamp = (run_dir / "train" / TRAIN_JSON).stat().st_mtime_ns

    again = train_scene(cfg, "bas", coco_scene, run_dir=run_dir)   # no model needed to skip
    assert again.skipped and (run_dir / "train" / TRAIN_JSON).stat().st_mtime_ns == stamp

    changed = make_cfg((1, 2))                                    # another recipe: trained again
    redo = train_scene(changed, "bas", coco_scene, run_dir=run_dir, parts=load_diffusion(tiny_models_cfg))
    assert not redo.skipped and redo.summary["steps"] == 3


def test_a_training_stopped_in_phase_2_resumes_after_phase_1(make_cfg, coco_scene, tiny_models_cfg, tmp_path,
                                                              monkeypatch):
    """Stopped (SIGTERM, preemption) in its second phase, a training starts again after its
    first: phase 1 is not redone, and tokens, weights and log are those of an unstopped run."""
    cfg = make_cfg((3, 2), **{"training.keep_weights": True})
    whole = train_scene(cfg, "bas", coco_scene, run_dir=tmp_path / "whole", parts=load_diffusion(tiny_models_cfg))

    run_dir = tmp_path / "stopped"
    original = Trainer.step
    calls = {"n": 0}

    def counted_step(self, stop_at=None):
        calls["n"] += 1
        if calls["n"] == stop_at:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "step", lambda self: counted_step(self, stop_at=5))   # phase 2's second step
    with pytest.raises(KeyboardInterrupt):
        train_scene(cfg, "bas", coco_scene, run_dir=run_dir, parts=load_diffusion(tiny_models_cfg))
    assert not (run_dir / "train").exists() and (run_dir / ".train-phases" / "state.pt").exists()

    calls["n"] = 0
    monkeypatch.setattr(Trainer, "step", lambda self: counted_step(self))
    resumed = train_scene(cfg, "bas", coco_scene, run_dir=run_dir, parts=load_diffusion(tiny_models_cfg))
    assert calls["n"] == 2                                            # phase 2 only
    assert sorted(p.name for p in run_dir.iterdir()) == ["train"]    # the kept state is gone
    for name in (TOKENS_FILE, phase_token_file("phase1"), WEIGHTS_FILE):
        a, b = load_file(whole.train_dir / name), load_file(resumed.train_dir / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert (whole.train_dir / LOG_FILE).read_text() == (resumed.train_dir / LOG_FILE).read_text()
    assert [p["name"] for p in resumed.summary["phases"]] == ["phase1", "phase2"]

    # State kept for other inputs is never resumed from.
    calls["n"] = 0
    monkeypatch.setattr(Trainer, "step", lambda self: counted_step(self, stop_at=5))
    with pytest.raises(KeyboardInterrupt):
        train_scene(cfg, "bas", coco_scene, run_dir=tmp_path / "other", parts=load_diffusion(tiny_models_cfg))
    changed = make_cfg((3, 2), **{"training.keep_weights": True, "methods.bas.phases.phase2.lr": 1e-5})
    calls["n"] = 0
    monkeypatch.setattr(Trainer, "step", lambda self: counted_step(self))
    train_scene(changed, "bas", coco_scene, run_dir=tmp_path / "other", parts=load_diffusion(tiny_models_cfg))
    assert calls["n"] == 5


def test_gradient_checkpointing_changes_nothing(make_cfg, coco_scene, tiny_models_cfg, tmp_path):
    tokens = []
    for on in (False, True):
        cfg = make_cfg((2, 1), **{"training.gradient_checkpointing": on})
        result = train_scene(cfg, "bas", coco_scene, run_dir=tmp_path / str(on), parts=load_diffusion(tiny_models_cfg))
        tokens.append(load_tokens(result.train_dir / TOKENS_FILE)[0])
    for name in tokens[0]:
        assert torch.allclose(tokens[0][name], tokens[1][name], atol=1e-6)


def test_8bit_adam_without_bitsandbytes_is_a_clear_error(make_cfg, coco_scene, tiny_models_cfg, tmp_path,
                                                         monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)   # import fails as when not installed
    cfg = make_cfg((1, 1), **{"training.use_8bit_adam": True})
    with pytest.raises(BasError, match=r"training\.use_8bit_adam.*bitsandbytes"):
        train_scene(cfg, "bas", coco_scene, run_dir=tmp_path, parts=load_diffusion(tiny_models_cfg))
    assert not (tmp_path / "train").exists()


def test_memory_auto_turns_on_what_the_device_needs(make_cfg, coco_scene, tiny_models_cfg, tmp_path, monkeypatch):
    """With `training.memory: auto` a run adds the options its largest phase needs to fit the
    device's memory, keeps the switches set on, and says in train.json what ran."""
    from bas.models import memory

    cfg = make_cfg((1, 1))
    assert cfg.training.memory == "auto"
    parts = load_diffusion(tiny_models_cfg)
    counts = memory.counts_of(parts.unet, parts.vae, parts.text_encoder)
    recipe = get_recipe(cfg, "bas")
    fp32 = max(memory.method_peak(recipe, 1, counts, (), None).values())
    small = max(memory.method_peak(recipe, 1, counts, ("gradient_checkpointing", "use_8bit_adam"), None).values())
    assert small < fp32                                 # 8-bit moments: 2 bytes a parameter, not 8
    chosen = {}
    for name, budget in (("large", 10 * fp32), ("small", (small + fp32) / 2 / (1 - memory.HEADROOM))):
        monkeypatch.setattr(memory, "device_memory_bytes", lambda device, resident_model_bytes=0, budget=budget: budget)
        result = train_scene(cfg, "bas", coco_scene, run_dir=tmp_path / name, parts=parts)
        chosen[name] = json.loads((result.train_dir / TRAIN_JSON).read_text())["memory"]
    assert chosen["large"]["options"] == [] and chosen["large"]["fits"]
    # Gradient checkpointing frees nothing a tiny model's count sees (no measured activations);
    # 8-bit AdamW does, and is tried alone before with checkpointing.
    assert chosen["small"]["options"] == ["use_8bit_adam"] and chosen["small"]["fits"]
    # (the embedding grew by the first run's placeholder rows: the parts are shared)
    assert chosen["small"]["need_bytes"] == pytest.approx(small, rel=1e-3)
    monkeypatch.setattr(memory, "device_memory_bytes", lambda device, resident_model_bytes=0: 10 * fp32)
    switched = make_cfg((1, 1), **{"training.gradient_checkpointing": True})
    result = train_scene(switched, "bas", coco_scene, run_dir=tmp_path / "switched", parts=parts)
    assert json.loads((result.train_dir / TRAIN_JSON).read_text())["memory"]["options"] == ["gradient_checkpointing"]
    # A limit below the device's memory (a shared machine) bounds what auto may fill.
    limited = make_cfg((1, 1), **{"training.memory_limit_gb": (small + fp32) / 2 / (1 - memory.HEADROOM) / 1e9})
    result = train_scene(limited, "bas", coco_scene, run_dir=tmp_path / "limited", parts=parts)
    assert json.loads((result.train_dir / TRAIN_JSON).read_text())["memory"]["options"] == ["use_8bit_adam"]
    manual = make_cfg((1, 1), **{"training.memory": "manual"})
    result = train_scene(manual, "bas", coco_scene, run_dir=tmp_path / "manual", parts=parts)
    assert json.loads((result.train_dir / TRAIN_JSON).read_text())["memory"] == {"setting": "manual", "options": []}


def test_the_memory_setting_is_in_the_run_key_as_set(make_cfg, coco_scene):
    from bas.config import to_dict
    from bas.io import sha256_bytes
    from bas.training.engine import _recipe_key, run_key
    from bas.training.prior import model_identity

    recipe = get_recipe(make_cfg(), "ti_m")
    manual, auto = make_cfg(**{"training.memory": "manual"}), make_cfg(**{"training.memory": "auto"})
    assert run_key(manual, "ti_m", recipe, coco_scene) != run_key(auto, "ti_m", recipe, coco_scene)
    # A manual run keys as runs did before the setting existed.
    training = {k: v for k, v in to_dict(manual.training).items()
                if k not in ("progress_bar", "keep_weights", "gradient_checkpointing", "cache_latents",
                             "attention_capture", "memory", "memory_limit_gb")}
    settings = {"method": "ti_m", "recipe": _recipe_key(recipe), "scene": coco_scene.content_hash,
                "model": model_identity(manual.models), "gpu_dtype": manual.models.gpu_dtype, "training": training}
    assert not recipe.prior_preservation         # so no class-image sampler in its key
    assert run_key(manual, "ti_m", recipe, coco_scene) == sha256_bytes(json.dumps(settings, sort_keys=True).encode())[:32]


def test_class_images_are_made_once_and_reused(make_cfg, tiny_parts, monkeypatch):
    cfg = make_cfg()
    first = ensure_class_images(cfg, tiny_parts)
    assert len(first) == 2 and (class_images_dir(cfg) / "images.json").exists()

    def no_sampling(*args, **kwargs):
        raise AssertionError("class images were generated again")

    monkeypatch.setattr("bas.generation.sampler.generate", no_sampling)
    again = ensure_class_images(cfg, tiny_parts)
    assert [im.tobytes() for im in again] == [im.tobytes() for im in first]
    other = make_cfg(**{"training.prior_images.prompt": "a photo in the snow"})
    assert class_images_dir(other) != class_images_dir(cfg)


def test_a_damaged_class_image_is_made_again(make_cfg, tiny_parts):
    cfg = make_cfg(**{"training.prior_images.prompt": "a photo of a damaged set"})
    first = ensure_class_images(cfg, tiny_parts)
    marker = json.loads((class_images_dir(cfg) / "images.json").read_text())
    assert sorted(marker["files"]) == ["0000.png", "0001.png"]   # recorded as outputs are
    damaged = class_images_dir(cfg) / "0001.png"
    damaged.write_bytes(damaged.read_bytes()[:100])
    again = ensure_class_images(cfg, tiny_parts)
    assert [im.tobytes() for im in again] == [im.tobytes() for im in first]   # made again, the same
    assert damaged.stat().st_size == marker["files"]["0001.png"]["size"]


def test_two_runs_needing_the_same_class_images_make_them_once(make_cfg, tiny_parts, monkeypatch):
    """Two runs (here threads) that need a class-image set nobody has made yet: one makes it
    under its lease, the other waits and reads the same images."""
    import threading
    import time

    import bas.generation.sampler as sampler

    cfg = make_cfg(**{"training.prior_images.prompt": "a photo of a racing class set"})
    real, calls = sampler.generate, []

    def slow_generate(*args, **kwargs):
        calls.append(threading.current_thread().name)
        time.sleep(1.0)                       # long enough for the other run to arrive meanwhile
        return real(*args, **kwargs)

    monkeypatch.setattr(sampler, "generate", slow_generate)
    results = {}
    threads = [threading.Thread(target=lambda n=n: results.__setitem__(n, ensure_class_images(cfg, tiny_parts)),
                                name=f"run-{n}") for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert [im.tobytes() for im in results[0]] == [im.tobytes() for im in results[1]]


def test_mixed_precision_keeps_fp32_master_weights(make_cfg, coco_scene, tiny_models_cfg):
    """The GPU path (autocast, fp32 weights), run with CPU bf16 autocast as its stand-in."""
    cfg = make_cfg((1, 1))
    parts = load_diffusion(tiny_models_cfg)
    trainer = Trainer(cfg, "bas", get_recipe(cfg, "bas"), coco_scene, parts=parts)
    trainer.setup()
    trainer.amp_dtype = torch.bfloat16
    for name, phase in trainer.active_phases():
        trainer.start_phase(name, phase)
        record = trainer.step()
        assert set(record["terms"]) == {"diffusion", "attention", "prior"}
        assert all(torch.isfinite(torch.tensor(v)) for v in record["terms"].values())
    assert all(p.dtype == torch.float32 for p in parts.unet.parameters())
    assert all(p.dtype == torch.float32 for p in parts.text_encoder.parameters())
    trainer.cleanup()


def test_batches_of_two_samples(make_cfg, coco_scene, tiny_models_cfg, tmp_path):
    cfg = make_cfg((1, 1), **{"training.batch_size": 2})
    result = train_scene(cfg, "bas", coco_scene, run_dir=tmp_path, parts=load_diffusion(tiny_models_cfg))
    log = [json.loads(line) for line in (result.train_dir / LOG_FILE).read_text().splitlines()]
    assert [len(r["concepts"]) for r in log] == [2, 2] and all(r["prior_images"] == 2 for r in log)
    assert all(len(r["timesteps"]) == 2 and "attention" in r["terms"] for r in log)
