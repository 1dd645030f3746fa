"""Training samples: which concepts, which prompt, which latents and masks.

Two sources, chosen by a recipe's `data.source`:
- `SceneSource` (BaS): the real image with its masks. The image and its mirror image are
  VAE-encoded once; each sample draws its latent from the cached posterior (mean + std x
  noise, exactly what `latent_dist.sample()` gives), so no step runs the VAE.
  `cache_latents=False` (`training.cache_latents`) encodes the image every sample instead,
  as the official BaS code does: the same draws, only slower (kept to benchmark against).
- `MaskedCollectionSource` (TI-m, DB-m, CD-m): the chosen concepts cut out with their masks
  and pasted on a random solid colour. Every sample is a new image, so it is VAE-encoded
  per sample (a few ms on a GPU at 512 px).

Concepts are drawn by `ConceptSampler`: union sampling (k ~ U{1..N}, then k distinct
concepts in random order) or a fixed k. Randomness comes from a `random.Random` for choices
and a CPU `torch.Generator` for noise, both seeded by the engine, so runs repeat exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional, Protocol, Sequence, Union

import numpy as np
import torch
from PIL import Image


class SceneLike(Protocol):
    """What training needs of a scene (`bas.scenes.Scene` has it)."""

    scene_id: str
    image: Image.Image          # RGB, square
    masks: list                 # list[np.ndarray (H, W) bool], one per concept
    class_names: list[str]
    content_hash: str


@dataclass
class Sample:
    """One training example."""

    concepts: list[int]         # concept indices, in prompt order
    prompt: str
    latents: torch.Tensor       # (1, 4, h, w), scaled by the VAE scaling factor
    masks: torch.Tensor         # (k, H, W) float 0/1 at scene resolution, flipped with the image
    flipped: bool


class ConceptSampler:
    """Which concepts a sample shows: union sampling, or always `k` of them."""

    def __init__(self, num_concepts: int, concepts_per_sample: Union[str, int], rng: random.Random) -> None:
        if num_concepts < 1:
            raise ValueError("a scene needs at least one concept")
        self.num_concepts = num_concepts
        self.concepts_per_sample = concepts_per_sample
        self.rng = rng

    def draw(self) -> list[int]:
        n = self.num_concepts
        if self.concepts_per_sample == "union":
            k = self.rng.randint(1, n)             # k ~ U{1..N}
        else:
            k = min(int(self.concepts_per_sample), n)
        return self.rng.sample(range(n), k)        # k distinct concepts, random order


def make_prompt(template: str, joiner: str, tokens: Sequence[str]) -> str:
    """"a photo of {tokens}" with "<asset1> and <asset0>" for tokens."""
    return template.format(tokens=joiner.join(tokens))


def image_to_tensor(image: Image.Image, resolution: int) -> torch.Tensor:
    """PIL RGB -> (3, R, R) in [-1, 1], resized (bicubic) to the model's resolution if needed."""
    image = image.convert("RGB")
    if image.size != (resolution, resolution):
        image = image.resize((resolution, resolution), Image.BICUBIC)
    array = np.asarray(image, dtype=np.float32) / 255.0                        # (R, R, 3)
    return torch.from_numpy(array).permute(2, 0, 1) * 2.0 - 1.0                # (3, R, R)


def masks_to_tensor(masks: Sequence[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(m, dtype=bool) for m in masks])).float()  # (N, H, W)


