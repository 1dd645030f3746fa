"""Cross-attention capture, shared by training (BaS's attention loss and the successors' terms)
and generation (MIFO's box control): the store, the processors that fill it, and where a
token sits in a prompt.

Below both on purpose: a sampler that reads attention and a trainer that learns from it use
the same processors, and neither imports the other for them.
"""

from __future__ import annotations

from typing import Sequence

import torch

from bas.attention.processors import (CROSS_ATTENTION, PROCESSOR_SUFFIX, AttentionInputs, AttentionStore,
                                      RecordingAttnProcessor, cross_attention_processor_names, finish_attention,
                                      install, install_every_layer, prepare_attention)

__all__ = ["CROSS_ATTENTION", "PROCESSOR_SUFFIX", "AttentionInputs", "AttentionStore", "RecordingAttnProcessor",
           "cross_attention_processor_names", "finish_attention", "install", "install_every_layer",
           "prepare_attention", "token_positions"]


def token_positions(ids: torch.Tensor, token_ids: Sequence[int]) -> list[int]:
    """Where each of `token_ids` sits in one prompt's ids (77,); each must occur once."""
    positions = []
    for token_id in token_ids:
        where = (ids == token_id).nonzero().flatten().tolist()
        if len(where) != 1:
            raise ValueError(f"token id {token_id} occurs {len(where)} times in the prompt, expected once")
        positions.append(where[0])
    return positions
