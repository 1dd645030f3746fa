"""Union sampling, the two data sources and prompt handling."""

import random
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from bas.attention import token_positions
from bas.training.data import ConceptSampler, MaskedCollectionSource, SceneSource, make_prompt, prompt_ids


def test_union_sampling_draws_k_uniformly_and_distinct_concepts():
    n, draws = 3, 30000
    sampler = ConceptSampler(n, "union", random.Random(0))
    picks = [sampler.draw() for _ in range(draws)]
    sizes = Counter(len(p) for p in picks)
    assert set(sizes) == {1, 2, 3}
    for k in (1, 2, 3):  # k ~ U{1..3}: 10000 expected each, sd ~82
        assert abs(sizes[k] / draws - 1 / 3) < 0.015, sizes
    assert all(len(set(p)) == len(p) and set(p) <= {0, 1, 2} for p in picks)
    # Random order: each concept leads a two-concept prompt equally often, both orders occur.
    pairs = Counter(tuple(p) for p in picks if len(p) == 2)
    assert len(pairs) == 6 and min(pairs.values()) > 0.8 * max(pairs.values())
    firsts = Counter(p[0] for p in picks)
    assert all(abs(firsts[i] / draws - 1 / 3) < 0.015 for i in range(3))


def test_fixed_k_sampling():
    one = ConceptSampler(4, 1, random.Random(1))
    picks = [one.draw() for _ in range(2000)]
    assert all(len(p) == 1 for p in picks)
    assert set(Counter(p[0] for p in picks)) == {0, 1, 2, 3}
    assert all(len(ConceptSampler(2, 5, random.Random(2)).draw()) == 2 for _ in range(10))   # k capped at N


def test_prompt_and_token_positions(tiny_parts):
    prompt = make_prompt("a photo of {tokens}", " and ", ["<asset1>", "<asset0>"])
    assert prompt == "a photo of <asset1> and <asset0>"
    ids = torch.tensor([49406, 320, 1125, 539, 50000, 537, 49999, 49407] + [0] * 69)
    assert token_positions(ids, [49999, 50000]) == [6, 4]
    with pytest.raises(ValueError, match="occurs 0 times"):
        token_positions(ids, [12345])
    assert prompt_ids(tiny_parts.tokenizer, ["a photo"]).shape == (1, 77)


def _scene(side=64):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8))
    left = np.zeros((side, side), bool)
    left[:, : side // 4] = True                     # a concept at the left edge
    centre = np.zeros((side, side), bool)
    centre[side // 4 : side // 2, side // 2 :] = True
    return type("SceneStub", (), dict(scene_id="stub", image=image, masks=[left, centre],
                                      class_names=["cat", "dog"], content_hash="x"))()


def _source(cls, parts, scene, flip_p=0.5, seed=0):
    rng = random.Random(seed)
    return cls(scene, parts, ConceptSampler(2, "union", rng), ["<asset0>", "<asset1>"], "a photo of {tokens}",
               " and ", flip_p, rng, torch.Generator().manual_seed(seed), torch.device("cpu"))


class CountingVae:
    """The tiny VAE, counting `encode` calls."""

    def __init__(self, vae):
        self.vae, self.calls = vae, 0
        self.device, self.dtype = vae.device, vae.dtype

    def encode(self, x):
        self.calls += 1
        return self.vae.encode(x)


def test_scene_source_encodes_once_and_flips_jointly(tiny_parts):
    counting = CountingVae(tiny_parts.vae)
    parts = type("Parts", (), dict(vae=counting, resolution=tiny_parts.resolution,
                                   vae_scaling_factor=tiny_parts.vae_scaling_factor))()
    scene = _scene()
    source = _source(SceneSource, parts, scene)
    samples = [source.draw() for _ in range(400)]
    assert counting.calls == 1                       # image and mirror image, once, together
    flips = sum(s.flipped for s in samples)
    assert 160 < flips < 240                         # p = 0.5
    for s in samples[:50]:
        want = torch.from_numpy(np.stack([scene.masks[i] for i in s.concepts])).float()
        if s.flipped:
            want = torch.flip(want, dims=[-1])
        assert torch.equal(s.masks, want)
        assert s.prompt == "a photo of " + " and ".join(f"<asset{i}>" for i in s.concepts)
        side = tiny_parts.resolution // tiny_parts.vae_scale_factor
        assert s.latents.shape == (1, 4, side, side)
    # A flipped sample's latent comes from the mirror image's posterior, not the original's.
    flipped = next(s for s in samples if s.flipped)
    plain = next(s for s in samples if not s.flipped)
    scale = tiny_parts.vae_scaling_factor
    assert (flipped.latents / scale - source.mean[1]).abs().mean() < (flipped.latents / scale - source.mean[0]).abs().mean()
    assert (plain.latents / scale - source.mean[0]).abs().mean() < (plain.latents / scale - source.mean[1]).abs().mean()


def test_masked_collection_pastes_chosen_concepts_on_a_solid_colour(tiny_parts):
    scene = _scene()
    source = _source(MaskedCollectionSource, tiny_parts, scene)
    pixels = np.asarray(scene.image)
    composed = np.asarray(source.compose([1], (10, 200, 30), flipped=False))
    inside = scene.masks[1]
    assert (composed[inside] == pixels[inside]).all()
    assert (composed[~inside] == np.array([10, 200, 30], np.uint8)).all()
    flipped = np.asarray(source.compose([0, 1], (0, 0, 0), flipped=True))
    both = scene.masks[0] | scene.masks[1]
    assert (flipped[:, ::-1][both] == pixels[both]).all()
    colours = {tuple(np.asarray(source.compose([0], c, False))[0, -1]) for c in [(1, 2, 3), (4, 5, 6)]}
    assert colours == {(1, 2, 3), (4, 5, 6)}
    sample = source.draw()
    assert sample.latents.shape[1] == 4 and sample.masks.shape[0] == len(sample.concepts)
