"""Self-checks for lesson 02 (fully convolutional networks)."""
from __future__ import annotations

import torch
import torch.nn as nn

from . import CheckFailed, expect_close, expect_equal, run_check


def linear_to_conv(student) -> bool:
    """``student(linear, in_channels, kernel_size) -> nn.Conv2d`` computing the same scores."""
    def test():
        torch.manual_seed(0)
        for c, kh, kw, out in [(4, 3, 3, 5), (2, 2, 5, 3), (16, 1, 1, 7)]:
            linear = nn.Linear(c * kh * kw, out)
            conv = student(linear, c, (kh, kw) if kh != kw else kh)
            if not isinstance(conv, nn.Conv2d):
                raise CheckFailed(f"return an nn.Conv2d, got {type(conv).__name__}.")
            x = torch.randn(2, c, kh, kw)
            with torch.no_grad():
                got = conv(x)
                want = linear(x.flatten(1))
            if got.shape != (2, out, 1, 1):
                raise CheckFailed(f"on a {c}x{kh}x{kw} map the conv gives shape {tuple(got.shape)}, "
                                  f"expected (2, {out}, 1, 1).")
            expect_close(got[:, :, 0, 0], want, what=f"scores for a {c}x{kh}x{kw} map")
            with torch.no_grad():   # on a larger map it must slide: one score per position
                big = conv(torch.randn(1, c, kh + 2, kw + 3))
            expect_equal(tuple(big.shape[-2:]), (3, 4), what=f"output size on a {c}x{kh + 2}x{kw + 3} map")
    return run_check("Linear -> Conv2d", test,
                     "Hint: nn.Conv2d(C, out, (kh, kw)); weight = linear.weight.reshape(out, C, kh, kw); "
                     "copy the bias.")


def receptive_field(student) -> bool:
    """``student([(kernel, stride), ...]) -> (receptive_field, jump)``."""
    from ..fully_conv import receptive_field_of

    def test():
        cases = [[(3, 1)], [(3, 1), (3, 1)], [(2, 2)], [(3, 1), (2, 2), (3, 1), (2, 2)],
                 [(3, 1), (2, 2), (3, 1), (2, 2), (8, 1), (1, 1)], [(7, 2), (3, 2), (3, 1), (3, 2)], []]
        for layers in cases:
            got = student(layers)
            want = receptive_field_of(layers)
            if tuple(got) != want:
                raise CheckFailed(f"for layers {layers} you return {tuple(got)}, expected {want} "
                                  "(receptive field, jump).")
    return run_check("receptive field and output stride", test,
                     "Hint: start with rf = 1, jump = 1; for each layer rf += (kernel - 1) * jump, "
                     "then jump *= stride.")
