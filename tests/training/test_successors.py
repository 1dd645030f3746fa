"""MIFO, Textual Localization (hard, soft) and Separate-and-Enhance as recipes on the one engine:
PROTOCOL.md sec. 3 numbers, schedules seen in real tiny runs, and each method through training,
the generation grid (DDIM and the mifo_box sampler) and scoring."""

import json

import pandas as pd
import pytest
import torch
import yaml

from bas import config, paths
from bas.config import ConfigError
from bas.generation.run import generate_grid, generate_run
from bas.models import load_diffusion
from bas.scenes import load_scene
from bas.schema import MANIFEST_COLUMNS, SCORE_COLUMNS, validate
from bas.scoring.score import make_scorer, score_run
from bas.tokens import TOKENS_FILE, load_tokens
from bas.training import get_recipe, train_scene
from tests.shipped_methods import SUCCESSORS
from bas.training.engine import LOG_FILE
from bas.training.prior import class_images_dir
from tests.params_defaults import BAS_ATTENTION_LAYERS
from tests.training.conftest import REPO, tiny_config
from tests import params_defaults

PARAMS = REPO / "params.yaml"
SCENE = "coco-train2017-599"          # cat + couch, 128 px (tests/conftest.py)
DECODER_16_32 = ("up_blocks.1.attentions.0", "up_blocks.1.attentions.1", "up_blocks.1.attentions.2",
                 "up_blocks.2.attentions.0", "up_blocks.2.attentions.1", "up_blocks.2.attentions.2")


# --------------------------------------------------------------------------- recipes


@pytest.fixture(scope="module")
def cfg():
    return config.load(PARAMS)


def test_mifo_recipe_has_the_protocol_numbers(cfg):
    mifo = get_recipe(cfg, "mifo")
    phase1, phase2 = mifo.phases["phase1"], mifo.phases["phase2"]
    assert (phase1.steps, phase1.trainable, phase1.lr, phase1.betas) == (600, ("tokens",), 5e-3, (0.9, 0.99))
    assert (phase1.lr_schedule, phase1.warmup_steps) == ("cosine", 10)
    assert (phase1.loss_weights.diffusion, phase1.loss_weights.prior) == (1.0, 0)
    assert phase1.term_weights == {"attention": 0, "reward": 1e-2, "penalty": 2e-2}
    assert mifo.diffusion_loss.masked and mifo.data.concepts_per_sample == "union"
    reward, penalty, late = (mifo.attention_terms[n] for n in ("reward", "penalty", "penalty_16"))
    assert (reward.kind, reward.layers, reward.until_step, reward.max_timestep, reward.target_scale) == \
        ("mifo_reward", DECODER_16_32, 200, 500, 0.5)
    assert (penalty.kind, penalty.layers, penalty.from_step, penalty.until_step, penalty.max_timestep) == \
        ("mifo_penalty", DECODER_16_32, 200, None, 500)
    assert (phase2.steps, set(phase2.trainable), phase2.lr) == (400, {"tokens", "unet", "text_encoder"}, 2e-6)
    assert phase2.term_weights == {"attention": 0, "penalty_16": 2e-2} and phase2.loss_weights.prior == 1.0
    assert (late.kind, late.layers, late.max_timestep) == ("mifo_penalty", BAS_ATTENTION_LAYERS, 500)
    assert mifo.prior_preservation
    # MIFO's code: no token initializer, phase 2's class prompt hard-coded, and phase 2's
    # t < 500 gate reading timesteps[0] of a class-then-instance batch (the class image's).
    assert mifo.token_init == "mean" and mifo.prior_prompt == "a photo of a chair"
    assert (reward.timestep_source, penalty.timestep_source, late.timestep_source) == \
        ("instance", "instance", "class_image")


