"""Self-checks for notebook 04 (recurrent refinement).

Exercises: predict the receptive field after three iterations; implement one refinement step and the unrolled loss;
interpret: run a shipped recurrent checkpoint for 1 to 5 iterations and say where the gain is made.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from . import CheckFailed, expect_close, expect_equal, refuse_reference, run_check

REFERENCES = {
    "my_refinement_step": "lecturelib.recurrent.refinement_step",
    "my_unrolled_loss": "lecturelib.recurrent.unrolled_loss",
}

RF_TOLERANCE = 0.15          # a prediction within 15 % of the measured receptive field counts as right


# ----------------------------------------------------------------------------- exercise 1 (predict)


def window_after(iterations: int, size: int = 192) -> int:
    """The receptive field (pixels) of lesson 04's recurrent network after ``iterations`` iterations, measured with
    autograd on a fresh, narrow copy (the window depends on the layers, not on their width) on ``size``-pixel
    images (large enough that the border does not cut it)."""
    from ..multiscale import empirical_receptive_field
    from ..recurrent import RecurrentRefiner, RefinementConfig

    model = RecurrentRefiner(RefinementConfig(width=4, hidden=8)).eval()
    return empirical_receptive_field(lambda x: model(x, iterations=iterations), size=size)


def receptive_field(student) -> bool:
    """``student()`` returns the predicted receptive field (pixels) after 3 iterations; right within 15 %."""

    def test():
        got = student()
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            raise CheckFailed(f"return a number of pixels, got {got!r}.")
        want = window_after(3)
        if abs(got - want) <= RF_TOLERANCE * want:
            return
        if got < want:
            raise CheckFailed(f"{got} px is too small (more than {RF_TOLERANCE:.0%} below the measured window): "
                              "each iteration widens it.")
        raise CheckFailed(f"{got} px is too large (more than {RF_TOLERANCE:.0%} above the measured window): "
                          "the iterations do not multiply the window.")

    return run_check(f"receptive field after 3 iterations (within {RF_TOLERANCE:.0%})", test,
                     "Hint: iteration 2 reads, at every pixel of its own window, a probability that iteration 1 "
                     "computed from a window around that pixel; how much wider does that make it, and what does "
                     "iteration 3 add?")


# ----------------------------------------------------------------------------- exercise 2 (implement)


def _channel_mixer(in_channels: int, num_classes: int, seed: int) -> nn.Module:
    """A small fixed CNN (3×3 conv, tanh, 1×1 conv) that reads every input channel differently."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(in_channels, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, num_classes, 1)).double()


def refinement_step(student) -> bool:
    """``student(cnn, image, prev_logits)`` must equal :func:`lecturelib.recurrent.refinement_step`, forward and
    backward, for class counts, image sizes and networks the exercise did not show."""
    from ..recurrent import refinement_step as reference

    def test():
        refuse_reference(student, reference)
        g = torch.Generator().manual_seed(6)
        for case, (n, c, h, w), scale in [("2 images of 9×13 px, 5 classes", (2, 5, 9, 13), 3.0),
                                          ("1 image of 16×7 px, 2 classes", (1, 2, 16, 7), 1.0),
                                          ("3 images of 8×8 px, 11 classes, very confident logits",
                                           (3, 11, 8, 8), 40.0)]:
            cnn = _channel_mixer(3 + c, c, seed=n * c)
            image = torch.rand(n, 3, h, w, generator=g, dtype=torch.float64)
            prev = scale * torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
            xs, ps = image.clone().requires_grad_(), prev.clone().requires_grad_()
            xr, pr = image.clone().requires_grad_(), prev.clone().requires_grad_()
            got, want = student(cnn, xs, ps), reference(cnn, xr, pr)
            if not isinstance(got, torch.Tensor):
                raise CheckFailed(f"for {case}: expected a tensor of logits, got {type(got).__name__}.")
            expect_close(got, want, what=f"the logits for {case}", atol=1e-6)
            weight = torch.rand(want.shape, generator=g, dtype=torch.float64)
            if not got.requires_grad:
                raise CheckFailed(f"for {case}: the logits carry no gradient (was something detached?).")
            (weight * got).sum().backward()
            (weight * want).sum().backward()
            if ps.grad is None:
                raise CheckFailed(f"for {case}: no gradient reaches prev_logits: training through the iterations "
                                  "needs it (argmax or detach cut it).")
            expect_close(ps.grad, pr.grad, what=f"the gradient with respect to prev_logits for {case}", atol=1e-6)
            expect_close(xs.grad, xr.grad, what=f"the gradient with respect to the image for {case}", atol=1e-6)

    return run_check("one refinement step", test,
                     "Hint: the network reads probabilities, not logits (a softmax over the classes), stacked "
                     "after the centred image, in that channel order; keep everything differentiable.")


# ----------------------------------------------------------------------------- exercise 3 (implement)


