"""Pretrain the sandbox's CLIP text encoder on world captions alone, to be frozen for the UNet.

SD 2.1 trains its UNet under a frozen, pretrained OpenCLIP text encoder; a text encoder
learned jointly from scratch with the UNet has to discover words and their binding while the
UNet is still drawing noise. This gives the sandbox model SD's arrangement: the same
`CLIPTextModel`, first taught what the world's captions say, then frozen.

The objective reads the caption through the encoder's own causal attention. At each object's
shape word (the last word of its phrase, so its hidden state has seen the colour and pattern
words before it) linear heads predict that object's shape, colour and pattern; at the end
token a head predicts the background. An attribute the caption leaves out is the class
`none`, so the encoder learns what was *said*, not the world's statistics. After training,
the object's whole identity sits at its shape token: the binding the UNet must read through
cross-attention is already done.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bas.config import SandboxStage
from bas.sandbox import world
from bas.sandbox.loop import lr_at, stage_rng, train_steps

NONE = "none"
HEAD_CLASSES = {
    "shape": world.SHAPES,
    "colour": (NONE,) + tuple(world.COLOURS),
    "pattern": (NONE,) + tuple(p for p in world.PATTERNS if p != "plain"),   # a plain object has no word
    "background": (NONE,) + tuple(world.BACKGROUNDS),
}


@dataclass(frozen=True)
class CaptionLabels:
    caption: str
    objects: tuple[tuple[str, str, str], ...]   # (shape, colour or none, pattern or none), caption order
    background: str                             # background key or none


def labelled_caption(picture: world.WorldImage, rng: random.Random, drop_attribute: float,
                     drop_background: float) -> CaptionLabels:
    """The caption `picture.caption(rng, ...)` gives, with what each of its phrases says.

    Rebuilt word for word from the same random draws, in the same order, so the labels are
    those of the exact caption string (checked against `WorldImage.caption` in the tests).
    """
    order = list(range(len(picture.objects)))
    rng.shuffle(order)
    names, objects = [], []
    for i in order:
        ident = picture.objects[i]
        words, colour, pattern = [], NONE, NONE
        if rng.random() >= drop_attribute:
            words.append(ident.colour)
            colour = ident.colour
        if ident.pattern != "plain" and rng.random() >= drop_attribute:
            words.append(ident.pattern)
            pattern = ident.pattern
        words.append(ident.shape)
        names.append(world.article(words[0]) + " " + " ".join(words))
        objects.append((ident.shape, colour, pattern))
    text = "a photo of " + " and ".join(names)
    background = NONE
    if rng.random() >= drop_background:
        text += " " + world.BACKGROUNDS[picture.background]
        background = picture.background
    return CaptionLabels(text, tuple(objects), background)


class CaptionHeads(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.heads = nn.ModuleDict({name: nn.Linear(width, len(classes)) for name, classes in HEAD_CLASSES.items()})

    def forward(self, name: str, hidden: torch.Tensor) -> torch.Tensor:
        return self.heads[name](hidden)


def shape_token_ids(tokenizer) -> dict[str, int]:
    """The single BPE token of each shape word (the world is designed so each is one token)."""
    ids = {}
    for shape in world.SHAPES:
        tokens = tokenizer(shape, add_special_tokens=False).input_ids
        if len(tokens) != 1:
            raise ValueError(f"sandbox shape word {shape!r} is {len(tokens)} BPE tokens; the text pretraining needs one")
        ids[shape] = tokens[0]
    return ids


def encode_batch(tokenizer, labels: list[CaptionLabels], shape_ids: dict[str, int]):
    """(input ids (B, 77), object rows [(b, pos, shape, colour, pattern)], end positions (B,))."""
    ids = tokenizer([l.caption for l in labels], padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    rows, ends = [], []
    for b, lab in enumerate(labels):
        seq = ids[b].tolist()
        end = seq.index(tokenizer.eos_token_id)
        ends.append(end)
        positions = [p for p in range(end) if seq[p] in shape_ids.values()]
        if len(positions) != len(lab.objects):
            raise ValueError(f"caption {lab.caption!r}: {len(positions)} shape tokens for {len(lab.objects)} objects")
        for pos, obj in zip(positions, lab.objects):
            rows.append((b, pos) + obj)
    return ids, rows, torch.tensor(ends)


def caption_batch(seed: int, step: int, batch_size: int, drop_attribute: float, drop_background: float,
                  identities=None) -> list[CaptionLabels]:
    rng = stage_rng(seed, "text-pretrain", step)
    text_rng = random.Random(f"{seed}:text-pretrain-captions:{step}")
    identities = identities or world.seen_identities(seed)
    out = []
    for _ in range(batch_size):
        count = int(rng.choice([1, 2, 3, 4]))
        picks = [identities[j] for j in rng.choice(len(identities), size=count, replace=False)]
        background = str(rng.choice(list(world.BACKGROUNDS)))
        picture = world.WorldImage(np.zeros((1, 1, 3), np.uint8), [], picks, [], background)
        out.append(labelled_caption(picture, text_rng, drop_attribute, drop_background))
    return out


def losses(text_encoder, heads: CaptionHeads, tokenizer, labels: list[CaptionLabels],
           shape_ids: dict[str, int]) -> tuple[torch.Tensor, dict[str, float]]:
    ids, rows, ends = encode_batch(tokenizer, labels, shape_ids)
    hidden = text_encoder(ids)[0]                                  # (B, 77, D)
    b = torch.tensor([r[0] for r in rows])
    pos = torch.tensor([r[1] for r in rows])
    at_shape = hidden[b, pos]                                      # (objects, D)
    total, accuracy = 0.0, {}
    for k, name in enumerate(("shape", "colour", "pattern")):
        target = torch.tensor([HEAD_CLASSES[name].index(r[2 + k]) for r in rows])
        logits = heads(name, at_shape)
        total = total + F.cross_entropy(logits, target)
        accuracy[name] = (logits.argmax(-1) == target).float().mean().item()
    at_end = hidden[torch.arange(len(labels)), ends]               # (B, D)
    target = torch.tensor([HEAD_CLASSES["background"].index(l.background) for l in labels])
    logits = heads("background", at_end)
    total = total + F.cross_entropy(logits, target)
    accuracy["background"] = (logits.argmax(-1) == target).float().mean().item()
    return total, accuracy


def pretrain_text_encoder(text_encoder, tokenizer, seed: int, stage: SandboxStage, work_dir: Path,
                          drop_attribute: float = 0.1, drop_background: float = 0.1, log_every: int = 100) -> dict:
    """Train `text_encoder` in place on the caption objective (resumable from
    `work_dir/text_pretrain.pt`); returns held-out accuracies."""
    shape_ids = shape_token_ids(tokenizer)
    width = text_encoder.config.hidden_size
    torch.manual_seed(seed + 2)
    heads = CaptionHeads(width)
    params = list(text_encoder.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=stage.lr, weight_decay=1e-2)
    text_encoder.train()

    def loss_of(step: int, _) -> torch.Tensor:
        return losses(text_encoder, heads, tokenizer,
                      caption_batch(seed, step, stage.batch_size, drop_attribute, drop_background), shape_ids)[0]

    train_steps("text_pretrain", {"text": text_encoder, "heads": heads, "opt": opt}, opt, stage.steps,
                functools.partial(lr_at, stage), loss_of, Path(work_dir), clip=(params, 1.0), log_every=log_every)
    text_encoder.eval()
    with torch.no_grad():
        held = [caption_batch(seed + 10_000, k, 256, drop_attribute, drop_background,
                              identities=world.ALL_IDENTITIES) for k in range(4)]
        accs = [losses(text_encoder, heads, tokenizer, h, shape_ids)[1] for h in held]
    return {name: float(np.mean([a[name] for a in accs])) for name in HEAD_CLASSES}