def test_tl_and_sne_recipes(cfg):
    hard, soft, sne = (get_recipe(cfg, m) for m in ("tl_hard", "tl_soft", "sne"))
    for tl, kind in ((hard, "tl_hard"), (soft, "tl_soft")):
        active = [p for p in tl.phases.values() if p.steps]
        assert [(set(p.trainable), {n: w for n, w in p.term_weights.items() if w}) for p in active] == \
            [({"tokens", "cross_attention_kv"}, {"localization": 1.0})]
        term = tl.attention_terms["localization"]
        assert term.kind == kind and term.map_scale == 4                    # 4 x 64 = 256 on SD 2.1
        assert set(term.layers) == {"down_blocks.1.attentions.0", "down_blocks.1.attentions.1",
                                    *BAS_ATTENTION_LAYERS, *DECODER_16_32[3:], "mid_block.attentions.0"}
        assert tl.data.source == "scene" and not tl.diffusion_loss.masked
        assert tl.prior_preservation and tl.prior_prompt == "{class_name}"      # TL: --class_prompt doll
        # TL's scripts: --num_class_images 200, --initializer_token sks, --scale_lr (1e-5 x 3 x 2)
        assert tl.prior_num_images == 200 and tl.token_init == "word:sks"
        assert active[0].lr == pytest.approx(6e-5)
    raw = yaml.safe_load(PARAMS.read_text())["methods"]["tl_soft"]
    assert raw["include"] == "tl_hard" and raw["attention_terms"] == {"localization": {"kind": "tl_soft"}}
    phase2 = sne.phases["phase2"]
    assert phase2.trainable == ("cross_attention_k",)
    assert phase2.term_weights == {"attention": 0, "separate": 1.0, "enhance": 0.5}
    assert phase2.steps == 200 and sne.phases["phase1"].steps == 400     # S&E's run_individual.sh: 200
    assert all(sne.attention_terms[n].layers == BAS_ATTENTION_LAYERS for n in ("separate", "enhance"))
    assert (sne.attention_terms["enhance"].smoothing_size, sne.attention_terms["enhance"].smoothing_sigma) == (3, 0.5)
    assert all(p.term_weights["attention"] == 0 for p in sne.phases.values())


def _with(methods):
    data = yaml.safe_load(PARAMS.read_text())
    data["methods"] = {"bas": data["methods"]["bas"], **methods}
    return data


@pytest.mark.parametrize("methods, message", [
    ({"x": {"include": "bas", "phases": {"phase1": {"term_weights": {"nope": 1.0}}}}},
     r"methods\.x\.phases\.phase1\.term_weights\.nope.*no such term"),
    ({"x": {"include": "bas", "attention_terms": {"prior": {"kind": "mifo_penalty", "layers": ["up_blocks.1"]}}}},
     r"methods\.x\.attention_terms\.prior"),
    ({"x": {"include": "bas", "attention_terms": {"a": {"kind": "mifo", "layers": ["up_blocks.1"]}}}},
     r"methods\.x\.attention_terms\.a\.kind"),
    ({"x": {"include": "bas", "attention_terms": {"a": {"kind": "tl_hard", "layers": ["x"], "from_step": 5,
                                                        "until_step": 5, "map_scale": 4}}}},
     r"methods\.x\.attention_terms\.a\.until_step"),
    ({"x": {"include": "bas", "prior_prompt": "a photo of a {class}"}}, r"methods\.x\.prior_prompt"),
    ({"x": {"include": "bas", "prior_num_images": 0}}, r"methods\.x\.prior_num_images"),
    ({"x": {"include": "bas", "token_init": "sks"}}, r"methods\.x\.token_init.*word:<a word>"),
    ({"x": {"include": "bas", "attention_terms": {"a": {"kind": "mifo_penalty", "layers": ["up_blocks.1"],
                                                        "timestep_source": "prior"}}}},
     r"methods\.x\.attention_terms\.a\.timestep_source"),
    ({"x": {"include": "bas", "phases": {"phase2": {"trainable": ["cross_attention_q"]}}}},
     r"methods\.x\.phases\.phase2\.trainable\[0\]"),
])
def test_bad_successor_recipes_name_the_key(methods, message):
    with pytest.raises(ConfigError, match=message):
        config.parse(_with(methods))


