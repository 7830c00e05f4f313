"""Self-checks for lesson 02 (fully convolutional networks).

    from lecturelib.checks import lesson02 as checks
    checks.linear_to_conv(my_linear_to_conv)                                          # implement
    checks.output_size(my_prediction_output_size)                                     # predict
    measured = checks.upsampling_ablation(my_nearest_upsample, fcn, images, masks, P) # interpret: the change ...
    checks.upsampling_answer(my_answer_upsampling, measured)                          # ... and the answer
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .. import fully_conv
from ..fully_conv import coarse_scores, receptive_field, shift_and_stitch, to_fully_convolutional, upsample_scores
from ..metrics import ConfusionMatrix, boundary_band
from ..patch import PatchLessonConfig, patch_cnn
from ..scenes import NUM_CLASSES
from . import (
    CheckFailed,
    call_case,
    expect_close,
    expect_equal,
    refuse_reference,
    run_check,
    too_high_or_low,
    whole_numbers,
)

# the course's own implementation of each implement exercise (tests: never shown with show_source)
REFERENCES = {"my_linear_to_conv": "lecturelib.fully_conv.linear_to_conv"}

PREDICT_PATCH = 38                       # the converted patch classifier of the lesson
PREDICT_IMAGE = (100, 150)               # rows, columns of the image it runs on, without padding
BAND = 2                                 # pixels within this distance of a ground-truth boundary count as "boundary"


def linear_to_conv(student) -> bool:
    """``student(linear, in_channels, kernel_size) -> nn.Conv2d`` computing the same scores, on shapes the notebook
    does not show (non-square kernels given as a tuple, 1x1, a Linear without bias), sliding over a larger map, and
    trainable (the conv's weight gets the Linear's gradient, reshaped)."""
    def test():
        refuse_reference(student, fully_conv.linear_to_conv, to_fully_convolutional)
        torch.manual_seed(0)
        cases = [(4, 3, 3, 5, True), (2, 2, 5, 3, True), (16, 1, 1, 7, True), (3, 5, 2, 4, False), (1, 3, 3, 2, True)]
        for c, kh, kw, out, bias in cases:
            what = (f"a Linear({c * kh * kw}, {out}{'' if bias else ', bias=False'}) read as a {c}x{kh}x{kw} map "
                    f"(kernel_size={kh if kh == kw else (kh, kw)})")
            linear = nn.Linear(c * kh * kw, out, bias=bias)
            conv = call_case(what, student, linear, c, kh if kh == kw else (kh, kw))
            if not isinstance(conv, nn.Conv2d):
                raise CheckFailed(f"{what}: return an nn.Conv2d, got {type(conv).__name__}.")
            x = torch.randn(2, c, kh, kw)
            with torch.no_grad():
                got, want = conv(x), linear(x.flatten(1))
            if got.shape != (2, out, 1, 1):
                raise CheckFailed(f"{what}: on a batch of two {c}x{kh}x{kw} maps the conv gives shape "
                                  f"{tuple(got.shape)}, expected (2, {out}, 1, 1).")
            expect_close(got[:, :, 0, 0], want, what=f"{what}: the scores")
            with torch.no_grad():   # on a larger map it must slide: one score per position
                big = conv(torch.randn(1, c, kh + 2, kw + 3))
            expect_equal(tuple(big.shape[-2:]), (3, 4), what=f"{what}: the output size on a {c}x{kh + 2}x{kw + 3} map")
            if not conv.weight.requires_grad:
                raise CheckFailed(f"{what}: the conv's weight must stay a trainable parameter.")
            linear.zero_grad()
            conv.zero_grad()
            linear(x.flatten(1)).square().sum().backward()
            conv(x).square().sum().backward()
            expect_close(conv.weight.grad, linear.weight.grad.reshape(out, c, kh, kw),
                         what=f"{what}: the gradient of the conv's weight (reshaped Linear gradient)")
    return run_check("Linear -> Conv2d", test,
                     "Hint: a Linear output is a weighted sum over every value of the flattened map; a convolution "
                     "whose kernel covers the whole map computes one such sum, if its kernel holds the same "
                     "weights arranged as the map (channel, row, column).")


def _lesson_fcn() -> nn.Module:
    """The lesson's converted patch classifier (random weights: only its geometry matters here)."""
    config = PatchLessonConfig().model_config(PREDICT_PATCH)
    return to_fully_convolutional(patch_cnn(config), input_size=PREDICT_PATCH).eval()


def output_size(student) -> bool:
    """``student() -> (rows, columns)`` of the converted 38-pixel classifier's score map on an unpadded
    100x150 image; the truth is measured by running that network on such an image."""
    def test():
        rows, cols = whole_numbers(student(), ("rows", "columns"))
        with torch.no_grad():
            want = tuple(_lesson_fcn()(torch.zeros(1, 3, *PREDICT_IMAGE)).shape[-2:])
        wrong = [f"{name} {too_high_or_low(g, w)}" for name, g, w in
                 (("rows", rows, want[0]), ("columns", cols, want[1])) if g != w]
        if wrong:
            raise CheckFailed(" and ".join(wrong) + ".")
    return run_check("output size of the converted network", test,
                     "Hint: every output needs a whole 38x38 window inside the image, and neighbouring windows are "
                     "one output stride apart: count the window positions along each side.")


