"""Self-checks for notebook 03 (multi-scale networks and superpixels).

Exercises: predict the window of the shared CNN; implement the image pyramid and the superpixel majority vote;
interpret: remove the coarsest scale of a shipped multi-scale checkpoint and say which object sizes lose most.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import CheckFailed, expect_close, expect_equal, refuse_reference, run_check

REFERENCES = {
    "my_image_pyramid": "lecturelib.multiscale.image_pyramid",
    "my_superpixel_vote": "lecturelib.superpixels.superpixel_vote",
}


# ----------------------------------------------------------------------------- exercise 1 (predict)


def cnn_window() -> int:
    """The receptive field (pixels) of one output pixel of the shared CNN (:func:`lecturelib.multiscale.conv_features`),
    measured with autograd on a fresh, narrow copy (the window does not depend on the width)."""
    from ..multiscale import conv_features, empirical_receptive_field

    features = conv_features(3, 4).eval()
    # nearest upsampling by the CNN's stride 4 keeps each output pixel's window: the centre output pixel of the
    # upsampled map is one feature pixel
    return empirical_receptive_field(lambda x: F.interpolate(features(x), scale_factor=4, mode="nearest"), size=64)


def receptive_field(student) -> bool:
    """``student()`` returns the predicted receptive field (an int, pixels) of the shared CNN of lesson 03."""

    def test():
        got = student()
        if isinstance(got, bool) or not isinstance(got, (int, np.integer)):
            raise CheckFailed(f"return a whole number of pixels (an int), got {got!r}.")
        want = cnn_window()
        if got < want:
            raise CheckFailed(f"{got} px is too small: the window is wider than that.")
        if got > want:
            raise CheckFailed(f"{got} px is too large: the window is narrower than that.")

    return run_check("receptive field of the shared CNN", test,
                     "Hint: walk through the layers keeping the window w and the stride s (pixels between two "
                     "neighbouring outputs), starting from w = 1, s = 1: a k×k convolution adds (k - 1)·s to w; "
                     "a 2×2 max-pooling adds s to w, then doubles s.")


# ----------------------------------------------------------------------------- exercise 2 (implement)


def pyramid(student) -> bool:
    """``student(x, num_scales)`` must return the levels of :func:`lecturelib.multiscale.image_pyramid`, on image sizes,
    scale counts and a gradient the exercise did not show."""
    from ..multiscale import image_pyramid

    def test():
        refuse_reference(student, image_pyramid)
        g = torch.Generator().manual_seed(3)
        cases = [("a 2×3×37×50 image, 3 scales", (2, 3, 37, 50), 3),
                 ("a 1×1×16×9 image, 2 scales", (1, 1, 16, 9), 2),
                 ("a 1×3×5×3 image, 4 scales (levels cannot shrink below 1×1)", (1, 3, 5, 3), 4),
                 ("a 1×3×12×12 image, 1 scale (the image alone)", (1, 3, 12, 12), 1)]
        for case, shape, n in cases:
            x = torch.rand(*shape, generator=g)
            got, want = student(x, n), image_pyramid(x, n)
            if not isinstance(got, (list, tuple)):
                raise CheckFailed(f"for {case}: expected a list of {n} tensors, got {type(got).__name__}.")
            expect_equal(len(got), len(want), what=f"the number of levels for {case}")
            for k, (a, b) in enumerate(zip(got, want)):
                if not isinstance(a, torch.Tensor):
                    raise CheckFailed(f"for {case}: level {k} is a {type(a).__name__}, not a tensor.")
                expect_equal(tuple(a.shape), tuple(b.shape), what=f"the shape of level {k} for {case}")
                expect_close(a, b, what=f"level {k} for {case}", atol=1e-5)
        # the pyramid must stay differentiable: a network trained on it back-propagates into the image
        x = torch.rand(1, 3, 21, 14, generator=g)
        xs, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
        weights = [torch.rand(level.shape, generator=g) for level in image_pyramid(x, 3)]
        got = student(xs, 3)
        if not all(isinstance(a, torch.Tensor) and a.requires_grad for a in got):
            raise CheckFailed("for a 1×3×21×14 image that requires grad, a level does not carry a gradient "
                              "(was it detached or built with NumPy?).")
        sum((w * a).sum() for w, a in zip(weights, got)).backward()
        sum((w * a).sum() for w, a in zip(weights, image_pyramid(xr, 3))).backward()
        expect_close(xs.grad, xr.grad, what="the gradient with respect to a 1×3×21×14 image", atol=1e-5)

    return run_check("image pyramid", test,
                     "Hint: every level is shrunk from the original image (not from the previous level), its size "
                     "rounded down and never below one pixel; antialiasing makes shrinking average instead of "
                     "skipping pixels.")


# ----------------------------------------------------------------------------- exercise 3 (implement)


def majority_vote(student) -> bool:
    """``student(labels, segments)`` (NumPy int arrays) must equal :func:`lecturelib.superpixels.superpixel_vote`, on
    ties, segment ids with gaps, split segments and random maps the exercise did not show."""
    from ..superpixels import superpixel_vote

    def compare(case, labels, segments):
        want = superpixel_vote(labels, segments)
        got = np.asarray(student(labels.copy(), segments.copy()))
        expect_equal(got.shape, want.shape, what=f"the shape of the result for {case}")
        bad = np.argwhere(got != want)
        if len(bad):
            r, c = bad[0]
            raise CheckFailed(f"for {case}: {len(bad)} of {got.size} pixels differ; first at (row {r}, col {c}): "
                              f"expected {want[r, c]}, got {got[r, c]}.")

    def test():
        refuse_reference(student, superpixel_vote)
        compare("a tie (two pixels of label 4, two of label 2: the smaller label wins)",
                np.array([[4, 2], [2, 4]]), np.zeros((2, 2), dtype=np.int64))
        compare("segment ids with gaps (7 and 30, no 0)",
                np.array([[1, 1, 5], [3, 5, 5]]), np.array([[7, 7, 30], [7, 30, 30]]))
        compare("one segment made of two separate pieces",
                np.array([[6, 0, 6], [0, 0, 0], [9, 0, 6]]), np.array([[2, 0, 2], [0, 0, 0], [2, 0, 2]]))
        compare("a 1×1 image", np.array([[3]]), np.array([[0]]))
        rng = np.random.default_rng(5)
        for shape in [(20, 17), (9, 31)]:
            compare(f"a random {shape[0]}×{shape[1]} example",
                    rng.integers(0, 11, size=shape), rng.integers(0, 12, size=shape))

    return run_check("superpixel majority vote", test,
                     "Hint: a superpixel is the set of pixels that share one segment id, wherever they are; count "
                     "its labels and give every one of its pixels the most frequent (on a tie, the smallest).")


# ----------------------------------------------------------------------------- exercise 4 (interpret)


class _FirstScenes:
    """The first ``n`` scenes of a CourseScenes, for :func:`lecturelib.multiscale.report_by_size`."""

    def __init__(self, scenes, n: int):
        self.scenes, self.n = scenes, min(n, len(scenes))

    def __len__(self) -> int:
        return self.n

    def scene(self, i: int):
        return self.scenes.scene(i)


def _labels_with(model, images: torch.Tensor, change) -> torch.Tensor:
    """The multi-scale model's label maps int[N, H, W], ``change`` applied to its list of per-scale features."""
    from ..multiscale import upsample_and_concat

    with torch.no_grad():
        feats = change(model.scale_features(images))
        logits = model.classifier(upsample_and_concat(feats, feats[0].shape[-2:]))
        logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return logits.argmax(1)


