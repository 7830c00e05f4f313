"""Self-checks for notebook 09 (recurrent captioning with soft attention; spatial transformers).

    from lecturelib.checks import lesson09 as checks
    checks.affine_grid(my_affine_grid)                       # implement
    checks.sampler_prediction(my_prediction_sampler)         # predict, then check
    checks.attention_step(my_attention_step)                 # implement
    measured = checks.window_ablation(my_centred_windows, model, images, labels)   # interpret
    checks.aim_answer(my_answer_aim, measured)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..captioning import AdditiveAttention
from ..spatial_transformer import affine_grid as _affine_grid
from ..spatial_transformer import transform, window_box
from . import CheckFailed, expect_close, refuse_reference, run_check, too_high_or_low

# the course's own implementation of each implement exercise (tests: never shown, never importable as my_*)
REFERENCES = {"my_affine_grid": "lecturelib.spatial_transformer.affine_grid",
              "my_attention_step": "lecturelib.captioning.AdditiveAttention"}

# the predict exercise: two θ on the 4x4 image 0..15, each sampled to a 2x2 output
PREDICT_IMAGE_SIDE = 4
PREDICT_THETAS = {"the top-right quarter": [[0.5, 0.0, 0.5], [0.0, 0.5, -0.5]],
                  "zoomed out 2x": [[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]}
MIN_AIM_DROP = 0.05          # the interpret question's threshold (accuracy, on the scenes the ablation evaluates)


def affine_grid(student) -> bool:
    """``student(theta float[2, 3], height, width)`` must return the grid float[height, width, 2] of
    ``F.affine_grid`` (align_corners=False): for every output pixel centre, the input point θ·(x, y, 1).
    Tested on sizes and θ the notebook does not show (1 x 1, odd, tall, a rotation, float64) and on the
    gradient with respect to θ."""

    def test():
        refuse_reference(student, _affine_grid, F.affine_grid)
        g = torch.Generator().manual_seed(9)
        rotation = torch.tensor([[0.0, -1.0, 0.25], [1.0, 0.0, -0.5]])
        cases = [(1, 1, torch.eye(2, 3)), (3, 5, torch.eye(2, 3) + 0.5 * torch.randn(2, 3, generator=g)),
                 (4, 1, rotation), (2, 7, torch.eye(2, 3, dtype=torch.float64) + 0.3 * torch.randn(
                     2, 3, generator=g, dtype=torch.float64))]
        for height, width, theta in cases:
            want = F.affine_grid(theta[None], (1, 1, height, width), align_corners=False)[0]
            got = student(theta.clone(), height, width)
            if not isinstance(got, torch.Tensor):
                raise CheckFailed(f"return a torch.Tensor, got {type(got).__name__}.")
            expect_close(got, want, what=f"the grid of a {height}x{width} output for theta {theta.tolist()}",
                         atol=1e-5 if theta.dtype == torch.float32 else 1e-10)
        theta = (torch.eye(2, 3, dtype=torch.float64) + 0.2).requires_grad_()
        got = student(theta, 3, 2)
        if not got.requires_grad:
            raise CheckFailed("the grid does not depend on theta through autograd (no gradient reaches theta): "
                              "compute it from theta with tensor operations.")
        weights = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 2, 2)
        (grad,) = torch.autograd.grad((got * weights).sum(), theta)
        ref = theta.detach().clone().requires_grad_()
        (want,) = torch.autograd.grad((F.affine_grid(ref[None], (1, 1, 3, 2), align_corners=False)[0]
                                       * weights).sum(), ref)
        expect_close(grad, want, what="the gradient of the grid with respect to theta", atol=1e-9)

    return run_check("the affine grid", test,
                     "Hint: pixel j of n has its centre at (2j + 1)/n - 1; every output pixel's (x, y, 1), "
                     "multiplied by theta, gives the input point; the last dimension holds (x, y), x first.")


def sampler_truth() -> dict[str, torch.Tensor]:
    """The 2x2 outputs of :data:`PREDICT_THETAS` on the 4x4 image 0..15, by the lesson's sampler."""
    n = PREDICT_IMAGE_SIDE
    image = torch.arange(n * n, dtype=torch.float64).reshape(1, 1, n, n)
    return {name: transform(image, torch.tensor([theta], dtype=torch.float64), 2)[0, 0]
            for name, theta in PREDICT_THETAS.items()}


