"""Self-checks of lesson 05 (transposed convolution): compare the learner's functions with lecturelib's.

    from lecturelib.checks import lesson05 as checks
    checks.output_size(my_output_size)
    checks.scatter(my_scatter)
    checks.backward_pass(my_transposed_by_autograd)
"""
from __future__ import annotations

import torch

from ..transposed import conv_transpose_output_size, conv_transpose_scatter
from . import CheckFailed, expect_close, run_check

# (n, kernel_size, stride, padding, output_padding, dilation): the slides' settings first
OUTPUT_SIZE_CASES = [
    (2, 3, 2, 1, 0, 1), (2, 3, 2, 1, 1, 1), (4, 3, 1, 1, 0, 1), (16, 4, 2, 1, 0, 1), (7, 5, 3, 2, 2, 1),
    (5, 3, 1, 0, 0, 2), (3, 2, 2, 0, 1, 1), (10, 64, 32, 16, 0, 1), (1, 1, 1, 0, 0, 1), (6, 3, 4, 4, 3, 1),
]

# (H, W, k, stride, padding) for the 2-D single-channel exercises
SCATTER_CASES = [(2, 2, 3, 2, 1), (3, 4, 3, 1, 0), (4, 4, 4, 2, 1), (2, 3, 2, 3, 0), (5, 5, 3, 2, 2), (1, 1, 3, 2, 1)]


def _cases(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    for H, W, k, s, p in SCATTER_CASES:
        x = torch.randn(H, W, generator=gen, dtype=torch.float64)
        w = torch.randn(k, k, generator=gen, dtype=torch.float64)
        yield x, w, s, p


def _reference_2d(x: torch.Tensor, w: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    return conv_transpose_scatter(x[None, None], w[None, None], stride=stride, padding=padding)[0, 0]


def output_size(student) -> bool:
    """``student(n, kernel_size, stride, padding, output_padding, dilation) -> int``."""
    def test():
        for case in OUTPUT_SIZE_CASES:
            got, want = student(*case), conv_transpose_output_size(*case)
            if got != want:
                n, k, s, p, op, d = case
                raise CheckFailed(f"for n={n}, kernel_size={k}, stride={s}, padding={p}, output_padding={op}, "
                                  f"dilation={d} you return {got!r}, expected {want}.")
    return run_check("transposed-convolution output size", test,
                     hint="Hint: the kernels cover (n-1)*stride + dilation*(k-1) + 1 cells; padding crops from "
                          "both sides, output_padding adds at one side.")


def scatter(student) -> bool:
    """``student(x, w, stride, padding) -> Tensor[H_out, W_out]`` for x (Tensor[H, W]) and w (Tensor[k, k])."""
    def test():
        for i, (x, w, s, p) in enumerate(_cases(1)):
            got = student(x.clone(), w.clone(), s, p)
            if not isinstance(got, torch.Tensor):
                raise CheckFailed(f"return a torch.Tensor, got {type(got).__name__}.")
            expect_close(got, _reference_2d(x, w, s, p), what=f"case {i + 1} (stride {s}, padding {p})", atol=1e-9)
    return run_check("scatter implementation", test,
                     hint="Hint: make the full output first, add x[i, j] * w at rows i*s .. i*s+k-1, then crop "
                          "`padding` cells from every side.")


def backward_pass(student) -> bool:
    """``student(x, w, stride, padding) -> Tensor[H_out, W_out]`` computed with autograd through ``F.conv2d``."""
    def test():
        for i, (x, w, s, p) in enumerate(_cases(2)):
            got = student(x.clone(), w.clone(), s, p)
            if not isinstance(got, torch.Tensor):
                raise CheckFailed(f"return a torch.Tensor, got {type(got).__name__}.")
            expect_close(got, _reference_2d(x, w, s, p), what=f"case {i + 1} (stride {s}, padding {p})", atol=1e-9)
    return run_check("transposed convolution = gradient of conv2d", test,
                     hint="Hint: z = zeros of the output size with requires_grad; y = F.conv2d(z, w, stride, "
                          "padding); the gradient of (y * x).sum() with respect to z is the answer.")
