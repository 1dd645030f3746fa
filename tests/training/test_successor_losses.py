"""The successors' loss terms (MIFO, Textual Localization, Separate-and-Enhance) on hand-made tensors."""

import pytest
import torch
import torch.nn.functional as F

from bas.training.losses import (gaussian_kernel, mifo_penalty_loss, mifo_reward_loss, min_max_normalise,
                                 resize_mask_bilinear, sne_enhance_loss, sne_separate_loss, tl_attention_loss,
                                 tl_guidance_maps)


def square(size: int, x0: int, y0: int, x1: int, y1: int) -> torch.Tensor:
    mask = torch.zeros(size, size)
    mask[y0:y1, x0:x1] = 1
    return mask


# --------------------------------------------------------------------------- MIFO


def test_resize_is_bilinear_with_soft_edges():
    mask = square(64, 16, 16, 42, 42)                 # 42 is not on the 4-pixel grid: a soft edge
    small = resize_mask_bilinear(mask, 16)
    want = F.interpolate(mask[None, None], size=(16, 16), mode="bilinear", align_corners=False)[0, 0]
    assert torch.equal(small, want)
    assert ((small > 0) & (small < 1)).any()


def test_mifo_penalty_is_zero_inside_the_mask_and_grows_with_leakage():
    mask = square(32, 0, 0, 16, 32)[None]                           # (1, 32, 32): left half
    inside = resize_mask_bilinear(mask, 8).reshape(1, 64) * 0.03   # attention only where the mask is 1
    assert mifo_penalty_loss([inside], mask).item() == 0.0
    values = []
    for leak in (0.0, 0.01, 0.02, 0.05):
        maps = inside + leak * (1 - resize_mask_bilinear(mask, 8).reshape(1, 64))
        values.append(mifo_penalty_loss([maps], mask).item())
    assert values[0] == 0.0 and all(a < b for a, b in zip(values, values[1:]))
    # mean((A * (1 - M))^2) over pixels: 32 of 64 pixels leak 0.05.
    assert values[-1] == pytest.approx(0.05 ** 2 * 32 / 64, rel=1e-5)


def test_mifo_losses_sum_over_layers_and_tokens():
    masks = torch.stack([square(32, 0, 0, 16, 32), square(32, 16, 0, 32, 32)])   # (2, 32, 32)
    maps8 = torch.rand(2, 64) * 0.1
    maps16 = torch.rand(2, 256) * 0.1
    per_token = [mifo_penalty_loss([maps8[i:i + 1]], masks[i:i + 1]) + mifo_penalty_loss([maps16[i:i + 1]], masks[i:i + 1])
                 for i in range(2)]
    assert mifo_penalty_loss([maps8, maps16], masks).item() == pytest.approx(sum(per_token).item(), rel=1e-6)


def test_mifo_reward_wants_half_the_mask():
    mask = square(32, 8, 8, 24, 24)[None]
    half = 0.5 * resize_mask_bilinear(mask, 16).reshape(1, 256)
    assert mifo_reward_loss([half], mask, target_scale=0.5).item() == 0.0
    assert mifo_reward_loss([2 * half], mask, target_scale=0.5).item() > 0
    # The reward does not punish leakage as the penalty does: a small leak costs it little.
    outside = 1 - resize_mask_bilinear(mask, 16).reshape(1, 256)
    leak = half + 0.01 * outside
    assert mifo_reward_loss([leak], mask, target_scale=0.5).item() == pytest.approx(((0.01 * outside) ** 2).mean().item(), rel=1e-5)


# --------------------------------------------------------------------------- Textual Localization


def test_guidance_maps_are_min_max_normalised_and_averaged_over_resolutions():
    low = torch.zeros(1, 16)
    low[0, 5] = 0.2                                          # one hot pixel at 4x4
    high = torch.linspace(0.01, 0.05, 64)[None]              # a ramp at 8x8
    guidance = tl_guidance_maps([low, high], 32)
    assert guidance.shape == (1, 32, 32)
    assert guidance.min() >= 0 and guidance.max() <= 1
    each = [min_max_normalise(F.interpolate(m.reshape(1, 1, s, s), size=(32, 32), mode="bilinear",
                                            align_corners=False)[:, 0]) for m, s in ((low, 4), (high, 8))]
    assert torch.allclose(guidance, (each[0] + each[1]) / 2)