def sampler_prediction(student) -> bool:
    """``student()`` returns the predicted 2x2 outputs (nested lists or tensors) of the sampler for the two θ of
    :data:`PREDICT_THETAS` on ``torch.arange(16.).reshape(4, 4)``, in that order. Within 0.01 of the truth."""

    def test():
        answer = student()
        if not isinstance(answer, (tuple, list)) or len(answer) != len(PREDICT_THETAS):
            raise CheckFailed(f"return {len(PREDICT_THETAS)} predictions, one 2x2 grid per theta, "
                              f"e.g. ([[a, b], [c, d]], [[e, f], [g, h]]).")
        for (name, want), got in zip(sampler_truth().items(), answer):
            try:
                got = torch.as_tensor(got, dtype=torch.float64)
            except (TypeError, ValueError):
                raise CheckFailed(f"{name}: your prediction {got!r} is not a 2x2 grid of numbers.") from None
            if got.shape != (2, 2):
                raise CheckFailed(f"{name}: your prediction has shape {tuple(got.shape)}, expected 2x2.")
            wrong = [(i, j) for i in range(2) for j in range(2) if abs(float(got[i, j] - want[i, j])) > 0.01]
            if wrong:
                i, j = wrong[0]
                side = too_high_or_low(got[i, j], want[i, j])
                raise CheckFailed(f"{name}: {len(wrong)} of the 4 values are wrong; the value at row {i}, "
                                  f"column {j} is {side}.")

    return run_check("your prediction of the sampler's output", test,
                     "Hint: output pixel (i, j) of 2x2 has its centre at x, y = -0.5 or +0.5; theta maps it to the "
                     "input point; x = -1 .. 1 spans the 4 columns, so column c has its centre at (2c + 1)/4 - 1 "
                     "(y points down); between centres, interpolate; beyond the outer centres, the missing "
                     "neighbour is 0.")


def attention_step(student) -> bool:
    """``student(a float[L, D], h float[H], W_a float[A, D], W_h float[A, H], w float[A])`` must return
    (z float[D], alpha float[L]): ``alpha = softmax_i(w · tanh(W_a a_i + W_h h))``, ``z = Σ_i alpha_i a_i``.
    Tested on sizes the notebook does not show (one location, large scores) and on the gradient."""

    def test():
        refuse_reference(student, AdditiveAttention, AdditiveAttention.forward)
        g = torch.Generator().manual_seed(11)
        for L, D, H, A, scale in [(4, 3, 2, 5, 1.0), (9, 6, 4, 3, 1.0), (1, 2, 3, 2, 1.0), (5, 2, 2, 4, 30.0)]:
            a, h = torch.randn(L, D, generator=g, dtype=torch.float64), torch.randn(H, generator=g, dtype=torch.float64)
            W_a = scale * torch.randn(A, D, generator=g, dtype=torch.float64)
            W_h = torch.randn(A, H, generator=g, dtype=torch.float64)
            w = (scale * torch.randn(A, generator=g, dtype=torch.float64)).requires_grad_()
            alpha = torch.softmax(torch.tanh(a @ W_a.T + W_h @ h) @ w, dim=0)
            got = student(a, h, W_a, W_h, w)
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                raise CheckFailed("return the pair (z, alpha).")
            z_got, alpha_got = got
            what = f"L={L} locations, D={D}" + (", large scores" if scale > 1 else "")
            expect_close(alpha_got, alpha, what=f"alpha ({what})", atol=1e-8)
            expect_close(z_got, alpha @ a, what=f"z ({what})", atol=1e-8)
            if abs(float(alpha_got.detach().sum()) - 1) > 1e-6:
                raise CheckFailed(f"alpha ({what}) sums to {float(alpha_got.detach().sum()):.4f}, not 1.")
            if L > 1 and scale == 1.0:
                (want,) = torch.autograd.grad((alpha @ a).sum(), w)
                (grad,) = torch.autograd.grad(z_got.sum(), w)
                expect_close(grad, want, what=f"the gradient of z with respect to w ({what})", atol=1e-8)

    return run_check("one soft-attention step", test,
                     "Hint: one score per location i (all at once: a @ W_a.T is [L, A]), a softmax over the L "
                     "locations, then the alpha-weighted average of the annotation vectors.")


