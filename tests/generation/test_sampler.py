import numpy as np
import torch

from bas.generation.sampler import generate, initial_latents


def test_latent_of_a_seed_does_not_depend_on_its_batch(tiny_parts):
    together = initial_latents(tiny_parts, [3, 7, 11])
    alone = initial_latents(tiny_parts, [7])
    assert torch.equal(together[1:2], alone)
    assert together.shape == (3, 4, 32, 32)


def test_generate_is_reproducible_and_seed_dependent(tiny_parts):
    kwargs = dict(steps=3, guidance_scale=7.5, batch_size=2)
    first = generate(tiny_parts, ["a photo of a dog", "a photo of a cat"], [1, 2], **kwargs)
    again = generate(tiny_parts, ["a photo of a dog", "a photo of a cat"], [1, 2], **kwargs)
    other = generate(tiny_parts, ["a photo of a dog"], [5], **kwargs)
    assert [im.size for im in first] == [(128, 128)] * 2
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, again))
    assert not np.array_equal(np.asarray(first[0]), np.asarray(other[0]))


def test_ddim_timesteps_are_break_a_scenes(tiny_parts):
    """BaS's code builds DDIM with diffusers' defaults (steps_offset 0): 50 steps run 980..0,
    not SD 2.1's config's 981..1."""
    from bas.generation.sampler import denoise

    seen = []

    def record(i, t, latents):
        seen.append(int(t))
        return latents

    text = torch.zeros(1, 77, tiny_parts.text_encoder.config.hidden_size)
    denoise(tiny_parts, text, text, initial_latents(tiny_parts, [0]), 5, 7.5, step_callback=record)
    assert seen == [800, 600, 400, 200, 0]
    scheduler = tiny_parts.sampler_scheduler
    scheduler.set_timesteps(50)
    assert scheduler.timesteps[0] == 980 and scheduler.timesteps[-1] == 0
