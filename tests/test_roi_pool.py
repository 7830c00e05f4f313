"""RoI max pooling from scratch: equal to torchvision.ops.roi_pool, forward and backward."""
from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_pool

from lecturelib.roi_pool import roi_bins, roi_max_pool


def random_rois(gen, n_images, n, H, W, scale, dtype):
    """Random RoIs in input pixels, some reaching past the map, some tiny, some with .5 coordinates."""
    side = torch.tensor([W, H, W, H], dtype=dtype) / scale
    a = torch.rand(n, 4, generator=gen, dtype=dtype) * side * 1.2 - side * 0.1
    boxes = torch.cat([torch.minimum(a[:, :2], a[:, 2:]), torch.maximum(a[:, :2], a[:, 2:])], 1)
    boxes[: n // 4] = torch.round(boxes[: n // 4] * 2) / 2              # halves: C's round goes away from zero
    index = torch.randint(0, n_images, (n, 1), generator=gen).to(dtype)
    return torch.cat([index, boxes], 1)


@pytest.mark.parametrize("seed", range(6))
def test_forward_equals_torchvision(seed):
    gen = torch.Generator().manual_seed(seed)
    H, W = int(torch.randint(3, 12, (1,), generator=gen)), int(torch.randint(3, 12, (1,), generator=gen))
    scale = [1.0, 0.5, 0.25][seed % 3]
    out_size = [(2, 2), (3, 5), (7, 7)][seed % 3]
    feats = torch.randn(2, 3, H, W, generator=gen)
    rois = random_rois(gen, 2, 12, H, W, scale, torch.float32)
    ours = roi_max_pool(feats, rois, out_size, scale)
    ref = roi_pool(feats, rois, out_size, scale)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_hand_made_bins_on_a_5x5_map():
    # a 5x5 map, the RoI covering cells 0..4 (pixels 0..4 at scale 1), 2x2 bins: rows 0..3 and 2..5 (ceil/floor)
    x = torch.arange(25.0).reshape(1, 1, 5, 5)
    bins = roi_bins(torch.tensor([0.0, 0.0, 4.0, 4.0]), (2, 2), 1.0, (5, 5))
    assert bins == [[(0, 3, 0, 3), (0, 3, 2, 5)], [(2, 5, 0, 3), (2, 5, 2, 5)]]
    out = roi_max_pool(x, torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]]), 2)
    assert out.flatten().tolist() == [12.0, 14.0, 22.0, 24.0]


@pytest.mark.parametrize("seed", range(3))
def test_gradient_goes_to_the_argmax_like_torchvision(seed):
    gen = torch.Generator().manual_seed(100 + seed)
    feats = torch.randn(2, 2, 6, 7, generator=gen, dtype=torch.float64)
    rois = random_rois(gen, 2, 5, 6, 7, 0.5, torch.float64)
    ours_in = feats.clone().requires_grad_()
    ref_in = feats.clone().requires_grad_()
    weight = torch.randn(5, 2, 3, 2, generator=gen, dtype=torch.float64)
    (roi_max_pool(ours_in, rois, (3, 2), 0.5) * weight).sum().backward()
    (roi_pool(ref_in, rois, (3, 2), 0.5) * weight).sum().backward()
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=0, atol=1e-12)
    # "back-propagates like max pooling": numerical and analytical gradients agree (no ties in random float64)
    assert torch.autograd.gradcheck(lambda f: roi_max_pool(f, rois, (3, 2), 0.5), (ours_in.detach().requires_grad_(),))


def test_overlapping_rois_sum_their_gradients():
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    x[0, 0, 1, 1] = 5.0                                            # the maximum of both RoIs' single bin
    x.requires_grad_()
    rois = torch.tensor([[0, 0, 0, 2, 2], [0, 1, 1, 3, 3]], dtype=torch.float64)
    roi_max_pool(x, rois, 1).sum().backward()
    assert x.grad[0, 0, 1, 1] == 2.0 and x.grad.sum() == 2.0


def test_bad_input():
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match=r"\[R, 5\]"):
        roi_max_pool(x, torch.zeros(2, 4), 2)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        roi_max_pool(x[0], torch.zeros(1, 5), 2)
    with pytest.raises(ValueError, match="image indices"):
        roi_max_pool(x, torch.tensor([[3.0, 0, 0, 2, 2]]), 2)
    assert roi_max_pool(x, torch.zeros(0, 5), (2, 3)).shape == (0, 1, 2, 3)
