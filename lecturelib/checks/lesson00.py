"""Self-checks for 00_overview."""
from __future__ import annotations

import numpy as np

from . import CheckFailed, run_check


def reference_mask_to_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight box (x0, y0, x1, y1) of a boolean mask in pixel-edge coordinates (x1, y1 exclusive)."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def mask_to_box(fn) -> bool:
    """Check ``fn(mask) -> (x0, y0, x1, y1)`` on hand-made and random masks."""
    def test():
        cases = []
        m = np.zeros((6, 8), bool)
        m[2:4, 1:6] = True
        cases.append(m)
        one = np.zeros((5, 5), bool)
        one[4, 0] = True
        cases.append(one)
        rng = np.random.default_rng(0)
        for _ in range(20):
            r = rng.random((rng.integers(3, 20), rng.integers(3, 20))) < 0.1
            r[rng.integers(r.shape[0]), rng.integers(r.shape[1])] = True
            cases.append(r)
        for i, c in enumerate(cases):
            got = tuple(int(v) for v in fn(c))
            want = reference_mask_to_box(c)
            if got != want:
                raise CheckFailed(f"mask {i + 1}: got {got}, expected {want}.")
    return run_check("mask_to_box", test,
                     hint="Hint: np.nonzero gives the rows and columns; the right and bottom edges are max + 1.")