def scale_ablation(student, model, scenes, n: int = 64) -> dict | None:
    """Remove the coarsest scale of the multi-scale ``model`` with ``student(features)`` and evaluate it on the first
    ``n`` of ``scenes`` (a CourseScenes), beside the intact model.

    ``student`` maps the list of per-scale feature maps (finest first) to the list the classifier gets: the coarsest
    map replaced by zeros. Prints the mIoU by object size and the IoU per class, intact and without the coarsest
    scale; returns {"intact": {bucket: mIoU}, "ablated": {...}, "drop": {...}, "class_drop": {class: IoU drop}}
    (buckets "all", "small", "medium", "large"), or None if the change is wrong (with ❌ and the reason).
    """
    from ..multiscale import SIZE_BUCKETS, report_by_size
    from ..scenes import CLASS_NAMES

    model.eval()
    sub = _FirstScenes(scenes, n)
    images = torch.stack([scenes[i][0] for i in range(len(sub))])
    buckets = ["all", *SIZE_BUCKETS]
    out = {}

    def test():
        with torch.no_grad():
            feats = model.scale_features(images[:2])
        got = student([f.clone() for f in feats])
        if not isinstance(got, (list, tuple)):
            raise CheckFailed(f"return a list of {len(feats)} feature maps, got {type(got).__name__}.")
        expect_equal(len(got), len(feats), what="the number of feature maps (the classifier needs one per scale)")
        for k, (a, b) in enumerate(zip(got, feats)):
            expect_equal(tuple(a.shape), tuple(b.shape), what=f"the shape of scale {k}'s map")
            if k == len(feats) - 1:
                if a.abs().max() != 0:
                    raise CheckFailed(f"the coarsest scale ({k}) still carries features (largest |value| "
                                      f"{float(a.abs().max()):.3g}); it should be all zeros.")
            else:
                expect_close(a, b, what=f"scale {k}'s map (only the coarsest changes)")
        for name, change in [("intact", lambda f: f), ("ablated", student)]:
            pred = _labels_with(model, images, change)
            by_size = report_by_size(pred, sub)
            out[name] = {b: by_size[b]["miou"] for b in buckets}
            out[name + "_iou"] = by_size["all"]["iou"]
        out["drop"] = {b: out["intact"][b] - out["ablated"][b] for b in buckets}
        out["class_drop"] = {CLASS_NAMES[c]: float(a - b) for c, (a, b) in
                             enumerate(zip(out.pop("intact_iou"), out.pop("ablated_iou")))}

    if not run_check("coarsest scale removed", test,
                     "Hint: keep the list's length and every map's shape; only the last map becomes zeros "
                     "(torch.zeros_like)."):
        return None
    print(f"{len(sub)} test scenes; mIoU by object size")
    print(f"{'':>24}" + "".join(f"{b:>9}" for b in buckets))
    for name, label in [("intact", "all scales"), ("ablated", "without coarsest scale"), ("drop", "drop")]:
        print(f"{label:>24}" + "".join(f"{out[name][b]:9.3f}" for b in buckets))
    print("IoU drop per class: " + ", ".join(f"{c} {d:+.2f}" for c, d in out["class_drop"].items()))
    return out


def most_hurt_bucket(student, measured) -> bool:
    """``student(measured)`` names the object-size bucket ("small", "medium" or "large") whose mIoU dropped most in
    ``measured`` (the dict :func:`scale_ablation` returned)."""

    def test():
        if measured is None:
            raise CheckFailed("there are no measurements: run the ablation above first (its check must pass).")
        sizes = [b for b in measured["drop"] if b != "all"]
        got = student(measured)
        if got not in sizes:
            raise CheckFailed(f"answer one of {sizes}, got {got!r}.")
        worst = max(sizes, key=lambda b: measured["drop"][b])
        if got != worst:
            raise CheckFailed(f"'{got}' objects lost {measured['drop'][got]:+.3f} mIoU, but another bucket lost more.")

    return run_check("which objects need the coarse scale", test,
                     "Hint: read the 'drop' row of your table (intact minus ablated), or compute its largest "
                     "entry from measured['drop'].")
