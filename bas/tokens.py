"""Learned concept tokens: adding them, saving them, and putting a trained run back together.

One new token per concept (`<asset0>`, `<asset1>`, ...), its embedding row initialised from
the first BPE token of the concept's class name (PROTOCOL.md sec. 2; the official code's
fallback of copying vocabulary rows is worse), or as a recipe's `token_init` says (the mean
row for MIFO, the word "sks" for Textual Localization). A finished training run stores the learned
rows in `train/tokens.safetensors` and, when kept, every other trained parameter in
`train/weights/trained.safetensors` (keys prefixed `unet.` / `text_encoder.`), so
`apply_trained` can rebuild the personalised model from the base one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from bas.errors import DataError
from bas.io import atomic_path
from bas.paths import TOKENS_FILE, TRAIN_JSON, TRAINED_WEIGHTS_FILE


def placeholder(index: int) -> str:
    return f"<asset{index}>"


def add_placeholder_tokens(tokenizer, text_encoder, class_names: Sequence[str],
                           init: str = "class_name") -> tuple[list[str], list[int]]:
    """Add one token per concept to `tokenizer` and grow the embedding; return (tokens, ids).

    Each new row starts as `init` says (a recipe's `token_init`): `class_name`, the embedding
    of the first BPE token of its class name; `mean`, the mean of the vocabulary's rows (the
    rows before the new tokens), which is what transformers' `resize_token_embeddings` gives
    new rows (up to a draw of variance 1e-9 x the rows' covariance); `word:<w>`, the
    embedding of <w>, which must be one BPE token (as Textual Localization's code requires).
    Adding tokens that already exist (a second call) reuses them and re-initialises the rows.
    """
    tokens = [placeholder(i) for i in range(len(class_names))]
    tokenizer.add_tokens(tokens, special_tokens=False)
    ids = tokenizer.convert_tokens_to_ids(tokens)
    if len(set(ids)) != len(ids) or any(i == tokenizer.unk_token_id for i in ids):
        raise RuntimeError(f"tokenizer did not add placeholder tokens {tokens} as new tokens")
    text_encoder.resize_token_embeddings(len(tokenizer))
    embeddings = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        if init == "mean":
            mean = embeddings[: min(ids)].float().mean(dim=0).to(embeddings.dtype)   # (D,)
            for token_id in ids:
                embeddings[token_id] = mean
        elif init.startswith("word:"):
            word = init[len("word:"):]
            init_ids = tokenizer.encode(word, add_special_tokens=False)
            if len(init_ids) != 1:
                raise DataError(f"token_init {init!r}: {word!r} is {len(init_ids)} BPE tokens, not one")
            for token_id in ids:
                embeddings[token_id] = embeddings[init_ids[0]].clone()
        elif init == "class_name":
            for token_id, name in zip(ids, class_names):
                init_ids = tokenizer.encode(name, add_special_tokens=False)
                if not init_ids:
                    raise DataError(f"class name {name!r} has no BPE token to initialise its concept token from")
                embeddings[token_id] = embeddings[init_ids[0]].clone()
        else:
            raise ValueError(f"unknown token_init {init!r} (class_name, mean or word:<w>)")
    return tokens, ids


def token_rows(text_encoder, ids: Sequence[int]) -> dict[int, torch.Tensor]:
    weight = text_encoder.get_input_embeddings().weight
    return {i: weight[i].detach().clone() for i in ids}


def save_tokens(path: Path, tokens: Sequence[str], ids: Sequence[int], text_encoder,
                class_names: Sequence[str]) -> None:
    weight = text_encoder.get_input_embeddings().weight
    tensors = {tok: weight[i].detach().float().cpu().contiguous() for tok, i in zip(tokens, ids)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"class_names": json.dumps(list(class_names))})


def load_tokens(path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    if not path.exists():
        raise DataError(f"learned tokens not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            class_names = json.loads((f.metadata() or {}).get("class_names", "[]"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:   # a truncated or damaged file
        raise DataError(f"learned tokens {path} are unreadable ({err}): train the method on the scene "
                        "again (delete that train/ folder)") from None
    order = sorted(tensors, key=lambda t: int(t[len("<asset"):-1]))
    return {k: tensors[k] for k in order}, class_names


def save_trained_weights(path: Path, modules: dict[str, torch.nn.Module], names: dict[str, Sequence[str]]) -> None:
    """Save the named parameters of each module (`{"unet": [...], "text_encoder": [...]}`)."""
    tensors = {}
    for prefix, module in modules.items():
        params = dict(module.named_parameters())
        for name in names.get(prefix, ()):
            tensors[f"{prefix}.{name}"] = params[name].detach().cpu().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


def apply_trained(parts, train_dir: Path) -> list[str]:
    """Load a finished run's tokens (and trained weights, if any) into `parts`; return the tokens.

    `parts` is a `bas.models.DiffusionParts` of the base model, modified in place.
    """
    train_dir = Path(train_dir)
    _check_weights_present(train_dir)
    learned, class_names = load_tokens(train_dir / TOKENS_FILE)
    tokens, ids = add_placeholder_tokens(parts.tokenizer, parts.text_encoder, class_names)
    if tokens != list(learned):
        raise DataError(f"{train_dir / TOKENS_FILE}: tokens {list(learned)} do not match classes {class_names}")
    weights = train_dir / TRAINED_WEIGHTS_FILE
    if weights.exists():
        params = {prefix: dict(module.named_parameters())
                  for prefix, module in (("unet", parts.unet), ("text_encoder", parts.text_encoder))}
        # One tensor at a time: the kept weights (4.8 GB on sd21) never sit beside the model whole.
        with safe_open(str(weights), framework="pt") as f, torch.no_grad():
            for key in f.keys():
                prefix, name = key.split(".", 1)
                param = params[prefix][name]
                param.copy_(f.get_tensor(key).to(param.dtype))
    # Token rows last: a trained text encoder's embedding matrix would otherwise overwrite them.
    embeddings = parts.text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        for token_id, token in zip(ids, tokens):
            embeddings[token_id] = learned[token].to(embeddings.dtype)
    return tokens


def _check_weights_present(train_dir: Path) -> None:
    """Refuse a run that fine-tuned model weights but did not keep them.

    Its tokens alone, put into the base model, would make images of a different model:
    results that look valid and are not.
    """
    info_path = train_dir / TRAIN_JSON
    if not info_path.exists():
        return
    info = json.loads(info_path.read_text())
    phases = (info.get("recipe") or {}).get("phases") or {}
    fine_tuned = any(set(p.get("trainable", [])) - {"tokens"} for p in phases.values() if p.get("steps", 0) > 0)
    if fine_tuned and not (train_dir / TRAINED_WEIGHTS_FILE).exists():
        raise DataError(
            f"{train_dir}: method {info.get('method')!r} fine-tuned the model but its weights were not kept "
            f"({TRAINED_WEIGHTS_FILE} missing). Generate in the same process as training (`bas train-generate`), "
            "or retrain with `training.keep_weights: true`."
        )
