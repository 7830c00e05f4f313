"""Self-checks for lesson 06 (skip connections): the FCN-16s fusion, the bilinear kernel, max-unpooling.

    from lecturelib.checks import lesson06 as checks
    checks.fuse16(my_fuse16)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..deconvnet import max_unpool as _ref_max_unpool
from ..fcn import Upsample, crop_to, fcn16s
from ..upsampling import bilinear_kernel as _ref_bilinear_kernel
from . import CheckFailed, expect_close, run_check


def _ref_fuse16(score_fr: torch.Tensor, score_pool4: torch.Tensor, up2) -> torch.Tensor:
    return crop_to(up2(score_fr), score_pool4.shape[-2:]) + score_pool4


def fuse16(student) -> bool:
    """``student(score_fr, score_pool4, up2)`` must return up2(score_fr) cropped to score_pool4's size, plus it."""
    def test():
        gen = torch.Generator().manual_seed(6)
        up2 = Upsample(3, 2)
        with torch.no_grad():
            up2.up.weight.add_(0.1 * torch.randn(up2.up.weight.shape, generator=gen))  # not just bilinear
        for (h, w), (H, W) in [((2, 2), (4, 4)), ((3, 2), (5, 4)), ((2, 3), (3, 6)), ((1, 1), (1, 2))]:
            fr = torch.randn(2, 3, h, w, generator=gen)
            p4 = torch.randn(2, 3, H, W, generator=gen)
            with torch.no_grad():
                got = student(fr, p4, up2)
                want = _ref_fuse16(fr, p4, up2)
            if not isinstance(got, torch.Tensor):
                raise CheckFailed(f"return a tensor, got {type(got).__name__}.")
            expect_close(got, want, what=f"fusion of a {h}x{w} map with a {H}x{W} skip")
        # plugged into a real FCN-16s head, with non-zero score layers, it must change nothing
        torch.manual_seed(0)
        model = fcn16s(num_classes=4, width=4).eval()
        with torch.no_grad():
            for layer in (model.head.score_fr, model.head.score_pool4):
                layer.weight.normal_(0, 0.3, generator=gen)
            x = torch.rand(1, 3, 45, 38, generator=gen)
            feats = model.backbone(x)
            fr = model.head.score_fr(feats["fc7"])
            p4 = model.head.score_pool4(feats["pool4"])
            expect_close(student(fr, p4, model.head.up2_fr), _ref_fuse16(fr, p4, model.head.up2_fr),
                         what="fusion inside FCN-16s on a 45x38 image")
    return run_check("FCN-16s fusion head", test,
                     hint="Hint: upsampled = up2(score_fr); keep its top-left score_pool4.shape[-2:] window "
                          "(upsampled[..., :H, :W]) and add score_pool4.")


def bilinear_kernel(student) -> bool:
    """``student(k)`` must return the k x k bilinear (tent) kernel, float[k, k]."""
    def test():
        for k in (1, 2, 3, 4, 5, 6, 8, 16):
            got = student(k)
            if not isinstance(got, torch.Tensor):
                got = torch.as_tensor(got)
            expect_close(got, _ref_bilinear_kernel(1, 1, k)[0, 0], what=f"kernel of size {k}")
        # used as a stride-2 transposed convolution it must upsample like F.interpolate (interior)
        w = torch.as_tensor(student(4), dtype=torch.float32)[None, None]
        x = torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(1))
        up = F.conv_transpose2d(x, w, stride=2, padding=1)
        ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        expect_close(up[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], what="2x upsampling with your kernel (interior)")
    return run_check("bilinear kernel", test,
                     hint="Hint: factor = (k + 1) // 2; centre = factor - 1 if k is odd else factor - 0.5; "
                          "1-D tent t[i] = 1 - |i - centre| / factor; the kernel is the outer product t[:, None] * t.")


def max_unpool(student) -> bool:
    """``student(values, indices, size)`` must scatter each value to its switch (like ``F.max_unpool2d``)."""
    def test():
        gen = torch.Generator().manual_seed(3)
        # a tiny hand example: the 4x4 map of the lesson
        x = torch.tensor([[1., 5., 2., 0.], [3., 4., 8., 1.], [0., 2., 6., 7.], [9., 1., 3., 5.]])[None, None]
        v, i = F.max_pool2d(x, 2, 2, return_indices=True)
        want = torch.tensor([[0., 5., 0., 0.], [0., 0., 8., 0.], [0., 0., 0., 7.], [9., 0., 0., 0.]])[None, None]
        expect_close(student(v, i, (4, 4)), want, what="unpooling of the 4x4 example")
        for shape in [(2, 3, 6, 8), (1, 2, 7, 5), (3, 1, 9, 9)]:
            x = torch.randn(*shape, generator=gen)
            v, i = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)
            g = torch.randn(v.shape, generator=gen)  # decoder features, not the pooled values themselves
            expect_close(student(g, i, shape[-2:]), _ref_max_unpool(g, i, shape[-2:]),
                         what=f"unpooling to {shape[-2:]}")
    return run_check("max-unpooling with the pooling switches", test,
                     hint="Hint: out = values.new_zeros(N, C, H * W); out.scatter_(2, indices.flatten(2), "
                          "values.flatten(2)); return out.view(N, C, H, W).")
