"""The self-checks of lessons 00-02: the course's answers pass, the stubs and plausible wrong answers fail, the
course's own implementation is refused, and the interpret checks verify an answer against the measured numbers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lecturelib import fully_conv, patch
from lecturelib.checks import FAIL, PASS, lesson00, lesson01, lesson02
from lecturelib.instances import instances_to_targets


def stub(*args):
    raise NotImplementedError


def outcome(capsys, ok: bool) -> str:
    """The printed message of the one check just run, asserting it printed ✅ (ok) or ❌."""
    out = capsys.readouterr().out
    assert (PASS in out) == ok and (FAIL in out) != ok, out
    return out


# ----------------------------------------------------------------------------- 00
def box(mask):
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError("empty mask")
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def test_mask_to_box(capsys):
    assert lesson00.mask_to_box(box)
    outcome(capsys, True)
    assert not lesson00.mask_to_box(stub)
    assert "not implemented yet" in outcome(capsys, False)
    inclusive = lambda m: box(m)[:2] + (box(m)[2] - 1, box(m)[3] - 1)      # noqa: E731  (torchvision's convention)
    assert not lesson00.mask_to_box(inclusive)
    assert "expected" in outcome(capsys, False)
    assert not lesson00.mask_to_box(lambda m: (box(m)[1], box(m)[0], box(m)[3], box(m)[2]))
    assert "(y0, x0, y1, x1)" in outcome(capsys, False)

    def no_error_when_empty(mask):
        return box(mask) if np.any(mask) else (0, 0, 0, 0)
    assert not lesson00.mask_to_box(no_error_when_empty)
    assert "ValueError" in outcome(capsys, False)
    assert not lesson00.mask_to_box(lambda m: tuple(instances_to_targets(m.astype(int))["boxes"][0]))
    assert "course's own" in outcome(capsys, False)


# ----------------------------------------------------------------------------- 01
def test_conv_outputs_prediction(capsys):
    first = patch.conv_output_count(38, 2, 64, 64)[0]
    assert lesson01.conv_outputs(lambda: (first["computed"], first["distinct"]))
    outcome(capsys, True)
    assert not lesson01.conv_outputs(stub)
    outcome(capsys, False)
    assert not lesson01.conv_outputs(lambda: (64 * 64 * 36 * 36, 64 * 64))        # distinct = one per pixel
    out = outcome(capsys, False)
    assert "distinct is too low" in out and "computed" not in out.split("distinct")[0]
    assert str(first["distinct"]) not in out and f"{first['distinct']:,}" not in out   # never gives the answer
    assert not lesson01.conv_outputs(lambda: (64 * 64 * 38 * 38, 101 * 101))      # forgot the valid convolution
    out = outcome(capsys, False)
    assert "computed is too high" in out and "distinct is too high" in out
    assert not lesson01.conv_outputs(lambda: 42)
    assert "2 whole numbers (computed, distinct)" in outcome(capsys, False)


def extract(image, y, x, p):
    before = p // 2
    padded = F.pad(image[None], (before, p - 1 - before, before, p - 1 - before), mode="reflect")[0]
    return padded[:, y:y + p, x:x + p]


def test_patch_extractor(capsys):
    assert lesson01.patch_extractor(extract)
    outcome(capsys, True)
    for wrong, words in [
        (stub, "not implemented yet"),
        (patch.extract_patch, "course's own"),
        (lambda im, y, x, p: patch.extract_patch(im, y, x, p), "course's own"),
        (lambda im, y, x, p: F.pad(im, (p // 2, p - 1 - p // 2, p // 2, p - 1 - p // 2))[:, y:y + p, x:x + p],
         "wrong value"),                                                           # zero padding
        (lambda im, y, x, p: extract(im, y, x, p + 1)[:, 1:, 1:] if p % 2 == 0 else extract(im, y, x, p),
         "wrong value"),                                                           # centre off by one for even P
        (lambda im, y, x, p: torch.from_numpy(extract(im, y, x, p).detach().numpy().copy()), "differentiable"),
    ]:
        assert not lesson01.patch_extractor(wrong)
        assert words in outcome(capsys, False), words


@pytest.fixture(scope="module")
def patch_models():
    from lecturelib.evaluate import load_course_model
    from lecturelib.profiles import get_profile
    from lecturelib.scenes import CourseScenes

    models = {p: load_course_model(f"patch_p{p}", 0)[0] for p in (10, 22, 38)}
    images, masks = CourseScenes.from_profile(get_profile("quick").scaled(n_test=8), "test").tensors()
    return models, images, masks


def keep_centre(patches, keep):
    p = patches.shape[-1]
    s = p // 2 - keep // 2
    window = patches[..., s:s + keep, s:s + keep]
    out = window.mean((-2, -1), keepdim=True).expand_as(patches).clone()
    out[..., s:s + keep, s:s + keep] = window
    return out


def test_context_ablation_measures_and_the_answer_is_checked_against_it(capsys, patch_models):
    models, images, masks = patch_models
    measured = lesson01.context_ablation(keep_centre, models, images, masks)
    out = outcome(capsys, True)
    assert "P = 38, rest blanked" in out and "all background" in out
    assert set(measured["blanked"]) == {38, 22, 10} and set(measured["trained"]) == {38, 22, 10}
    assert measured["blanked"][38] == pytest.approx(measured["trained"][38])    # window 38 = nothing blanked
    # the answer is whatever the numbers say: check the right one passes and the two others fail
    wins = [measured["trained"][k] > measured["blanked"][k] for k in (22, 10)]
    right = "trained" if all(wins) else "blanked" if not any(wins) else "mixed"
    assert lesson01.context_answer(lambda m: right, measured)
    outcome(capsys, True)
    for wrong in {"trained", "blanked", "mixed"} - {right}:
        assert not lesson01.context_answer(lambda m, w=wrong: w, measured)
        assert "your table says otherwise" in outcome(capsys, False)
    # a made-up table decides the answer, not a constant
    flipped = {"blanked": {k: 1.0 for k in (38, 22, 10)}, "trained": {k: 0.0 for k in (38, 22, 10)},
               "background": 0.0}
    assert lesson01.context_answer(lambda m: "blanked", flipped)
    assert not lesson01.context_answer(lambda m: "trained", flipped)
    assert not lesson01.context_answer(lambda m: "sometimes", measured)
    assert not lesson01.context_answer(lambda m: right, None)
    assert "run the ablation above first" in capsys.readouterr().out


def test_context_ablation_refuses_a_change_that_does_not_do_what_is_asked(capsys, patch_models):
    models, images, masks = patch_models

    def zero_fill(patches, keep):      # black instead of the window's mean colour
        out = torch.zeros_like(patches)
        s = patches.shape[-1] // 2 - keep // 2
        out[..., s:s + keep, s:s + keep] = patches[..., s:s + keep, s:s + keep]
        return out

    for wrong in [stub, lambda p, keep: p, lambda p, keep: keep_centre(p, keep)[..., 1:, :], zero_fill,
                  lambda p, keep: keep_centre(torch.roll(p, 1, -1), keep)]:
        assert lesson01.context_ablation(wrong, models, images, masks) is None
        outcome(capsys, False)
    assert lesson01.context_ablation(keep_centre, {38: models[38]}, images, masks) is None
    assert "patch sizes [10, 22]" in outcome(capsys, False)


# ----------------------------------------------------------------------------- 02
def my_linear_to_conv(linear, c, k):
    kh, kw = (k, k) if isinstance(k, int) else k
    conv = nn.Conv2d(c, linear.out_features, (kh, kw), bias=linear.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.reshape(linear.out_features, c, kh, kw))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


def test_linear_to_conv(capsys):
    assert lesson02.linear_to_conv(my_linear_to_conv)
    outcome(capsys, True)

    def transposed(linear, c, k):      # wrong flatten order: (y, x, c) instead of (c, y, x)
        kh, kw = (k, k) if isinstance(k, int) else k
        conv = nn.Conv2d(c, linear.out_features, (kh, kw), bias=linear.bias is not None)
        with torch.no_grad():
            conv.weight.copy_(linear.weight.reshape(linear.out_features, kh, kw, c).permute(0, 3, 1, 2))
            if linear.bias is not None:
                conv.bias.copy_(linear.bias)
        return conv

    def always_bias(linear, c, k):     # crashes on a Linear without bias
        conv = my_linear_to_conv(linear, c, k)
        with torch.no_grad():
            conv.bias.copy_(linear.bias)
        return conv

    def frozen(linear, c, k):
        conv = my_linear_to_conv(linear, c, k)
        conv.weight.requires_grad_(False)
        return conv

    def square_only(linear, c, k):
        return my_linear_to_conv(linear, c, k if isinstance(k, int) else k[0])

    for wrong, words in [(stub, "not implemented yet"), (fully_conv.linear_to_conv, "course's own"),
                         (lambda lin, c, k: fully_conv.to_fully_convolutional(nn.Sequential(lin), k), "course's own"),
                         (transposed, "wrong value"), (always_bias, "raised"), (frozen, "trainable"),
                         (square_only, "kernel_size=(2, 5)")]:
        assert not lesson02.linear_to_conv(wrong)
        assert words in outcome(capsys, False), words


def test_output_size_prediction(capsys):
    with torch.no_grad():
        want = tuple(lesson02._lesson_fcn()(torch.zeros(1, 3, 100, 150)).shape[-2:])
    assert want == ((100 - 38) // 4 + 1, (150 - 38) // 4 + 1)
    assert lesson02.output_size(lambda: want)
    outcome(capsys, True)
    assert not lesson02.output_size(stub)
    outcome(capsys, False)
    assert not lesson02.output_size(lambda: (100 // 4, 150 // 4))                  # padded "same" thinking
    out = outcome(capsys, False)
    assert "rows too high and columns too high" in out and str(want) not in out
    assert not lesson02.output_size(lambda: (want[0], want[1] - 1))
    assert "columns too low" in outcome(capsys, False)
    assert not lesson02.output_size(lambda: "16x29")
    outcome(capsys, False)


@pytest.fixture(scope="module")
def converted():
    from lecturelib.evaluate import load_course_model
    from lecturelib.profiles import get_profile
    from lecturelib.scenes import CourseScenes

    fcn = fully_conv.to_fully_convolutional(load_course_model("patch_p38", 0)[0], 38)
    images, masks = CourseScenes.from_profile(get_profile("quick").scaled(n_test=6), "test").tensors()
    return fcn, images, masks


def nearest(coarse, stride, size):
    return coarse.repeat_interleave(stride, 1).repeat_interleave(stride, 2)[:, :size[0], :size[1]]


def test_upsampling_ablation_and_answer(capsys, converted):
    fcn, images, masks = converted
    measured = lesson02.upsampling_ablation(nearest, fcn, images, masks, 38)
    out = outcome(capsys, True)
    assert "one pass + nearest (yours)" in out
    assert measured["exact"]["disagree"] == 0
    closer = min(("bilinear", "nearest"), key=lambda m: measured[m]["disagree"])
    where = "boundary" if measured["bilinear"]["disagree_boundary"] > measured["bilinear"]["disagree_interior"] \
        else "interior"
    assert lesson02.upsampling_answer(lambda m: (closer, where), measured)
    outcome(capsys, True)
    other = {"bilinear": "nearest", "nearest": "bilinear", "boundary": "interior", "interior": "boundary"}
    assert not lesson02.upsampling_answer(lambda m: (other[closer], where), measured)
    out = outcome(capsys, False)
    assert "closer:" in out and "where:" not in out
    assert not lesson02.upsampling_answer(lambda m: (closer, other[where]), measured)
    assert "where:" in outcome(capsys, False)
    assert not lesson02.upsampling_answer(lambda m: closer, measured)
    assert "pair" in outcome(capsys, False)
    assert not lesson02.upsampling_answer(lambda m: (closer, where), None)
    assert "run the ablation above first" in outcome(capsys, False)
    assert not lesson02.upsampling_answer(stub, measured)
    outcome(capsys, False)
    # the table decides: swap the two methods' numbers and the other answer is right
    swapped = {**measured, "bilinear": measured["nearest"], "nearest": measured["bilinear"]}
    assert lesson02.upsampling_answer(lambda m: (other[closer], where), swapped)


def test_upsampling_ablation_refuses_a_wrong_upsampling(capsys, converted):
    fcn, images, masks = converted
    centred = lambda c, s, size: F.interpolate(c[None], scale_factor=s, mode="nearest")[0, :, :size[0], :size[1]]
    shifted = lambda c, s, size: nearest(c, s, (size[0] + 1, size[1] + 1))[:, 1:, 1:]        # noqa: E731
    for wrong in [stub, fully_conv.upsample_scores, shifted,
                  lambda c, s, size: nearest(c, s, size)[None]]:
        assert lesson02.upsampling_ablation(wrong, fcn, images, masks, 38) is None
        outcome(capsys, False)
    assert lesson02.upsampling_ablation(centred, fcn, images, masks, 38) is not None   # F.interpolate's nearest is it
    outcome(capsys, True)
