"""Named attention terms: schedules (phase steps, t < max_timestep) and which maps each kind reads."""

import pytest
import torch

from bas.attention import AttentionStore
from bas.attention_terms import MifoRewardOptions, SneEnhanceOptions, TlOptions
from bas.config import AttentionTermRecipe
from bas.training.losses import (bas_attention_loss, mifo_penalty_loss, mifo_reward_loss, sne_enhance_loss, sne_separate_loss,
                                 tl_attention_loss, tl_guidance_maps)
from bas.training.terms import TermInputs, compute_term, term_active

A16 = "up_blocks.1.attentions.0.transformer_blocks.0.attn2"
B16 = "up_blocks.1.attentions.1.transformer_blocks.0.attn2"
A32 = "up_blocks.2.attentions.0.transformer_blocks.0.attn2"
T = 8  # prompt positions


def store_with(maps: dict, heads: bool = False) -> AttentionStore:
    store = AttentionStore(average_heads=not heads)
    for name, probs in maps.items():
        store.record(name, probs)
    return store


def masks(k: int, size: int = 32) -> torch.Tensor:
    m = torch.zeros(k, size, size)
    for i in range(k):
        m[i, :, i * size // k:(i + 1) * size // k] = 1
    return m


def test_term_active_counts_the_phase_steps():
    reward = AttentionTermRecipe(kind="mifo_reward", layers=("up_blocks.1",), until_step=200,
                                 options=MifoRewardOptions(target_scale=0.5))
    penalty = AttentionTermRecipe(kind="mifo_penalty", layers=("up_blocks.1",), from_step=200)
    assert [term_active(reward, s) for s in (0, 199, 200, 599)] == [True, True, False, False]
    assert [term_active(penalty, s) for s in (0, 199, 200, 599)] == [False, False, True, True]


def test_bas_term_reads_the_mean_of_its_layers_and_averages_samples():
    torch.manual_seed(0)
    a, b = torch.rand(3, 2, 64, T).softmax(-1), torch.rand(3, 2, 64, T).softmax(-1)   # (rows, heads, HW, T)
    store = store_with({A16: a, B16: b})
    term = AttentionTermRecipe(kind="bas", layers=("up_blocks.1",))
    sample_masks = [masks(1, 16), masks(2, 16)]
    positions = [[5], [7, 3]]
    value = compute_term(term, store, TermInputs(positions, sample_masks, [10, 900], offset=1, latent_side=32))
    mean = (a.mean(dim=1) + b.mean(dim=1)) / 2                    # heads, then the two layers averaged
    want = (bas_attention_loss(mean[1][:, positions[0]].T, sample_masks[0])
            + bas_attention_loss(mean[2][:, positions[1]].T, sample_masks[1])) / 2   # sum / batch, every timestep
    assert value.item() == pytest.approx(want.item())


def test_max_timestep_keeps_only_samples_below_it():
    torch.manual_seed(0)
    probs = torch.rand(3, 2, 64, T).softmax(-1)                  # (rows: 1 class image + 2 samples, heads, HW, T)
    store = store_with({A16: probs})
    term = AttentionTermRecipe(kind="mifo_penalty", layers=("up_blocks.1.attentions.0",), max_timestep=500)
    sample_masks = [masks(2), masks(1)]
    positions = [[2, 5], [3]]

    def value(timesteps):
        return compute_term(term, store, TermInputs(positions, sample_masks, timesteps, offset=1, latent_side=32))

    assert value([500, 999]) is None                              # t >= 500 everywhere: the term is off
    maps = probs.mean(dim=1)                                      # heads averaged
    first = mifo_penalty_loss([maps[1][:, positions[0]].T], sample_masks[0])
    second = mifo_penalty_loss([maps[2][:, positions[1]].T], sample_masks[1])
    assert value([499, 500]).item() == pytest.approx(first.item() / 2)          # sum over used samples / batch
    assert value([10, 20]).item() == pytest.approx((first + second).item() / 2)
    unlimited = AttentionTermRecipe(kind="mifo_penalty", layers=("up_blocks.1.attentions.0",))
    assert compute_term(unlimited, store, TermInputs(positions, sample_masks, [900, 900], 1, 32)) is not None


def test_max_timestep_can_read_the_class_images_timestep():
    """MIFO's phase 2 gates on timesteps[0], the class image's in its class-then-instance batch."""
    torch.manual_seed(0)
    probs = torch.rand(4, 2, 64, T).softmax(-1)                  # (rows: 2 class images + 2 samples, heads, HW, T)
    store = store_with({A16: probs})
    term = AttentionTermRecipe(kind="mifo_penalty", layers=("up_blocks.1.attentions.0",), max_timestep=500,
                               timestep_source="class_image")
    sample_masks, positions = [masks(2), masks(1)], [[2, 5], [3]]

    def value(timesteps, class_timesteps):
        return compute_term(term, store, TermInputs(positions, sample_masks, timesteps, offset=2, latent_side=32,
                                                    class_timesteps=class_timesteps))

    maps = probs.mean(dim=1)
    first = mifo_penalty_loss([maps[2][:, positions[0]].T], sample_masks[0])    # instance rows' maps
    assert value([10, 20], [600, 700]) is None                    # instances below 500, class images not
    assert value([900, 900], [100, 700]).item() == pytest.approx(first.item() / 2)
    # Without class images in the batch the instance's own timestep decides (phase 1).
    alone = TermInputs(positions, sample_masks, [100, 900], offset=2, latent_side=32)
    assert compute_term(term, store, alone).item() == pytest.approx(first.item() / 2)


def test_mifo_terms_read_each_layer_of_any_resolution():
    torch.manual_seed(1)
    maps = {A16: torch.rand(1, 2, 64, T).softmax(-1), A32: torch.rand(1, 2, 256, T).softmax(-1)}
    store = store_with(maps)
    term = AttentionTermRecipe(kind="mifo_reward", layers=("up_blocks.1.attentions.0", "up_blocks.2.attentions.0"),
                               options=MifoRewardOptions(target_scale=0.5))
    m = masks(2)
    got = compute_term(term, store, TermInputs([[1, 4]], [m], [100], 0, 32))
    want = mifo_reward_loss([maps[A16].mean(1)[0][:, [1, 4]].T, maps[A32].mean(1)[0][:, [1, 4]].T], m, 0.5)
    assert got.item() == pytest.approx(want.item())


def test_tl_term_averages_layers_of_a_resolution_then_resolutions():
    torch.manual_seed(2)
    maps = {A16: torch.rand(1, 2, 64, T).softmax(-1), B16: torch.rand(1, 2, 64, T).softmax(-1),
            A32: torch.rand(1, 2, 256, T).softmax(-1)}
    store = store_with(maps)
    m = masks(2)
    for kind in ("tl_hard", "tl_soft"):
        term = AttentionTermRecipe(kind=kind, layers=("up_blocks.1", "up_blocks.2"), options=TlOptions(map_scale=4))
        got = compute_term(term, store, TermInputs([[1, 4]], [m], [100], 0, 16))
        at16 = (maps[A16].mean(1) + maps[B16].mean(1))[0][:, [1, 4]].T / 2
        at32 = maps[A32].mean(1)[0][:, [1, 4]].T
        guidance = tl_guidance_maps([at16, at32], 64)                     # 4 x the latent side 16
        want = tl_attention_loss(guidance, m, soft=kind == "tl_soft")
        assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_sne_terms_read_heads_and_skip_single_concept_samples():
    torch.manual_seed(3)
    probs = {A16: torch.rand(2, 4, 64, T).softmax(-1), B16: torch.rand(2, 4, 64, T).softmax(-1)}
    store = store_with(probs, heads=True)
    layers = ("up_blocks.1.attentions.0", "up_blocks.1.attentions.1")
    separate = AttentionTermRecipe(kind="sne_separate", layers=layers)
    enhance = AttentionTermRecipe(kind="sne_enhance", layers=layers,
                                  options=SneEnhanceOptions(smoothing_size=3, smoothing_sigma=0.5))
    inputs = TermInputs([[1, 4], [2]], [masks(2), masks(1)], [100, 100], 0, 32)
    heads = (probs[A16] + probs[B16])[0] / 2                              # (heads, HW, T), layers averaged
    pair = heads[:, :, [1, 4]].permute(2, 0, 1)                           # (2, heads, HW)
    assert compute_term(separate, store, inputs).item() == pytest.approx(sne_separate_loss(pair).item() / 2)
    assert compute_term(enhance, store, inputs).item() == pytest.approx(
        sne_enhance_loss(pair.reshape(2, 4, 8, 8), 3, 0.5).item() / 2)
    single = TermInputs([[2]], [masks(1)], [100], 0, 32)
    assert compute_term(separate, store, single) is None
    with pytest.raises(RuntimeError, match="per-head maps"):
        compute_term(separate, store_with(probs), inputs)


# --------------------------------------------------------------------------- a new term kind


def test_a_new_term_is_one_function_one_registry_entry_and_one_recipe(shared_storage, coco_scene, tiny_models_cfg,
                                                                      tmp_path):
    """A toy kind (attention mass outside each token's mask) registered from outside bas trains
    two tiny steps; its option is read from the recipe and an option it lacks is refused."""
    import dataclasses
    import json

    from bas.attention_terms import ATTENTION_TERMS, AttentionTermKind, register_attention_term
    from bas.errors import ConfigError
    from bas.models import load_diffusion
    from bas.training import train_scene
    from bas.training.engine import LOG_FILE
    from bas.training.losses import resize_mask_bilinear
    from tests.training.conftest import tiny_config

    seen = []

    @dataclasses.dataclass(frozen=True)
    class ToyOptions:
        power: float = 1.0

    def outside_mass(maps, masks, options, latent_side):
        seen.append((len(maps), tuple(maps[0].shape), options.power))
        side = int(round(maps[0].shape[1] ** 0.5))
        outside = 1 - resize_mask_bilinear(masks, side).flatten(1)             # (k, HW)
        return sum(((m * outside).sum(dim=1) ** options.power).mean() for m in maps)

    register_attention_term("toy_outside", AttentionTermKind(outside_mass, "layer_means", 1, ToyOptions))
    try:
        recipe = {"include": "bas", "description": "BaS phase 1 with a toy attention term",
                  "prior_preservation": False,
                  "attention_terms": {"toy": {"kind": "toy_outside", "layers": ["up_blocks.1"], "power": 2.0}},
                  "phases": {"phase1": {"steps": 2, "loss_weights": {"diffusion": 1.0, "prior": 0.0},
                                        "term_weights": {"attention": 0.0, "toy": 1.0}},
                             "phase2": {"steps": 0}}}
        cfg = tiny_config(shared_storage, (2, 2), **{"methods.toy": recipe})
        assert cfg.methods["toy"].attention_terms["toy"].options == ToyOptions(power=2.0)
        result = train_scene(cfg, "toy", coco_scene, run_dir=tmp_path / "toy", parts=load_diffusion(tiny_models_cfg))
        log = [json.loads(line) for line in (result.train_dir / LOG_FILE).read_text().splitlines()]
        assert [r["phase_step"] for r in log] == [0, 1]
        assert all("toy" in r["terms"] and r["terms"]["toy"] > 0 for r in log), log
        assert seen and all(power == 2.0 and n == 3 for n, _, power in seen)   # up_blocks.1: 3 attention layers

        bad = {**recipe, "attention_terms": {"toy": {"kind": "toy_outside", "layers": ["up_blocks.1"],
                                                     "target_scale": 0.5}}}
        with pytest.raises(ConfigError, match=r"unknown key methods\.toy\.attention_terms\.toy\.target_scale"):
            tiny_config(shared_storage, (2, 2), **{"methods.toy": bad})
    finally:
        ATTENTION_TERMS.pop("toy_outside", None)