def test_mifo_box_settings_are_checked():
    with pytest.raises(ConfigError, match=r"generation\.mifo_box\.alpha_linear_end"):
        params_defaults.parse({"generation": {"mifo_box": {"alpha_linear_end": 1}}})
    with pytest.raises(ConfigError, match=r"unknown key generation\.mifo_box\.steps"):
        params_defaults.parse({"generation": {"mifo_box": {"steps": 3}}})


# --------------------------------------------------------------------------- runs (tiny)

STEPS = {
    # mifo: phase 1 of 4 steps switching reward -> penalty at step 2, phase 2 of 2
    "methods.mifo.phases.phase1.steps": 4, "methods.mifo.phases.phase2.steps": 2,
    "methods.mifo.attention_terms.reward.until_step": 2, "methods.mifo.attention_terms.penalty.from_step": 2,
    "methods.tl_hard.phases.phase2.steps": 2,            # tl_soft inherits it
    "methods.sne.phases.phase1.steps": 2, "methods.sne.phases.phase2.steps": 3,
    "training.batch_size": 2, "training.keep_weights": True,
    "generation.templates": ["a photo of {tokens} at the beach"], "generation.steps": 2,
    "generation.mifo_box.guidance_steps": 1, "generation.mifo_box.iterations": 2,
}


