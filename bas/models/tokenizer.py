"""The CLIP BPE tokenizer, built offline from the vocabulary that open_clip ships.

SD 2.1's tokenizer is OpenAI CLIP's byte-level BPE (49408 tokens). open_clip bundles the
same merges as `bpe_simple_vocab_16e6.txt.gz`; we rebuild `vocab.json` and `merges.txt`
from it exactly as CLIP's `SimpleTokenizer` does, so the `tiny` profile tokenizes text the
way the real model does, token id for token id.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

# CLIP keeps the first 49152 - 256 - 2 merges of the file (SimpleTokenizer.__init__).
_NUM_MERGES = 49152 - 256 - 2


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def bpe_vocab_path() -> Path:
    import open_clip   # open_clip: only for its vocabulary file (bas.models.tiny imports this module)

    return Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"


def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    lines = gzip.open(bpe_vocab_path()).read().decode("utf-8").split("\n")
    merges = lines[1 : _NUM_MERGES + 1]
    units = list(_bytes_to_unicode().values())
    vocab = units + [u + "</w>" for u in units] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def write_clip_tokenizer(directory: Path, pad_token: str = "!") -> None:
    """Write a `CLIPTokenizer` directory as SD 2.1 has it (pad token "!", 77 positions)."""
    from transformers import CLIPTokenizer   # transformers: only when a tokenizer is written

    vocab, merges = clip_vocab_and_merges()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(
        vocab=str(directory / "vocab.json"), merges=str(directory / "merges.txt"),
        pad_token=pad_token, model_max_length=77,
    )
    tokenizer.save_pretrained(directory)
