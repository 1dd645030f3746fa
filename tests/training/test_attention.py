"""Cross-attention capture: where it is installed, what it records, that gradients flow."""

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from bas.config import AttentionTermRecipe
from tests.params_defaults import BAS_ATTENTION_LAYERS
from bas.models import load_diffusion
from bas.tokens import add_placeholder_tokens
from bas import attention as attn
from bas.attention import token_positions
from bas.training.data import prompt_ids
from bas.training.terms import TermInputs, compute_term


@pytest.fixture
def parts(tiny_models_cfg):
    return load_diffusion(tiny_models_cfg)   # modified by the tests: never the session's


def _inputs(parts, prompts, seed=0):
    gen = torch.Generator().manual_seed(seed)
    side = parts.unet.config.sample_size
    latents = torch.randn((len(prompts), 4, side, side), generator=gen)
    ids = prompt_ids(parts.tokenizer, prompts)
    return latents, torch.tensor([10, 700][: len(prompts)]), ids


def test_recording_only_on_the_five_16x16_layers(parts):
    store = attn.AttentionStore()
    replaced = attn.install(parts.unet, BAS_ATTENTION_LAYERS, store)
    assert len(replaced) == 5 and all(".attn2.processor" in r for r in replaced)
    for name, proc in parts.unet.attn_processors.items():
        if name in replaced:
            assert isinstance(proc, attn.RecordingAttnProcessor)
        else:
            assert isinstance(proc, AttnProcessor2_0), name
    latents, t, ids = _inputs(parts, ["a photo of a cat", "a photo at the beach"])
    with torch.no_grad():
        parts.unet(latents, t, parts.text_encoder(ids)[0])
    assert sorted(store.maps) == sorted(r[: -len(".processor")] for r in replaced)
    side = parts.unet.config.sample_size // 4          # SD: 64 // 4 = 16; tiny: 32 // 4 = 8
    for name, maps in store.maps.items():
        assert maps.shape == (2, side * side, 77)       # per sample, heads averaged
        assert torch.allclose(maps.sum(-1), torch.ones(2, side * side), atol=1e-5)   # softmax over tokens
    assert store.mean_map(BAS_ATTENTION_LAYERS).shape == (2, side * side, 77)


def test_recording_processor_computes_the_same_attention_as_sdpa(parts):
    latents, t, ids = _inputs(parts, ["a photo of a dog", "a photo of a car"])
    with torch.no_grad():
        hidden = parts.text_encoder(ids)[0]
        before = parts.unet(latents, t, hidden).sample
        attn.install(parts.unet, BAS_ATTENTION_LAYERS, attn.AttentionStore())
        after = parts.unet(latents, t, hidden).sample
    assert torch.allclose(before, after, atol=1e-5)


def test_unknown_layer_is_an_error(parts):
    with pytest.raises(ValueError, match="down_blocks.9"):
        attn.install(parts.unet, ["down_blocks.9.attentions.0"], attn.AttentionStore())


@pytest.mark.parametrize("checkpointing", [False, True])
def test_attention_loss_gradient_reaches_the_token_embeddings(parts, checkpointing):
    tokens, ids_new = add_placeholder_tokens(parts.tokenizer, parts.text_encoder, ["cat", "car"])
    store = attn.AttentionStore()
    attn.install(parts.unet, BAS_ATTENTION_LAYERS, store)
    parts.unet.requires_grad_(False)
    parts.text_encoder.requires_grad_(False)
    weight = parts.text_encoder.get_input_embeddings().weight
    weight.requires_grad_(True)
    if checkpointing:  # maps are side outputs of checkpointed blocks: gradients must still flow
        parts.unet.train()
        parts.unet.enable_gradient_checkpointing()
    latents, t, ids = _inputs(parts, ["a photo of <asset1> and <asset0>"])
    parts.unet(latents, t, parts.text_encoder(ids)[0])
    positions = [token_positions(ids[0], [ids_new[1], ids_new[0]])]
    masks = torch.zeros(2, 64, 64)
    masks[0, :, 32:] = 1
    masks[1, :, :32] = 1
    term = AttentionTermRecipe(kind="bas", layers=BAS_ATTENTION_LAYERS)
    loss = compute_term(term, store, TermInputs(positions, [masks], [0], offset=0, latent_side=latents.shape[-1]))
    loss.backward()
    grad = weight.grad
    assert grad[ids_new[0]].abs().sum() > 0 and grad[ids_new[1]].abs().sum() > 0
    unused = parts.tokenizer.convert_tokens_to_ids("zebra</w>")
    assert grad[unused].abs().sum() == 0


def test_maps_are_fp32_under_autocast(parts):
    store = attn.AttentionStore()
    attn.install(parts.unet, BAS_ATTENTION_LAYERS, store)
    latents, t, ids = _inputs(parts, ["a photo of a cat"])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = parts.unet(latents, t, parts.text_encoder(ids)[0]).sample
    assert out.dtype == torch.bfloat16            # the model computed in half precision
    for maps in store.maps.values():
        assert maps.dtype == torch.float32
        assert torch.allclose(maps.sum(-1), torch.ones_like(maps[..., 0]), atol=1e-5)
