"""Self-checks for lesson 08 (instance segmentation): mask IoU, masking with the mean image, anchor decoding."""
from __future__ import annotations

import torch

from . import CheckFailed, expect_close, run_check


def _mask_cases() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    a = torch.zeros(2, 6, 6, dtype=torch.bool)
    a[0, 0:3, 0:3] = True
    a[1, 2:6, 1:5] = True
    b = torch.zeros(3, 6, 6, dtype=torch.bool)
    b[0, 0:3, 0:3] = True                     # identical to a[0]
    b[1, 1:4, 1:4] = True                     # partial overlap
    # b[2] stays empty: IoU 0 with everything
    rand_a = torch.rand(4, 9, 7, generator=g) > 0.5
    rand_b = torch.rand(5, 9, 7, generator=g) > 0.6
    return [(a, b), (rand_a, rand_b), (rand_a[:1], rand_a[:1])]


def mask_iou(student) -> bool:
    """Check ``student(a bool[N, H, W], b bool[M, H, W]) -> float[N, M]`` against ``lecturelib.mask_ap.mask_iou``."""
    from ..mask_ap import mask_iou as reference

    def test():
        for i, (a, b) in enumerate(_mask_cases()):
            got = student(a, b)
            if not isinstance(got, torch.Tensor):
                raise CheckFailed(f"case {i + 1}: return a tensor, got {type(got).__name__}.")
            expect_close(got, reference(a, b), what=f"case {i + 1} (a: {tuple(a.shape)}, b: {tuple(b.shape)})")

    return run_check("mask IoU", test, "Hint: intersection = (a_i & b_j).sum(), union = (a_i | b_j).sum(); "
                     "flatten to [N, HW] and use a matrix product for all pairs; 0 when the union is empty.")


def mask_with_mean(student) -> bool:
    """Check ``student(crops [N, 3, h, w], masks [N, 1, h, w], mean [3]) -> [N, 3, h, w]`` against SDS's."""
    from ..sds import mask_with_mean as reference

    def test():
        g = torch.Generator().manual_seed(3)
        crops = torch.rand(4, 3, 8, 8, generator=g)
        masks = (torch.rand(4, 1, 8, 8, generator=g) > 0.5).float()
        mean = torch.tensor([0.48, 0.45, 0.41])
        got = student(crops, masks, mean)
        expect_close(got, reference(crops, masks, mean), what="masked crops")
        inside = masks.expand_as(crops) > 0
        if not torch.allclose(got[inside], crops[inside]):
            raise CheckFailed("pixels on the region (mask = 1) must keep the crop's values.")

    return run_check("background masked out by the mean image", test,
                     "Hint: crops * masks + mean[:, None, None] * (1 - masks) (broadcasting does the rest).")


def decode_boxes(student) -> bool:
    """Check ``student(anchors [N, 4], deltas [N, 4]) -> boxes [N, 4]`` against ``lecturelib.cascade.decode_boxes``."""
    from ..cascade import decode_boxes as reference

    def test():
        anchors = torch.tensor([[0.0, 0.0, 10.0, 20.0], [8.0, 8.0, 24.0, 16.0], [30.0, 2.0, 62.0, 34.0]])
        zero = torch.zeros_like(anchors)
        expect_close(student(anchors, zero), anchors, what="zero offsets (must give the anchors back)")
        deltas = torch.tensor([[0.1, -0.5, 0.0, 0.6931], [-0.2, 0.3, -0.4, 0.2], [0.0, 0.0, 0.5, -0.5]])
        expect_close(student(anchors, deltas), reference(anchors, deltas), what="decoded boxes", atol=1e-4)

    return run_check("anchor offset decoding", test,
                     "Hint: centre x = x_a + dx * w_a, width = w_a * exp(dw) (the same for y, h); "
                     "then back to corners x0 = x - w / 2, x1 = x + w / 2.")