def unrolled_loss(student) -> bool:
    """``student(logits_list, target)`` must equal :func:`lecturelib.recurrent.unrolled_loss`, forward and backward,
    for iteration counts, ignored pixels and confident logits the exercise did not show."""
    from ..recurrent import unrolled_loss as reference

    def test():
        refuse_reference(student, reference)
        g = torch.Generator().manual_seed(7)
        for case, n, shape, scale in [("1 iteration, 3 classes, 5×7 px, 3 pixels labelled 255", 1, (2, 3, 5, 7), 1.0),
                                      ("4 iterations, 6 classes, 8×8 px, 3 pixels labelled 255", 4, (2, 6, 8, 8), 2.0),
                                      ("2 iterations with very confident logits (up to ±60), 3 pixels labelled 255",
                                       2, (1, 4, 6, 6), 20.0)]:
            target = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
            target[0, 0, :3] = 255                                  # ignored pixels
            logits = [scale * torch.randn(*shape, generator=g, dtype=torch.float64) for _ in range(n)]
            mine = [t.clone().requires_grad_() for t in logits]
            ref = [t.clone().requires_grad_() for t in logits]
            got, want = student(mine, target), reference(ref, target)
            if not isinstance(got, torch.Tensor) or got.dim() != 0:
                raise CheckFailed(f"for {case}: expected a scalar tensor, got "
                                  f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}.")
            expect_close(got, want, what=f"the loss for {case}", atol=1e-6)
            got.backward()
            want.backward()
            for t, (a, b) in enumerate(zip(mine, ref), start=1):
                if a.grad is None:
                    raise CheckFailed(f"for {case}: no gradient reaches iteration {t}'s logits.")
                expect_close(a.grad, b.grad, what=f"the gradient of iteration {t}'s logits for {case}", atol=1e-6)

    return run_check("unrolled loss", test,
                     "Hint: every iteration's labelling is scored by the same pixel loss (pixels labelled 255 do "
                     "not count), and the iterations weigh equally whatever their number.")


# ----------------------------------------------------------------------------- exercise 4 (interpret)


def iterations_ablation(student, model, images: torch.Tensor, targets: torch.Tensor,
                        max_iterations: int = 5) -> dict | None:
    """Run ``student(model, images, iterations)`` (the logits after every iteration, from uniform probabilities) for
    ``max_iterations`` iterations of the shipped recurrent ``model`` and score every iteration on ``targets``.

    Prints mIoU and boundary accuracy per iteration; returns {"miou": [...], "boundary_acc": [...]} (index 0 =
    iteration 1), or None if the iterations differ from the model's own (with ❌ and the reason).
    """
    from ..metrics import segmentation_report
    from ..scenes import NUM_CLASSES

    model.eval()
    out = {}

    def test():
        with torch.no_grad():
            got = student(model, images, max_iterations)
            want = model.forward_all(images[:4], max_iterations)       # the model's own, on a few scenes
        if not isinstance(got, (list, tuple)):
            raise CheckFailed(f"return a list with the logits after every iteration, got {type(got).__name__}.")
        expect_equal(len(got), max_iterations, what=f"the number of logit maps for {max_iterations} iterations")
        for t, (a, b) in enumerate(zip(got, want), start=1):
            if not isinstance(a, torch.Tensor) or a.shape[0] != len(images):
                raise CheckFailed(f"the logits after iteration {t} should be a tensor with one map per image.")
            expect_close(a[:4], b, what=f"the logits after iteration {t}", atol=1e-4)
        reports = [segmentation_report(a.argmax(1), targets, NUM_CLASSES) for a in got]
        out["miou"] = [r["miou"] for r in reports]
        out["boundary_acc"] = [r["boundary_acc"] for r in reports]

    if not run_check(f"{max_iterations} iterations of the shipped model", test,
                     "Hint: start from all-zero logits (uniform probabilities), apply one refinement step of "
                     "model.cnn per iteration, and keep every iteration's logits."):
        return None
    print(f"{len(images)} test scenes")
    print(f"{'iteration':>10}{'mIoU':>8}{'gain':>8}{'boundary acc':>14}")
    for t, (m, b) in enumerate(zip(out["miou"], out["boundary_acc"]), start=1):
        gain = f"{m - out['miou'][t - 2]:+8.3f}" if t > 1 else f"{'':>8}"
        print(f"{t:>10}{m:8.3f}{gain}{b:14.3f}")
    return out


def where_the_gain_is(student, measured) -> bool:
    """``student(measured)`` returns {"best": the iteration with the highest mIoU, "largest_gain_at": the iteration
    that adds the most mIoU to the one before it (2 or later)}, both read from ``measured``
    (the dict :func:`iterations_ablation` returned)."""

    def test():
        if measured is None:
            raise CheckFailed("there are no measurements: run the iterations above first (their check must pass).")
        got = student(measured)
        if not isinstance(got, dict) or set(got) != {"best", "largest_gain_at"}:
            raise CheckFailed(f"return a dict with the keys 'best' and 'largest_gain_at', got {got!r}.")
        miou = measured["miou"]
        best = max(range(1, len(miou) + 1), key=lambda t: miou[t - 1])
        step = max(range(2, len(miou) + 1), key=lambda t: miou[t - 1] - miou[t - 2])
        if got["best"] != best:
            raise CheckFailed(f"'best': iteration {got['best']!r} does not have the highest mIoU in your table.")
        if got["largest_gain_at"] != step:
            raise CheckFailed(f"'largest_gain_at': iteration {got['largest_gain_at']!r} does not add the most mIoU "
                              "to the iteration before it.")

    return run_check("where the iterations help", test,
                     "Hint: 'best' is the row with the largest mIoU; 'largest_gain_at' is the row with the largest "
                     "'gain' (mIoU minus the row above).")