def _log(result):
    return [json.loads(line) for line in (result.train_dir / LOG_FILE).read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(shared_storage, coco_scenes, tiny_models_cfg, tmp_path_factory):
    """Every successor trained on the cat + couch scene; its trained parts kept for generation."""
    root = tmp_path_factory.mktemp("successor-runs")
    cfg = tiny_config(shared_storage, (2, 2), **STEPS)
    scene = load_scene(coco_scenes / SCENE)
    out = {}
    for method in SUCCESSORS:
        parts = load_diffusion(tiny_models_cfg)
        base = {n: p.detach().clone() for n, p in parts.unet.named_parameters()}
        result = train_scene(cfg, method, scene, run_dir=root / method, parts=parts)
        out[method] = (result, _log(result), parts, base)
    return cfg, scene, root, out


def test_mifo_switches_reward_to_penalty_and_keeps_t_below_500(runs):
    _, _, _, out = runs
    result, log, parts, _ = out["mifo"]
    phase1 = [r for r in log if r["phase"] == "phase1"]
    phase2 = [r for r in log if r["phase"] == "phase2"]
    assert [r["phase_step"] for r in phase1] == [0, 1, 2, 3] and [r["phase_step"] for r in phase2] == [0, 1]
    for r in phase1:
        below = any(t < 500 for t in r["timesteps"])
        want = ({"reward"} if r["phase_step"] < 2 else {"penalty"}) if below else set()
        assert set(r["terms"]) - {"diffusion"} == want, r                   # no prior in phase 1
        assert r["prior_images"] == 0
    for r in phase1:
        assert r["class_timesteps"] == []
    for r in phase2:
        # Phase 2 gates each sample on its class image's timestep (MIFO's timesteps[0]).
        assert len(r["class_timesteps"]) == len(r["timesteps"]) == 2
        assert ("penalty_16" in r["terms"]) == any(t < 500 for t in r["class_timesteps"])
        assert "prior" in r["terms"] and "reward" not in r["terms"] and "penalty" not in r["terms"]
    assert any(set(r["terms"]) & {"reward", "penalty", "penalty_16"} for r in log)   # the rule did not drop all
    assert any(all(t >= 500 for t in r["timesteps"]) for r in log)                 # ... nor keep all
    info = json.loads((class_images_dir(runs[0], "a photo of a chair") / "images.json").read_text())
    assert info["prompt"] == "a photo of a chair"                                  # MIFO's class prompt
    summary = result.summary["phases"]
    assert [len(p["recording_processors"]) for p in summary] == [6, 5]              # decoder 16+32, then the 16x16
    assert all(".up_blocks." in "." + n for n in summary[0]["recording_processors"])
    assert summary[0]["optimizer"]["lr"] == 5e-3 and summary[0]["optimizer"]["betas"] == [0.9, 0.99]
    assert summary[1]["optimizer"]["num_tensors"] == len(list(parts.unet.parameters())) + \
        len(list(parts.text_encoder.parameters()))
    lrs = [r["lr"] for r in phase1]
    assert lrs == pytest.approx([0.0, 5e-4, 1e-3, 1.5e-3])                         # 10 warm-up steps (diffusers)


def test_tl_trains_kv_and_tokens_with_one_class_image_set_per_concept(runs):
    cfg, scene, _, out = runs
    for method in ("tl_hard", "tl_soft"):
        result, log, parts, base = out[method]
        assert all("localization" in r["terms"] and r["prior_images"] == 2 for r in log)
        phase = result.summary["phases"][0]
        kv = [n for n, _ in parts.unet.named_parameters() if ".attn2.to_k." in n or ".attn2.to_v." in n]
        assert phase["optimizer"]["num_tensors"] == len(kv) + 1 and phase["term_weights"] == {"localization": 1.0}
        changed = {n for n, p in parts.unet.named_parameters() if not torch.equal(p, base[n])}
        assert changed and changed <= set(kv)
        assert result.summary["prior_images"] == 3 * 2            # the recipe's 3 images (tiny_config) x 2 classes
        assert phase["optimizer"]["lr"] == pytest.approx(6e-5)
    for name in scene.class_names:
        info = json.loads((class_images_dir(cfg, name, 3) / "images.json").read_text())
        assert info["prompt"] == name and len(info["seeds"]) == 3
    hard, soft = (_log(out[m][0]) for m in ("tl_hard", "tl_soft"))
    assert [r["timesteps"] for r in hard] == [r["timesteps"] for r in soft]         # same draws ...
    assert all(s["terms"]["localization"] < h["terms"]["localization"] for h, s in zip(hard, soft))  # ... soft <= hard


def test_sne_trains_only_the_cross_attention_keys_after_the_tokens(runs):
    _, _, _, out = runs
    result, log, parts, base = out["sne"]
    phase1, phase2 = result.summary["phases"]
    assert phase1["recording_processors"] == [] and len(phase2["recording_processors"]) == 5
    keys = [n for n, _ in parts.unet.named_parameters() if ".attn2.to_k." in n]
    assert phase2["optimizer"]["num_tensors"] == len(keys) and phase2["optimizer"]["lr"] == 8e-6
    changed = {n for n, p in parts.unet.named_parameters() if not torch.equal(p, base[n])}
    assert changed and changed <= set(keys)
    # The tokens are phase 1's: phase 2 does not train them.
    after1, _ = load_tokens(result.train_dir / "tokens.phase1.safetensors")
    final, _ = load_tokens(result.train_dir / TOKENS_FILE)
    assert all(torch.equal(after1[t], final[t]) for t in final)
    for r in (r for r in log if r["phase"] == "phase2"):
        pairs = any(len(c) >= 2 for c in r["concepts"])
        assert ("separate" in r["terms"]) == pairs and ("enhance" in r["terms"]) == pairs
        if pairs:
            assert 0 <= r["terms"]["separate"] and 0 <= r["terms"]["enhance"] <= 1


def _check_grid_and_scores(run_dir, cfg, scenes_dir, scorer, sampler):
    manifest = validate(pd.read_parquet(paths.manifest_path(run_dir)), MANIFEST_COLUMNS, "manifest")
    assert len(manifest) == 3 and set(manifest["subset"]) == {"0", "1", "0+1"}
    assert set(manifest["sampler"]) == {sampler}
    scores = score_run(cfg, run_dir, scenes_dir, kind="successor", scorer=scorer, progress=False)
    validate(scores, SCORE_COLUMNS, "scores")
    assert len(scores) == 1 + 1 + 2 and scores["prompt_similarity"].notna().all()
    return manifest


def test_each_successor_through_the_grid_and_scoring(runs, coco_scenes, tiny_scorers):
    cfg, scene, root, out = runs
    scorer = make_scorer(cfg, scorers=tiny_scorers)
    for method in SUCCESSORS:
        result, _, parts, _ = out[method]
        tokens = list(load_tokens(result.train_dir / TOKENS_FILE)[0])
        generate_grid(parts, tokens, scene, method, cfg, root / method, progress=False)
        _check_grid_and_scores(root / method, cfg, coco_scenes, scorer, "ddim")
    # MIFO's own synthesis: its tokens with box control, beside its DDIM grid.
    boxed = config.load(PARAMS, {**_overrides(cfg), "generation.sampler": "mifo_box"})
    result, _, parts, _ = out["mifo"]
    generate_grid(parts, ["<asset0>", "<asset1>"], scene, "mifo", boxed, root / "mifo-box", progress=False)
    manifest = _check_grid_and_scores(root / "mifo-box", boxed, coco_scenes, scorer, "mifo_box")
    settings = json.loads(paths.generation_settings_path(root / "mifo-box").read_text())
    assert settings["sampler_settings"]["guidance_steps"] == 1
    assert "sampler_settings" not in json.loads(paths.generation_settings_path(root / "mifo").read_text())
    # The two-concept image changes (the couch's box is the whole image, so alone it would not).
    both = manifest.loc[manifest["subset"] == "0+1", "path"].item()
    assert (root / "mifo" / both).read_bytes() != (root / "mifo-box" / both).read_bytes()


def _overrides(cfg):
    """The test config's overrides (tiny_config's and STEPS), to build a variant of it."""
    return {"models.profile": "tiny", "models.cache_dir": cfg.models.cache_dir,
            "paths.storage_root": cfg.paths.storage_root, "training.progress_bar": False,
            "training.prior_images.num_images": 2, "training.prior_images.sampling_steps": 2,
            "training.prior_images.batch_size": 2, **STEPS}


def test_mifo_box_on_bas_tokens_into_a_second_folder(coco_scenes, tiny_models_cfg, tiny_scorers, make_untrained_run,
                                                     tmp_path):
    """`bas generate --out` with `generation.sampler=mifo_box`: a BaS run's tokens with box control,
    the run's own folder untouched."""
    from bas.cli import main

    settings = {"models.cache_dir": tiny_models_cfg.cache_dir, "paths.storage_root": str(tmp_path),
                "generation.templates": ["a photo of {tokens} in the snow"], "generation.steps": 2,
                "generation.sampler": "mifo_box", "generation.mifo_box.guidance_steps": 2,
                "generation.mifo_box.iterations": 1}
    cfg = config.load(PARAMS, settings)
    run = make_untrained_run(tmp_path / "runs" / "bas" / SCENE, "bas", SCENE, ["cat", "couch"])
    out = tmp_path / "runs" / "bas-mifo_box" / SCENE
    flags = [arg for key, value in settings.items() for arg in ("-S", f"{key}={json.dumps(value)}")]
    assert main(flags + ["generate", "--method", "bas", "--scene", SCENE, "--scenes", str(coco_scenes),
                         "--out", str(out), "--no-progress"]) == 0
    assert not paths.manifest_path(run).exists() and not paths.images_dir(run).exists()
    _check_grid_and_scores(out, cfg, coco_scenes, make_scorer(cfg, scorers=tiny_scorers), "mifo_box")
    # Another box-control setting makes the images stale: they are made again.
    stamp = sorted(p.stat().st_mtime_ns for p in paths.images_dir(out).iterdir())
    changed = config.load(PARAMS, {"models.cache_dir": tiny_models_cfg.cache_dir, "paths.storage_root": str(tmp_path),
                                   "generation.templates": ["a photo of {tokens} in the snow"],
                                   "generation.steps": 2, "generation.sampler": "mifo_box",
                                   "generation.mifo_box.guidance_steps": 2, "generation.mifo_box.iterations": 2})
    generate_run(changed, "bas", SCENE, run, coco_scenes, progress=False, out=out)
    assert sorted(p.stat().st_mtime_ns for p in paths.images_dir(out).iterdir()) != stamp


def test_run_keys_of_older_recipes_do_not_change(cfg, coco_scene):
    """A BaS recipe hashes as it did before attention terms existed (finished runs stay finished)."""
    from bas.config import to_dict
    from bas.io import sha256_bytes
    from bas.training.engine import run_key
    from bas.training.prior import model_identity

    recipe = get_recipe(cfg, "bas")
    old = to_dict(recipe)
    del old["attention_terms"], old["prior_prompt"], old["prior_num_images"], old["token_init"], old["kind"]
    # BaS's loss was a recipe field of its own, weighted in loss_weights
    old["attention_loss"] = {"kind": "bas", "layers": list(BAS_ATTENTION_LAYERS)}
    for phase in old["phases"].values():
        del phase["term_weights"]
        phase["loss_weights"]["attention"] = 0.01
    # Keys as the old code hashed them: the step switches cache_latents / attention_capture
    # did not exist then (and are excluded from run keys now), so they are not in it.
    training = {k: v for k, v in to_dict(cfg.training).items()
                if k not in ("progress_bar", "keep_weights", "gradient_checkpointing",
                             "cache_latents", "attention_capture", "memory_limit_gb")}
    settings = {"method": "bas", "recipe": old, "scene": coco_scene.content_hash,
                "model": model_identity(cfg.models), "gpu_dtype": cfg.models.gpu_dtype, "training": training}
    # BaS trains with class images, whose DDIM timesteps changed (offset 1 -> 0): the key names
    # their sampler, so runs trained on the old class images are trained again.
    with_prior = {**settings, "class_image_sampler": {"steps_offset": 0}}
    want = sha256_bytes(json.dumps(with_prior, sort_keys=True).encode())[:32]
    assert run_key(cfg, "bas", recipe, coco_scene) == want
    assert run_key(cfg, "mifo", get_recipe(cfg, "mifo"), coco_scene) != want
    # A recipe without class images keeps the key it always had.
    ti_m = get_recipe(cfg, "ti_m")
    old = to_dict(ti_m)
    del old["attention_terms"], old["prior_prompt"], old["prior_num_images"], old["token_init"], old["kind"]
    old["attention_loss"] = {"kind": "bas", "layers": list(BAS_ATTENTION_LAYERS)}
    for name, phase in old["phases"].items():
        del phase["term_weights"]
        phase["loss_weights"]["attention"] = {"phase1": 0.0, "phase2": 0.01}[name]
    settings = {**settings, "method": "ti_m", "recipe": old}
    assert run_key(cfg, "ti_m", ti_m, coco_scene) == sha256_bytes(json.dumps(settings, sort_keys=True).encode())[:32]


@pytest.mark.parametrize("method, start", [("mifo", "mean"), ("tl_hard", "sks"), ("sne", "class")])
def test_each_recipe_starts_its_tokens_as_its_official_code(cfg, coco_scene, tiny_models_cfg, method, start):
    """MIFO: no initializer (the vocabulary's mean row, as transformers' resize makes new rows);
    TL: "sks" for every token; the others: the first BPE token of the class name (BaS)."""
    from bas.training.engine import Trainer

    parts = load_diffusion(tiny_models_cfg)
    before = parts.text_encoder.get_input_embeddings().weight.detach().clone()    # (V, D)
    trainer = Trainer(cfg, method, get_recipe(cfg, method), coco_scene, parts=parts, device=torch.device("cpu"))
    trainer._setup_tokens()
    rows = parts.text_encoder.get_input_embeddings().weight[trainer.token_ids].detach()   # (k, D)
    tok = parts.tokenizer
    if start == "mean":
        want = before.mean(dim=0).expand_as(rows)
    elif start == "sks":
        want = before[tok.encode("sks", add_special_tokens=False)].expand_as(rows)
    else:
        want = torch.stack([before[tok.encode(name, add_special_tokens=False)[0]] for name in coco_scene.class_names])
    assert torch.allclose(rows, want, atol=1e-6)
