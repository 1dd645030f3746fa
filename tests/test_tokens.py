import pytest
import torch

from bas.errors import DataError
from bas.models import load_diffusion
from bas.paths import TRAINED_WEIGHTS_FILE as WEIGHTS_FILE
from bas.tokens import add_placeholder_tokens, apply_trained, save_tokens, save_trained_weights


def test_new_rows_start_from_first_bpe_token_of_class(tiny_models_cfg):
    parts = load_diffusion(tiny_models_cfg)
    before = parts.text_encoder.get_input_embeddings().weight.detach().clone()
    tokens, ids = add_placeholder_tokens(parts.tokenizer, parts.text_encoder, ["dining table", "dog"])
    assert tokens == ["<asset0>", "<asset1>"]
    weight = parts.text_encoder.get_input_embeddings().weight
    first_of_dining = parts.tokenizer.encode("dining table", add_special_tokens=False)[0]
    dog = parts.tokenizer.encode("dog", add_special_tokens=False)[0]
    assert torch.equal(weight[ids[0]], before[first_of_dining])
    assert torch.equal(weight[ids[1]], before[dog])
    assert torch.equal(weight[: before.shape[0]], before)  # old rows untouched
    # The tokens are single units in prompts.
    encoded = parts.tokenizer.encode("a photo of <asset0> and <asset1>", add_special_tokens=False)
    assert ids[0] in encoded and ids[1] in encoded


def test_new_rows_start_from_the_vocabulary_mean_or_one_word(tiny_models_cfg):
    parts = load_diffusion(tiny_models_cfg)
    before = parts.text_encoder.get_input_embeddings().weight.detach().clone()
    _, ids = add_placeholder_tokens(parts.tokenizer, parts.text_encoder, ["cat", "dog"], init="mean")
    weight = parts.text_encoder.get_input_embeddings().weight
    assert torch.allclose(weight[ids], before.mean(dim=0).expand(2, -1), atol=1e-6)
    # A second call re-initialises from the vocabulary alone, not from the rows it added.
    _, again = add_placeholder_tokens(parts.tokenizer, parts.text_encoder, ["cat", "dog"], init="mean")
    assert again == ids and torch.allclose(weight[ids], before.mean(dim=0).expand(2, -1), atol=1e-6)
    _, ids = add_placeholder_tokens(parts.tokenizer, parts.text_encoder, ["cat", "dog"], init="word:sks")
    (sks,) = parts.tokenizer.encode("sks", add_special_tokens=False)
    assert torch.equal(weight[ids[0]], before[sks]) and torch.equal(weight[ids[1]], before[sks])
    assert torch.equal(weight[: before.shape[0]], before)  # old rows untouched
    with pytest.raises(DataError, match="'dining table' is 2 BPE tokens"):
        add_placeholder_tokens(parts.tokenizer, parts.text_encoder, ["cat"], init="word:dining table")


def test_apply_trained_restores_tokens_and_weights(tmp_path, tiny_models_cfg):
    parts = load_diffusion(tiny_models_cfg)
    tokens, ids = add_placeholder_tokens(parts.tokenizer, parts.text_encoder, ["cat", "dog"])
    with torch.no_grad():
        parts.text_encoder.get_input_embeddings().weight[ids[0]] += 1.0
        parts.unet.conv_in.bias += 0.5
    save_tokens(tmp_path / "tokens.safetensors", tokens, ids, parts.text_encoder, ["cat", "dog"])
    save_trained_weights(tmp_path / WEIGHTS_FILE, {"unet": parts.unet}, {"unet": ["conv_in.bias"]})

    fresh = load_diffusion(tiny_models_cfg)
    assert apply_trained(fresh, tmp_path) == tokens
    got = fresh.text_encoder.get_input_embeddings().weight
    want = parts.text_encoder.get_input_embeddings().weight
    assert torch.equal(got[ids[0]], want[ids[0]]) and torch.equal(got[ids[1]], want[ids[1]])
    assert torch.equal(fresh.unet.conv_in.bias, parts.unet.conv_in.bias)


def test_apply_trained_refuses_a_fine_tuned_run_without_its_weights(tmp_path, tiny_models_cfg):
    import json

    import pytest

    from bas.errors import DataError

    parts = load_diffusion(tiny_models_cfg)
    tokens, ids = add_placeholder_tokens(parts.tokenizer, parts.text_encoder, ["cat", "dog"])
    save_tokens(tmp_path / "tokens.safetensors", tokens, ids, parts.text_encoder, ["cat", "dog"])
    recipe = {"phases": {"phase1": {"steps": 2, "trainable": ["tokens"]},
                         "phase2": {"steps": 2, "trainable": ["tokens", "unet"]}}}
    (tmp_path / "train.json").write_text(json.dumps({"method": "bas", "recipe": recipe}))
    with pytest.raises(DataError, match="weights were not kept"):
        apply_trained(load_diffusion(tiny_models_cfg), tmp_path)
    recipe["phases"]["phase2"]["steps"] = 0  # tokens only: the base model is the right model
    (tmp_path / "train.json").write_text(json.dumps({"method": "ti_m", "recipe": recipe}))
    assert apply_trained(load_diffusion(tiny_models_cfg), tmp_path) == tokens