@torch.no_grad()
def encode_posterior(vae, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior of images (n, 3, R, R): (mean, std), each (n, 4, h, w), unscaled."""
    dist = vae.encode(images.to(vae.device, vae.dtype)).latent_dist
    return dist.mean.float(), dist.std.float()


def sample_posterior(mean: torch.Tensor, std: torch.Tensor, scaling: float,
                     generator: torch.Generator) -> torch.Tensor:
    """mean + std x noise (DiagonalGaussianDistribution.sample), times the scaling factor."""
    noise = torch.randn(mean.shape, generator=generator).to(mean.device)       # (n, 4, h, w)
    return (mean + std * noise) * scaling


class SceneSource:
    """Samples of the real image: cached posteriors of the image and its mirror image."""

    def __init__(self, scene: SceneLike, parts, concept_sampler: ConceptSampler, tokens: Sequence[str],
                 template: str, joiner: str, flip_p: float, rng: random.Random, generator: torch.Generator,
                 device: torch.device, cache_latents: bool = True) -> None:
        image = image_to_tensor(scene.image, parts.resolution)                 # (3, R, R)
        self.views = torch.stack([image, torch.flip(image, dims=[-1])])        # (2, 3, R, R)
        self.vae = parts.vae
        self.cached = cache_latents
        if cache_latents:
            self.mean, self.std = encode_posterior(parts.vae, self.views)      # (2, 4, h, w) each
        self.masks = masks_to_tensor(scene.masks).to(device)                   # (N, H, W)
        self.scaling = parts.vae_scaling_factor
        self.concepts, self.tokens = concept_sampler, list(tokens)
        self.template, self.joiner, self.flip_p = template, joiner, flip_p
        self.rng, self.generator = rng, generator

    def draw(self) -> Sample:
        concepts = self.concepts.draw()
        flipped = self.rng.random() < self.flip_p
        view = 1 if flipped else 0
        if self.cached:
            mean, std = self.mean[view : view + 1], self.std[view : view + 1]  # (1, 4, h, w) each
        else:
            mean, std = encode_posterior(self.vae, self.views[view : view + 1])
        latents = sample_posterior(mean, std, self.scaling, self.generator)     # (1, 4, h, w)
        masks = self.masks[concepts]                                            # (k, H, W)
        if flipped:
            masks = torch.flip(masks, dims=[-1])
        prompt = make_prompt(self.template, self.joiner, [self.tokens[i] for i in concepts])
        return Sample(concepts, prompt, latents, masks, flipped)


class MaskedCollectionSource:
    """Samples of BaS's masked collection: chosen concepts on a random solid colour, random flip."""

    def __init__(self, scene: SceneLike, parts, concept_sampler: ConceptSampler, tokens: Sequence[str],
                 template: str, joiner: str, flip_p: float, rng: random.Random, generator: torch.Generator,
                 device: torch.device, cache_latents: bool = True) -> None:
        del cache_latents  # every sample is a new image: nothing to cache
        self.pixels = np.asarray(scene.image.convert("RGB"), dtype=np.uint8)    # (H, W, 3)
        self.mask_arrays = [np.asarray(m, dtype=bool) for m in scene.masks]
        self.masks = masks_to_tensor(scene.masks).to(device)                   # (N, H, W)
        self.parts = parts
        self.concepts, self.tokens = concept_sampler, list(tokens)
        self.template, self.joiner, self.flip_p = template, joiner, flip_p
        self.rng, self.generator = rng, generator

    def compose(self, concepts: Sequence[int], colour: tuple[int, int, int], flipped: bool) -> Image.Image:
        keep = np.zeros(self.pixels.shape[:2], dtype=bool)                      # (H, W)
        for i in concepts:
            keep |= self.mask_arrays[i]
        canvas = np.empty_like(self.pixels)
        canvas[:] = np.asarray(colour, dtype=np.uint8)
        canvas[keep] = self.pixels[keep]
        image = Image.fromarray(canvas)
        return image.transpose(Image.FLIP_LEFT_RIGHT) if flipped else image

    def draw(self) -> Sample:
        concepts = self.concepts.draw()
        colour = (self.rng.randrange(256), self.rng.randrange(256), self.rng.randrange(256))
        flipped = self.rng.random() < self.flip_p
        image = image_to_tensor(self.compose(concepts, colour, flipped), self.parts.resolution)
        mean, std = encode_posterior(self.parts.vae, image[None])                # (1, 4, h, w) each
        latents = sample_posterior(mean, std, self.parts.vae_scaling_factor, self.generator)
        masks = self.masks[concepts]                                            # (k, H, W)
        if flipped:
            masks = torch.flip(masks, dims=[-1])
        prompt = make_prompt(self.template, self.joiner, [self.tokens[i] for i in concepts])
        return Sample(concepts, prompt, latents, masks, flipped)


SOURCES = {"scene": SceneSource, "masked_collection": MaskedCollectionSource}


class PriorSource:
    """Class images for prior preservation: posteriors cached once, visited in a fresh random
    order each pass (the BaS code's shuffled DataLoader over its class images).
    `cache_latents=False` encodes the drawn image every time instead (the official code)."""

    def __init__(self, parts, images: Sequence[Image.Image], rng: random.Random, generator: torch.Generator,
                 encode_batch: int = 8, cache_latents: bool = True) -> None:
        self.vae = parts.vae
        self.cached = cache_latents
        self.count = len(images)
        if cache_latents:
            means, stds = [], []
            for start in range(0, len(images), encode_batch):
                batch = torch.stack([image_to_tensor(im, parts.resolution)
                                     for im in images[start : start + encode_batch]])
                mean, std = encode_posterior(parts.vae, batch)
                means.append(mean)
                stds.append(std)
            self.mean, self.std = torch.cat(means), torch.cat(stds)            # (n, 4, h, w) each
        else:
            self.pixels = torch.stack([image_to_tensor(im, parts.resolution) for im in images])  # (n, 3, R, R)
        self.scaling = parts.vae_scaling_factor
        self.rng, self.generator = rng, generator
        self.order: list[int] = []

    def __len__(self) -> int:
        return self.count

    def draw(self) -> tuple[int, torch.Tensor]:
        if not self.order:
            self.order = list(range(len(self)))
            self.rng.shuffle(self.order)
        index = self.order.pop(0)
        if self.cached:
            mean, std = self.mean[index : index + 1], self.std[index : index + 1]   # (1, 4, h, w) each
        else:
            mean, std = encode_posterior(self.vae, self.pixels[index : index + 1])
        latents = sample_posterior(mean, std, self.scaling, self.generator)     # (1, 4, h, w)
        return index, latents


def prompt_ids(tokenizer, prompts: Sequence[str], device: Optional[torch.device] = None) -> torch.Tensor:
    """Token ids padded to the tokenizer's length, (B, 77)."""
    ids = tokenizer(list(prompts), padding="max_length", truncation=True,
                    max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    return ids.to(device) if device is not None else ids
