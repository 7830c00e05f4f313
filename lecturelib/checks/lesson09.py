"""Self-checks for notebook 09 (recurrent captioning with soft attention; spatial transformers)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import expect_close, run_check


def affine_grid(student) -> bool:
    """``student(theta float[2, 3], height, width)`` must return the grid float[height, width, 2] of
    ``F.affine_grid`` (align_corners=False): for every output pixel centre, the input point θ·(x, y, 1)."""

    def test():
        g = torch.Generator().manual_seed(9)
        for height, width in [(2, 2), (3, 5), (4, 1)]:
            theta = torch.eye(2, 3) + 0.5 * torch.randn(2, 3, generator=g)
            want = F.affine_grid(theta[None], (1, 1, height, width), align_corners=False)[0]
            expect_close(student(theta, height, width), want, what=f"the grid of a {height}x{width} output")

    return run_check("the affine grid", test,
                     "Hint: pixel j of n has its centre at (2j + 1)/n - 1; stack (x, y, 1) for every pixel "
                     "and multiply by theta transposed; the last dimension holds (x, y).")


def sampler(student) -> bool:
    """``student(image float[H, W], theta float[2, 3], out_h, out_w)`` must equal ``F.grid_sample`` of
    ``F.affine_grid`` (bilinear, zeros outside, align_corners=False) for one single-channel image."""

    def test():
        image = torch.arange(16, dtype=torch.float32).reshape(4, 4)
        g = torch.Generator().manual_seed(10)
        thetas = [torch.eye(2, 3), torch.tensor([[0.5, 0.0, -0.5], [0.0, 0.5, -0.5]]),
                  torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]),
                  torch.eye(2, 3) + 0.4 * torch.randn(2, 3, generator=g)]
        for k, theta in enumerate(thetas):
            for out in [(2, 2), (4, 4), (3, 5)]:
                grid = F.affine_grid(theta[None], (1, 1, *out), align_corners=False)
                want = F.grid_sample(image[None, None], grid, mode="bilinear", padding_mode="zeros",
                                     align_corners=False)[0, 0]
                expect_close(student(image, theta, *out), want, what=f"the output for theta #{k + 1}, size {out}",
                             atol=1e-4)

    return run_check("the bilinear sampler", test,
                     "Hint: the point x in [-1, 1] is at pixel column ((x + 1) * W - 1) / 2; take the four pixels "
                     "around it (zero where outside the image), weighted by (1 - |dx|)(1 - |dy|).")


def attention_step(student) -> bool:
    """``student(a float[L, D], h float[H], W_a float[A, D], W_h float[A, H], w float[A])`` must return
    (z float[D], alpha float[L]): ``alpha = softmax_i(w · tanh(W_a a_i + W_h h))``, ``z = Σ_i alpha_i a_i``."""

    def test():
        g = torch.Generator().manual_seed(11)
        for L, D, H, A in [(4, 3, 2, 5), (9, 6, 4, 3)]:
            a, h = torch.randn(L, D, generator=g), torch.randn(H, generator=g)
            W_a, W_h, w = torch.randn(A, D, generator=g), torch.randn(A, H, generator=g), torch.randn(A, generator=g)
            alpha = torch.softmax(torch.tanh(a @ W_a.T + W_h @ h) @ w, dim=0)
            z_got, alpha_got = student(a, h, W_a, W_h, w)
            expect_close(alpha_got, alpha, what=f"alpha (L={L})")
            expect_close(z_got, alpha @ a, what=f"z (L={L}, D={D})")

    return run_check("one soft-attention step", test,
                     "Hint: scores e_i = w · tanh(W_a a_i + W_h h) for every location i (a @ W_a.T does all at once), "
                     "alpha = softmax of the scores over i, z = alpha @ a.")
