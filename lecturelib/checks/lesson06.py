"""Self-checks of lesson 06 (skip connections): map sizes, two ablations of the FCN-8s checkpoint, max-unpooling.

    from lecturelib.checks import lesson06 as checks
    checks.map_sizes(my_prediction_map_sizes)                        # predict: the feature maps of a 100x70 image
    measured = checks.skip_ablation(my_remove_pool3_skip)            # ablate: FCN-8s without its stride-8 skip
    checks.skip_answer(my_answer_skip, measured)                     # interpret: what the measurement says
    measured = checks.upsampler_ablation(my_bilinear_upsamplers)     # ablate: learned x2 upsamplers -> bilinear
    checks.upsampler_answer(my_answer_upsampler, measured)
    checks.unpool(my_unpool)                                         # implement: DeconvNet's max-unpooling

The ablations change a copy of the shipped FCN-8s checkpoint (seed 0), verify the change (only the layers the
exercise names may differ), and evaluate it on the first ``ABLATION_SCENES`` test scenes of the checkpoint, beside
the unchanged model: a few seconds on one CPU thread.
"""
from __future__ import annotations

import copy
import math
from unittest import mock

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import deconvnet as _deconvnet
from ..deconvnet import max_unpool as _ref_max_unpool
from ..evaluate import load_course_model, test_task
from ..fcn import fcn8s
from ..metrics import boundary_band, segmentation_report
from ..scenes import CLASS_NAMES, NUM_CLASSES
from ..upsampling import bilinear_kernel
from . import CheckFailed, expect_close, refuse_reference, run_check, too_high_or_low

# the implement exercise's name -> the course's own implementation of it
REFERENCES = {"my_unpool": "lecturelib.deconvnet.max_unpool"}

MAP_SIZE_INPUT = (100, 70)                 # (rows, columns) of the image of Exercise 1
MAP_KEYS = ("pool3", "pool4", "fc7", "fc7 x2")
ABLATION_SCENES = 32                       # test scenes of the checkpoint the ablations are evaluated on
ABLATED_SKIP = "FCN-8s without pool3"
BILINEAR = "FCN-8s, bilinear x2"
SKIP_LABELS = ("FCN-16s", ABLATED_SKIP)
UPSAMPLER_LABELS = ("boundary", "classes")


# ============================================================================ Exercise 1: predict the map sizes
def true_map_sizes(size: tuple[int, int] = MAP_SIZE_INPUT) -> dict[str, tuple[int, int]]:
    """(rows, columns) of FCN-8s's pool3, pool4 and fc7 maps for an image of ``size``, and of the fc7 scores
    after the learned x2 upsampling (before the crop that fits them to pool4), measured by running the model."""
    model = fcn8s(num_classes=2, width=1).eval()
    with torch.no_grad():
        feats = model.backbone(torch.zeros(1, 3, *size))
        up = model.head.up2_fr(model.head.score_fr(feats["fc7"]))
    sizes = {k: tuple(int(v) for v in feats[k].shape[-2:]) for k in ("pool3", "pool4", "fc7")}
    sizes["fc7 x2"] = tuple(int(v) for v in up.shape[-2:])
    return sizes


def map_sizes(student) -> bool:
    """``student()`` returns {"pool3": (rows, cols), "pool4": ..., "fc7": ..., "fc7 x2": ...} for a 100x70 image."""
    def test():
        got = student()
        if not isinstance(got, dict) or set(got) != set(MAP_KEYS):
            raise CheckFailed(f"return a dict with the keys {list(MAP_KEYS)}, got {got!r}.")
        wrong = []
        for key, want in true_map_sizes().items():
            try:
                rows, cols = (int(v) for v in got[key])
            except (TypeError, ValueError):
                raise CheckFailed(f"{key}: answer with (rows, columns), got {got[key]!r}.") from None
            for what, a, b in (("rows", rows, want[0]), ("columns", cols, want[1])):
                if a != b:
                    wrong.append(f"{key} {what}: {a} is {too_high_or_low(a, b)}")
        if wrong:
            raise CheckFailed("; ".join(wrong) + ".")
    return run_check("Exercise 1: feature-map sizes predicted", test,
                     hint="Hint: each 2x2 pool halves a side and rounds *up* (ceil_mode: a last half cell still "
                          "gets a cell); fc6/fc7 keep the size; a x2 upsampling doubles exactly, before any crop.")


