"""The sandbox text encoder's caption objective: labels that say exactly what a caption says."""

import random

import numpy as np
import pytest
import torch

from bas.sandbox import base_model, world
from bas.sandbox.text_pretrain import (HEAD_CLASSES, NONE, CaptionHeads, caption_batch, encode_batch,
                                       labelled_caption, losses, shape_token_ids)
from bas.sandbox.train_diffusion import world_batch


@pytest.fixture(scope="module")
def tokenizer():
    from pathlib import Path

    from transformers import CLIPTokenizer

    import bas

    return CLIPTokenizer.from_pretrained(Path(bas.__file__).parent / "data" / "sandbox" / "diffusion" / "tokenizer")


def test_labelled_caption_is_the_world_caption_word_for_word():
    pictures = world_batch(0, "test-captions", 0, 64)
    for k, picture in enumerate(pictures):
        labels = labelled_caption(picture, random.Random(k), 0.4, 0.4)
        assert labels.caption == picture.caption(random.Random(k), drop_attribute=0.4, drop_background=0.4)
        for shape, colour, pattern in labels.objects:
            assert (colour in labels.caption.split()) if colour != NONE else True
            assert pattern == NONE or pattern in labels.caption.split()
        assert sorted(o[0] for o in labels.objects) == sorted(o.shape for o in picture.objects)
        assert (labels.background == NONE) != labels.caption.endswith(world.BACKGROUNDS[picture.background])


def test_dropped_words_are_labelled_none_not_guessed():
    picture = world.WorldImage(np.zeros((1, 1, 3), np.uint8), [], [world.Identity("star", "blue", "dotted")], [], "snow")
    labels = labelled_caption(picture, random.Random(0), 1.0, 1.0)
    assert labels.caption == "a photo of a star"
    assert labels.objects == (("star", NONE, NONE),) and labels.background == NONE


def test_each_object_is_read_at_its_own_shape_token(tokenizer):
    labels = caption_batch(0, 0, 16, 0.1, 0.1)
    ids, rows, ends = encode_batch(tokenizer, labels, shape_token_ids(tokenizer))
    assert len(rows) == sum(len(l.objects) for l in labels)
    for b, pos, shape, *_ in rows:
        assert tokenizer.decode([int(ids[b, pos])]).strip() == shape
    assert all(int(ids[b, e]) == tokenizer.eos_token_id for b, e in enumerate(ends.tolist()))


def test_a_few_steps_of_the_objective_lower_its_loss(tokenizer):
    torch.manual_seed(0)
    encoder = base_model.build_text_encoder()
    heads = CaptionHeads(encoder.config.hidden_size)
    opt = torch.optim.AdamW(list(encoder.parameters()) + list(heads.parameters()), lr=2e-3)
    shape_ids = shape_token_ids(tokenizer)
    batch = caption_batch(0, 0, 32, 0.1, 0.1)
    first = losses(encoder, heads, tokenizer, batch, shape_ids)[0].item()
    for _ in range(15):
        loss, _ = losses(encoder, heads, tokenizer, batch, shape_ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    assert set(HEAD_CLASSES) == {"shape", "colour", "pattern", "background"}
