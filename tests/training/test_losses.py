"""Loss terms on hand-made tensors."""

import pytest
import torch
import torch.nn.functional as F

from bas.training.losses import bas_attention_loss, downsample_mask, masked_diffusion_loss, prior_loss


def square_mask(size: int, x0: int, y0: int, x1: int, y1: int) -> torch.Tensor:
    mask = torch.zeros(size, size)
    mask[y0:y1, x0:x1] = 1
    return mask


def test_downsample_mask_is_nearest_and_binary():
    mask = square_mask(64, 16, 8, 48, 40)
    small = downsample_mask(mask, 16)
    assert small.shape == (16, 16)
    assert set(small.unique().tolist()) <= {0.0, 1.0}
    want = F.interpolate(mask[None, None], size=(16, 16), mode="nearest")[0, 0]
    assert torch.equal(small, want)
    assert small[2:10, 4:12].min() == 1 and small.sum() == 8 * 8


def test_attention_loss_is_zero_when_map_equals_mask():
    masks = torch.stack([square_mask(64, 0, 0, 32, 32), square_mask(64, 32, 16, 64, 64)])   # (2, 64, 64)
    maps = downsample_mask(masks, 16).reshape(2, 256) * torch.tensor([[0.2], [0.05]])       # any scale
    assert bas_attention_loss(maps, masks).item() == 0.0


def test_attention_loss_divides_by_max_and_sums_over_tokens():
    masks = torch.stack([square_mask(16, 0, 0, 8, 8), square_mask(16, 0, 0, 16, 4)])       # 1/4 of the image each
    uniform = torch.full((2, 256), 1.0 / 77)     # normalised to 1 everywhere: error (1 - M)^2
    loss = bas_attention_loss(uniform, masks)
    assert loss.item() == pytest.approx(0.75 + 0.75)
    one = bas_attention_loss(uniform[:1], masks[:1])
    assert one.item() == pytest.approx(0.75)


def test_attention_loss_penalises_attention_on_other_concepts():
    own, other = square_mask(16, 0, 0, 8, 16), square_mask(16, 8, 0, 16, 16)
    on_own = own.reshape(1, 256) + 0.01
    leaking = (own + other).reshape(1, 256)
    assert bas_attention_loss(leaking, own[None]) > bas_attention_loss(on_own, own[None])


def test_masked_loss_ignores_everything_outside_the_mask():
    torch.manual_seed(0)
    pred, target = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    mask = square_mask(8, 2, 2, 6, 6)[None, None]                        # (1, 1, 8, 8)
    changed_outside = pred + (1 - mask) * 100.0
    changed_inside = pred + mask * 0.5
    for normalise in ("all_elements", "mask_area"):
        base = masked_diffusion_loss(pred, target, mask, normalise)
        assert masked_diffusion_loss(changed_outside, target, mask, normalise) == base
        assert masked_diffusion_loss(changed_inside, target, mask, normalise) != base


def test_masked_loss_normalisations():
    pred, target = torch.zeros(1, 4, 8, 8), torch.ones(1, 4, 8, 8)
    mask = square_mask(8, 0, 0, 4, 4)[None, None]                        # 16 of 64 pixels
    # BaS code: the mean over all 256 elements, so a quarter-image mask gives a quarter.
    assert masked_diffusion_loss(pred, target, mask, "all_elements").item() == pytest.approx(0.25)
    assert masked_diffusion_loss(pred, target, mask, "mask_area").item() == pytest.approx(1.0)
    assert masked_diffusion_loss(pred, target, None).item() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        masked_diffusion_loss(pred, target, mask, "pixels")


def test_prior_loss_is_plain_mse():
    pred, target = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    assert prior_loss(pred, target).item() == pytest.approx(F.mse_loss(pred, target).item())