def _check_nearest(student) -> None:
    """The learner's upsampling must copy each coarse score to its stride x stride block, or the table means
    nothing."""
    g = torch.Generator().manual_seed(7)
    for c, hc, wc, s, size in [(3, 4, 5, 4, (16, 20)), (2, 3, 3, 4, (10, 9)), (1, 2, 3, 2, (4, 6))]:
        coarse = torch.randn(c, hc, wc, generator=g)
        got = call_case(f"a {c}x{hc}x{wc} coarse map, stride {s}, size {size}", student, coarse.clone(), s, size)
        want = coarse.repeat_interleave(s, 1).repeat_interleave(s, 2)[:, :size[0], :size[1]]
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(want.shape):
            raise CheckFailed(f"a {c}x{hc}x{wc} coarse map, stride {s}, size {size}: return a tensor of shape "
                              f"{tuple(want.shape)}, got {getattr(got, 'shape', type(got).__name__)}.")
        expect_close(got, want, what=f"a {c}x{hc}x{wc} coarse map upsampled by {s} to {size} (pixel (y, x) takes "
                                     "sample (y // s, x // s))")


def upsampling_ablation(student, fcn: nn.Module, images: torch.Tensor, masks: torch.Tensor,
                        patch_size: int) -> dict | None:
    """Replace the bilinear upsampling of the one-pass scores by the learner's nearest-neighbour copy and measure.

    ``student(coarse float[C, h, w], stride, size) -> float[C, H, W]``. On ``images`` float[N, 3, H, W] /
    ``masks`` int64[N, H, W]: the exact per-pixel labels (shift-and-stitch), one pass + bilinear, one pass +
    nearest; for each, mIoU and the share of pixels whose label differs from the exact one, within ``BAND``
    pixels of a ground-truth boundary and farther from it. Prints the table; returns
    ``{method: {"miou", "disagree", "disagree_boundary", "disagree_interior"}}`` (method "exact", "bilinear",
    "nearest"), or None when the change fails.
    """
    results = {}

    def test():
        _check_nearest(student)
        _, stride = receptive_field(fcn)
        h, w = images.shape[-2:]
        with torch.no_grad():
            exact = shift_and_stitch(fcn.eval(), images, patch_size, stride).argmax(1)        # (N, H, W)
            coarse = [coarse_scores(fcn, img, patch_size) for img in images]
        band = torch.stack([boundary_band(m, BAND) for m in masks])
        labels = {"exact": exact,
                  "bilinear": torch.stack([upsample_scores(c, stride, (h, w)).argmax(0) for c in coarse]),
                  "nearest": torch.stack([student(c, stride, (h, w)).argmax(0) for c in coarse])}
        for name, lab in labels.items():
            cm = ConfusionMatrix(NUM_CLASSES)
            cm.update(lab, masks)
            differ = lab != exact
            results[name] = {"miou": cm.compute()["miou"], "disagree": differ.float().mean().item(),
                             "disagree_boundary": differ[band].float().mean().item(),
                             "disagree_interior": differ[~band].float().mean().item()}

    if not run_check("one pass + nearest-neighbour upsampling", test,
                     "Hint: every coarse sample stands for the stride x stride block of pixels whose top-left "
                     "pixel it was computed for; repeat it along both axes, then cut to the image size."):
        return None
    print(f"{len(images)} test scenes; 'differs from exact' = share of pixels whose label differs from the "
          f"per-pixel loop's, within {BAND} px of a ground-truth boundary and farther")
    print(f"{'labels':>28} {'mIoU':>6} {'differs: all':>13} {'boundary':>9} {'interior':>9}")
    rows = (("exact", "per-pixel (shift-and-stitch)"), ("bilinear", "one pass + bilinear"),
            ("nearest", "one pass + nearest (yours)"))
    for key, name in rows:
        r = results[key]
        print(f"{name:>28} {r['miou']:>6.3f} {r['disagree']:>13.1%} {r['disagree_boundary']:>9.1%} "
              f"{r['disagree_interior']:>9.1%}")
    return results


def upsampling_answer(student, measured: dict | None) -> bool:
    """``student(measured) -> (closer, where)``: which upsampling's labels are closer to the exact ones
    ("bilinear" or "nearest") and where both differ more often ("boundary" or "interior"), verified against the
    learner's own ``measured`` (the dict :func:`upsampling_ablation` returned)."""
    def test():
        if measured is None:
            raise CheckFailed("run the ablation above first (its check must pass).")
        got = student(measured)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise CheckFailed(f"return a pair (closer, where), e.g. (\"nearest\", \"interior\"), got {got!r}.")
        closer, where = got
        if closer not in ("bilinear", "nearest") or where not in ("boundary", "interior"):
            raise CheckFailed(f"closer is \"bilinear\" or \"nearest\", where is \"boundary\" or \"interior\"; "
                              f"got {got!r}.")

        want_closer = "bilinear" if measured["bilinear"]["disagree"] < measured["nearest"]["disagree"] else "nearest"
        at_boundary = all(measured[k]["disagree_boundary"] > measured[k]["disagree_interior"]
                          for k in ("bilinear", "nearest"))
        at_interior = all(measured[k]["disagree_boundary"] < measured[k]["disagree_interior"]
                          for k in ("bilinear", "nearest"))
        wrong = []
        if closer != want_closer:
            wrong.append("closer: compare the 'differs: all' column of the two one-pass rows")
        if not (where == "boundary" and at_boundary or where == "interior" and at_interior):
            wrong.append("where: compare the boundary column with the interior column, in both one-pass rows")
        if wrong:
            raise CheckFailed("your table says otherwise — " + "; ".join(wrong) + ".")
    return run_check("where one pass loses to the per-pixel loop", test,
                     "Hint: one pass computes one score per stride x stride block; inside an item all the pixels "
                     "of a block share their patch's answer anyway, so where must the per-pixel answers change "
                     "within a block?")
