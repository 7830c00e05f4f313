"""Self-checks for notebook 03 (multi-scale networks and superpixels)."""
from __future__ import annotations

import numpy as np
import torch

from . import CheckFailed, expect_close, run_check


def pyramid(student) -> bool:
    """``student(x, num_scales)`` must return the list of levels of :func:`lecturelib.multiscale.image_pyramid`."""
    from ..multiscale import image_pyramid

    def test():
        g = torch.Generator().manual_seed(3)
        for shape, n in [((2, 3, 32, 32), 3), ((1, 3, 37, 50), 3), ((1, 1, 16, 9), 2)]:
            x = torch.rand(*shape, generator=g)
            got, want = student(x, n), image_pyramid(x, n)
            if not isinstance(got, (list, tuple)) or len(got) != len(want):
                raise CheckFailed(f"for num_scales={n} expected a list of {len(want)} tensors, got "
                                  f"{type(got).__name__} of length {len(got) if hasattr(got, '__len__') else '?'}.")
            for k, (a, b) in enumerate(zip(got, want)):
                expect_close(a, b, what=f"level {k} of a {tuple(shape[-2:])} image", atol=1e-5)

    return run_check("image pyramid", test,
                     "Hint: level k has size (H // 2**k, W // 2**k); use F.interpolate(x, size=..., "
                     "mode='bilinear', align_corners=False, antialias=True).")


def upsample_concat(student) -> bool:
    """``student(features, size)`` must equal :func:`lecturelib.multiscale.upsample_and_concat`."""
    from ..multiscale import upsample_and_concat

    def test():
        g = torch.Generator().manual_seed(4)
        feats = [torch.rand(2, 4, 16, 12, generator=g), torch.rand(2, 4, 8, 6, generator=g),
                 torch.rand(2, 4, 4, 3, generator=g)]
        expect_close(student(feats, (16, 12)), upsample_and_concat(feats, (16, 12)), what="concatenated features")
        expect_close(student(feats[1:], (9, 7)), upsample_and_concat(feats[1:], (9, 7)), what="odd target size")

    return run_check("upsample and concatenate", test,
                     "Hint: F.interpolate(f, size=size, mode='bilinear', align_corners=False) for each map, "
                     "then torch.cat(..., dim=1).")


def majority_vote(student) -> bool:
    """``student(labels, segments)`` (NumPy int arrays) must equal :func:`lecturelib.superpixels.superpixel_vote`."""
    from ..superpixels import superpixel_vote

    def test():
        segments = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2]])
        labels = np.array([[3, 3, 0, 5], [3, 1, 5, 5], [0, 0, 2, 0]])
        want = superpixel_vote(labels, segments)
        got = np.asarray(student(labels, segments))
        if got.shape != want.shape or not np.array_equal(got, want):
            raise CheckFailed(f"on the small example got\n{got}\nexpected\n{want}.")
        rng = np.random.default_rng(5)
        for _ in range(3):
            seg = rng.integers(0, 12, size=(20, 17))
            lab = rng.integers(0, 11, size=(20, 17))
            got = np.asarray(student(lab, seg))
            want = superpixel_vote(lab, seg)
            if got.shape != want.shape or not np.array_equal(got, want):
                n_bad = int((got != want).sum()) if got.shape == want.shape else "all"
                raise CheckFailed(f"on a random 20×17 example {n_bad} pixels differ "
                                  "(ties must go to the smaller label).")

    return run_check("superpixel majority vote", test,
                     "Hint: for each segment id s, count the labels of its pixels (np.bincount) and give all of "
                     "them the most frequent one (argmax picks the smaller label on ties).")