# ============================================================================= interpret: the window's aim
@torch.no_grad()
def _accuracy_and_iou(model, images, labels, boxes, theta) -> tuple[float, float]:
    view = transform(images, theta, model.config.out_size)
    correct = (model.classifier(view - 0.5).argmax(dim=1) == labels).float().mean()
    from torchvision.ops import box_iou

    iou = box_iou(window_box(theta, images.shape[-2], images.shape[-1]), boxes).diagonal().mean()
    return float(correct), float(iou)


def window_ablation(change, model, images, labels, boxes) -> dict | None:
    """Apply ``change(theta float[N, 2, 3]) -> theta`` to the windows a trained spatial transformer chooses,
    classify the views of the changed windows with the same classifier, and print accuracy and window IoU with
    the item's box, learned vs changed. Returns {"learned": (acc, iou), "changed": (acc, iou)}, or None (with ❌
    and the reason) when the change fails."""
    result = {}

    def test():
        model.eval()
        with torch.no_grad():
            learned = model.theta(images).float()
        changed = change(learned.clone())
        if not isinstance(changed, torch.Tensor) or tuple(changed.shape) != tuple(learned.shape):
            got = tuple(changed.shape) if isinstance(changed, torch.Tensor) else type(changed).__name__
            raise CheckFailed(f"return theta of the same shape {tuple(learned.shape)}, got {got}.")
        if torch.equal(changed, learned):
            raise CheckFailed("your change returns the learned windows unchanged.")
        result["learned"] = _accuracy_and_iou(model, images, labels, boxes, learned)
        result["changed"] = _accuracy_and_iou(model, images, labels, boxes, changed.float())

    ok = run_check("the windows' aim ablation", test, "Hint: theta[:, :, 2] holds each window's centre (tx, ty).")
    if not ok:
        return None
    print(f"{'windows':24s}{'accuracy':>10s}{'IoU with item':>15s}   ({len(labels)} test images)")
    for name in ("learned", "changed"):
        acc, iou = result[name]
        print(f"{name:24s}{acc:10.3f}{iou:15.3f}")
    return result


def aim_answer(student, measured) -> bool:
    """``student(measured) -> bool``: True if centring the windows (keeping their size) cost at least
    :data:`MIN_AIM_DROP` of accuracy in ``measured`` (the output of :func:`window_ablation`), else False."""

    def test():
        if measured is None:
            raise CheckFailed("run the ablation above first (it returned None).")
        answer = student(measured)
        if not isinstance(answer, bool):
            raise CheckFailed(f"answer True or False, got {answer!r}.")
        drop = measured["learned"][0] - measured["changed"][0]
        truth = drop >= MIN_AIM_DROP
        if answer != truth:
            raise CheckFailed(f"your answer ({answer}) does not match your measured table: compare the drop "
                              f"in accuracy from 'learned' to 'changed' above with MIN_AIM_DROP = {MIN_AIM_DROP}.")

    return run_check("the window's aim", test,
                     f"Hint: the question is whether accuracy falls by at least {MIN_AIM_DROP} when only the "
                     "windows' centres change.")