# ============================================================================ the ablations
def _scenes(name: str, info: dict, n: int = ABLATION_SCENES) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` test scenes (images, labels) of checkpoint ``name`` (cached by lecturelib.evaluate)."""
    x, y = test_task(name, info).test_set.tensors
    return x[:n], y[:n]


@torch.no_grad()
def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """mIoU, pixel accuracy, boundary accuracy (within 2 px of a label change), interior accuracy (the other
    pixels) and IoU per class name (NaN for a class absent from both) of ``model`` on images x, labels y."""
    pred = model(x)["out"].argmax(1)
    report = segmentation_report(pred, y, NUM_CLASSES)
    band = boundary_band(y)
    interior = (pred[~band] == y[~band]).double().mean().item()
    return {"miou": report["miou"], "pixel_acc": report["pixel_acc"], "boundary_acc": report["boundary_acc"],
            "interior_acc": interior, "iou": dict(zip(CLASS_NAMES, report["iou"]))}


def _apply_change(change, model: nn.Module, expected: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` changed by ``change``; CheckFailed unless exactly the entries of ``expected`` (state-dict
    name -> wanted value) changed, to those values."""
    changed = copy.deepcopy(model)
    out = change(changed)
    if isinstance(out, nn.Module):
        changed = out
    if type(changed) is not type(model):
        raise CheckFailed(f"change the model you are given in place (got a {type(changed).__name__} back).")
    before, after = model.state_dict(), changed.state_dict()
    if set(after) != set(before):
        raise CheckFailed("the model's layers changed; change the weights of the layers named, nothing else.")
    for key, want in expected.items():
        if after[key].shape != want.shape or not torch.allclose(after[key].float(), want.float(), atol=1e-6):
            raise CheckFailed(f"{key} is not what the exercise asks for (largest difference "
                              f"{(after[key].float() - want.float()).abs().max().item():.3g}).")
    touched = [k for k in before if k not in expected and not torch.equal(before[k], after[k])]
    if touched:
        raise CheckFailed(f"you also changed {touched[0]}" + (f" and {len(touched) - 1} more" if len(touched) > 1
                                                               else "") + "; change only the layers named.")
    return changed.eval()


def _fmt(v: float) -> str:
    return "   -" if isinstance(v, float) and math.isnan(v) else f"{v:.3f}"


def print_table(measured: dict[str, dict], scenes: int) -> None:
    """The summary metrics and the IoU per class of every model in ``measured``, side by side."""
    names = list(measured)
    width = max(12, *(len(n) for n in names))
    print(f"first {scenes} test scenes of the checkpoint")
    print(f"{'':>14} " + " ".join(f"{n:>{width}}" for n in names))
    for key, label in (("miou", "mIoU"), ("boundary_acc", "boundary acc"), ("interior_acc", "interior acc")):
        print(f"{label:>14} " + " ".join(f"{_fmt(measured[n][key]):>{width}}" for n in names))
    print(f"{'IoU per class':>14}")
    for cname in CLASS_NAMES:
        print(f"{cname[:14]:>14} " + " ".join(f"{_fmt(measured[n]['iou'][cname]):>{width}}" for n in names))


def _ablation(title: str, change, expected_of, others: dict[str, str], label: str, hint: str) -> dict | None:
    """Run an ablation check: apply ``change`` to FCN-8s seed 0 (verified against ``expected_of(model)``),
    evaluate it beside FCN-8s and the ``others`` checkpoints ({label: model name}); print and return the table."""
    result = {}

    def test():
        model, info = load_course_model("fcn8s", 0)
        changed = _apply_change(change, model, expected_of(model))
        x, y = _scenes("fcn8s", info)
        result["FCN-8s"] = measure(model, x, y)
        result[label] = measure(changed, x, y)
        for other, name in others.items():
            result[other] = measure(load_course_model(name, 0)[0], x, y)

    if not run_check(title, test, hint):
        return None
    print_table(result, ABLATION_SCENES)
    return result


def _zero_pool3(model: nn.Module) -> dict[str, torch.Tensor]:
    layer = model.head.score_pool3
    return {"head.score_pool3.weight": torch.zeros_like(layer.weight),
            "head.score_pool3.bias": torch.zeros_like(layer.bias)}


def skip_ablation(change) -> dict | None:
    """``change(model)`` removes the pool3 skip of an FCN-8s (zeroes its score layer ``head.score_pool3``) in place.

    Returns {"FCN-8s": metrics, "FCN-8s without pool3": metrics, "FCN-16s": metrics} (see :func:`measure`) on the
    first ``ABLATION_SCENES`` test scenes, or None when the change is not the one asked for."""
    return _ablation("Exercise 2: the pool3 skip removed", change, _zero_pool3, {"FCN-16s": "fcn16s"}, ABLATED_SKIP,
                     hint="Hint: the skip enters through the 1x1 score layer model.head.score_pool3; a layer whose "
                          "weight and bias are all zero adds nothing. Change those two tensors in place "
                          "(under torch.no_grad()).")


def _bilinear_ups(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("up2_fr", "up2_pool4"):
        w = getattr(model.head, name).up.weight                      # (K, K, 4, 4)
        out[f"head.{name}.up.weight"] = bilinear_kernel(w.shape[0], w.shape[1], w.shape[-1])
    return out


def upsampler_ablation(change) -> dict | None:
    """``change(model)`` sets the two learned x2 upsamplers of an FCN-8s (``head.up2_fr`` and ``head.up2_pool4``)
    back to bilinear interpolation (their initialisation, :func:`lecturelib.upsampling.bilinear_kernel`).

    Returns {"FCN-8s": metrics, "FCN-8s, bilinear x2": metrics}, or None when the change is not the one asked for."""
    return _ablation("Exercise 3: learned x2 upsamplers -> bilinear", change, _bilinear_ups, {}, BILINEAR,
                     hint="Hint: each learned x2 layer is a ConvTranspose2d at model.head.up2_fr.up and "
                          "model.head.up2_pool4.up; bilinear_kernel(channels_in, channels_out, kernel_size) gives "
                          "the weight it started from. Copy it in under torch.no_grad().")


def _drop(measured: dict, changed: str, key: str) -> float:
    return measured["FCN-8s"][key] - measured[changed][key]


def _answer_check(title: str, student, measured, labels: tuple[str, ...], truth_of, hint: str) -> bool:
    def test():
        if not measured:
            raise CheckFailed("run the ablation above first (its check must pass: it returns the measurement).")
        got = student(measured)
        if got not in labels:
            raise CheckFailed(f"answer with one of {list(labels)}, got {got!r}.")
        want = truth_of(measured)
        if got != want:
            raise CheckFailed(f"{got!r} is not what the measurement above says.")
    return run_check(title, test, hint)


def skip_answer(student, measured) -> bool:
    """``student(measured)`` answers "FCN-16s" or "FCN-8s without pool3": which has the higher mIoU in ``measured``
    (the result of :func:`skip_ablation`)."""
    def truth(m):
        return "FCN-16s" if m["FCN-16s"]["miou"] >= m[ABLATED_SKIP]["miou"] else ABLATED_SKIP
    return _answer_check("Exercise 2: reading the skip ablation", student, measured, SKIP_LABELS, truth,
                         hint="Hint: compare the mIoU row of the two columns; both models lack a stride-8 skip, "
                              "but only one of them was trained that way.")


def upsampler_answer(student, measured) -> bool:
    """``student(measured)`` answers "boundary" if bilinear x2 upsamplers cost more points of boundary accuracy than
    of mIoU in ``measured`` (the result of :func:`upsampler_ablation`), else "classes"."""
    def truth(m):
        return "boundary" if _drop(m, BILINEAR, "boundary_acc") > _drop(m, BILINEAR, "miou") else "classes"
    return _answer_check("Exercise 3: reading the upsampler ablation", student, measured, UPSAMPLER_LABELS, truth,
                         hint="Hint: subtract the bilinear column from the FCN-8s column, once for boundary "
                              "accuracy and once for mIoU; the larger loss names the answer.")


# ============================================================================ Exercise 4: implement max-unpooling
def unpool(student) -> bool:
    """``student(values, indices, size)`` scatters each value to its switch (like ``F.max_unpool2d``).

    Refuses the course's ``max_unpool`` and PyTorch's unpooling; tests odd sizes (ceil_mode pools), values that are
    not the pooled maxima, gradients, and DeconvNet's checkpoint run with the student's unpooling."""
    def test():
        refuse_reference(student, _ref_max_unpool, F.max_unpool2d, nn.MaxUnpool2d)
        gen = torch.Generator().manual_seed(3)
        for shape in [(2, 3, 7, 5), (1, 2, 9, 9), (3, 1, 1, 6), (1, 1, 2, 2)]:
            x = torch.randn(*shape, generator=gen)
            _, i = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)
            g = torch.randn(i.shape, generator=gen)          # decoder features, not the pooled values themselves
            got = student(g, i, shape[-2:])
            if not isinstance(got, torch.Tensor):
                raise CheckFailed(f"return a tensor, got {type(got).__name__}.")
            expect_close(got, _ref_max_unpool(g, i, shape[-2:]), what=f"unpooling of a {tuple(shape)} map")
        # gradients: d(sum(out * u)) / d(values) must be u read at the switches
        x = torch.randn(2, 2, 5, 7, generator=gen)
        _, i = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)
        v = torch.randn(i.shape, generator=gen, requires_grad=True)
        u = torch.randn(x.shape, generator=gen)
        out = student(v, i, (5, 7))
        if not out.requires_grad:
            raise CheckFailed("no gradient flows from your output back to the values; build it with torch "
                              "operations on them (no .detach(), .item() or numpy).")
        (grad,) = torch.autograd.grad((out * u).sum(), v)
        expect_close(grad, u.flatten(2).gather(2, i.flatten(2)).view_as(v), what="gradient with respect to values")
        # plugged into the DeconvNet checkpoint, it must give the checkpoint's own predictions
        model, info = load_course_model("deconvnet", 0)
        xs = _scenes("deconvnet", info, 4)[0]
        with torch.no_grad():
            want = model(xs)["out"]
            with mock.patch.object(_deconvnet, "max_unpool", student):
                got = model(xs)["out"]
        expect_close(got, want, what="DeconvNet checkpoint's scores with your unpooling (4 test scenes)", atol=1e-4)
    return run_check("Exercise 4: max-unpooling with the pooling switches", test,
                     hint="Hint: flatten each (sample, channel) plane: the switch is the position in the flattened "
                          "H*W plane; start from zeros and write each value at its position.")