def test_tl_hard_is_zero_when_the_map_is_the_mask():
    mask = square(64, 16, 16, 48, 40)[None]
    target = min_max_normalise(resize_mask_bilinear(mask, 32))
    assert tl_attention_loss(target, mask).item() == 0.0
    assert tl_attention_loss(torch.zeros_like(target), mask).item() > 0


def test_tl_soft_ignores_the_error_inside_the_mask():
    mask = square(64, 16, 16, 48, 40)[None]
    target = min_max_normalise(resize_mask_bilinear(mask, 32))            # (1, 32, 32)
    outside = target == 0
    guidance = target.clone()
    guidance[outside] = 0.3                                               # leakage outside
    worse_inside = guidance.clone()
    worse_inside[~outside] = 0.0                                          # and nothing inside
    soft = tl_attention_loss(guidance, mask, soft=True)
    assert soft.item() == pytest.approx(0.3 ** 2 * outside.float().mean().item(), rel=1e-5)
    assert tl_attention_loss(worse_inside, mask, soft=True).item() == pytest.approx(soft.item(), rel=1e-6)
    assert tl_attention_loss(worse_inside, mask).item() > tl_attention_loss(guidance, mask).item()
    assert tl_attention_loss(target, mask, soft=True).item() == 0.0


# --------------------------------------------------------------------------- Separate-and-Enhance


def test_separate_loss_is_zero_for_disjoint_maps_and_largest_for_identical_ones():
    left = torch.zeros(2, 64)                          # (heads, HW)
    left[:, :32] = 0.03
    right = torch.zeros(2, 64)
    right[:, 32:] = 0.03
    assert sne_separate_loss(torch.stack([left, right])).item() == 0.0
    identical = sne_separate_loss(torch.stack([left, left])).item()
    assert identical == pytest.approx(0.03 / 2)
    for shift in (8, 16, 24):                          # partly overlapping maps
        moved = torch.roll(left, shift, dims=1)
        value = sne_separate_loss(torch.stack([left, moved])).item()
        assert 0.0 <= value <= identical
    one_head = left.clone()
    one_head[1] = 0                                    # overlap in a single head is enough: max over heads
    assert sne_separate_loss(torch.stack([left, one_head])).item() == pytest.approx(identical)


def test_separate_loss_averages_pairs_and_needs_two_tokens():
    a, b, c = (torch.rand(2, 16) for _ in range(3))
    pairs = [sne_separate_loss(torch.stack(p)) for p in ((a, b), (a, c), (b, c))]
    assert sne_separate_loss(torch.stack([a, b, c])).item() == pytest.approx(sum(pairs).item() / 3)
    with pytest.raises(ValueError):
        sne_separate_loss(a[None])


def test_gaussian_kernel_is_normalised_and_symmetric():
    kernel = gaussian_kernel(3, 0.5)
    assert kernel.shape == (3, 3) and kernel.sum().item() == pytest.approx(1.0)
    assert torch.equal(kernel, kernel.T) and torch.equal(kernel, kernel.flip(0))
    assert kernel[1, 1] == kernel.max()


def test_enhance_loss_falls_as_the_weaker_peak_rises():
    strong = torch.zeros(1, 2, 8, 8)
    strong[0, 0, 4, 4] = 0.9
    values = []
    for peak in (0.1, 0.3, 0.5):
        weak = torch.zeros(1, 2, 8, 8)
        weak[0, 1, 2, 2] = peak
        values.append(sne_enhance_loss(torch.cat([strong, weak]), 3, 0.5).item())
    assert values[0] > values[1] > values[2]
    center = gaussian_kernel(3, 0.5)[1, 1].item()
    assert values[2] == pytest.approx(1 - 0.5 * center, rel=1e-5)       # 1 - the smoothed weak peak
    stronger = strong * 1.1
    weak = torch.zeros(1, 2, 8, 8)
    weak[0, 1, 2, 2] = 0.5
    assert sne_enhance_loss(torch.cat([stronger, weak]), 3, 0.5).item() == pytest.approx(values[2])  # only the weaker counts
