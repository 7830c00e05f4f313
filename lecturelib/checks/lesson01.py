"""Self-checks for lesson 01 (patch classification).

    from lecturelib.checks import lesson01 as checks
    checks.conv_outputs(my_prediction_conv_outputs)                       # predict
    checks.patch_extractor(my_extract_patch)                              # implement
    measured = checks.context_ablation(my_keep_centre, models, images, masks)   # interpret: the change ...
    checks.context_answer(my_answer_context, measured)                    # ... and the answer
"""
from __future__ import annotations

import torch

from ..metrics import ConfusionMatrix
from ..patch import conv_output_count, extract_patch, extract_patches, pad_for_patches
from ..scenes import NUM_CLASSES
from . import CheckFailed, call_case, expect_close, refuse_reference, run_check, too_high_or_low, whole_numbers

# the course's own implementation of each implement exercise (tests: never shown with show_source)
REFERENCES = {"my_extract_patch": "lecturelib.patch.extract_patch"}

PREDICT_PATCH, PREDICT_SIDE, PREDICT_STAGES = 38, 64, 2      # the setting of the conv-output prediction
ABLATION_PATCH = 38                                         # the checkpoint whose context is taken away
ABLATION_WINDOWS = (38, 22, 10)                             # central windows it keeps (38 = the whole patch)
ABLATION_PIXELS = 3000                                      # test pixels drawn uniformly (one fixed draw)


def conv_outputs(student) -> bool:
    """``student() -> (computed, distinct)``: the first convolution's outputs (per channel) the per-pixel loop
    computes for a 64x64 image with 38-pixel patches, and how many of them are distinct. The truth comes from
    :func:`lecturelib.patch.conv_output_count`."""
    def test():
        computed, distinct = whole_numbers(student(), ("computed", "distinct"))
        first = conv_output_count(PREDICT_PATCH, PREDICT_STAGES, PREDICT_SIDE, PREDICT_SIDE)[0]
        wrong = []
        if computed != first["computed"]:
            wrong.append(f"computed is {too_high_or_low(computed, first['computed'])}: every one of the "
                         f"{PREDICT_SIDE}x{PREDICT_SIDE} pixels has its own patch, and the first 3x3 convolution "
                         f"(no padding) turns each {PREDICT_PATCH}x{PREDICT_PATCH} patch into a map of its own")
        if distinct != first["distinct"]:
            wrong.append(f"distinct is {too_high_or_low(distinct, first['distinct'])}: a convolution output is fixed "
                         "by its position in the (reflect-padded) image, so count the positions where a 3x3 window "
                         "fits inside the padded image that the patches are cut from")
        if wrong:
            raise CheckFailed("; ".join(wrong) + ".")
    return run_check("conv outputs of the per-pixel loop", test)


def patch_extractor(student) -> bool:
    """``student(image float[C, H, W], y, x, patch_size) -> float[C, P, P]`` vs. :func:`..patch.extract_patch`
    on images, pixels and patch sizes the notebook does not show (odd and even sizes, every corner, P = 1, one
    channel) and on the gradient."""
    def test():
        refuse_reference(student, extract_patch, pad_for_patches, extract_patches)
        g = torch.Generator().manual_seed(1)
        image = torch.rand(3, 9, 11, generator=g)
        gray = torch.rand(1, 6, 5, generator=g)
        cases = [(image, 4, 5, 5), (image, 0, 0, 5), (image, 8, 10, 5), (image, 0, 10, 3), (image, 8, 0, 7),
                 (image, 3, 1, 4), (image, 2, 9, 6), (image, 5, 5, 1), (image, 7, 3, 8), (gray, 0, 4, 4),
                 (gray, 5, 0, 9)]
        for img, y, x, p in cases:
            what = f"the patch of (y={y}, x={x}), patch_size={p}, in a {tuple(img.shape)} image"
            got = call_case(what, student, img.clone(), y, x, p)
            if not isinstance(got, torch.Tensor):
                raise CheckFailed(f"{what}: return a torch.Tensor, got {type(got).__name__}.")
            expect_close(got, extract_patch(img, y, x, p), what=what, atol=0, rtol=0)
        leaf = image.clone().requires_grad_(True)
        try:
            student(leaf, 0, 0, 6).sum().backward()
        except RuntimeError as exc:
            raise CheckFailed(f"the patch must stay differentiable (no .numpy(), no in-place writes into the "
                              f"image): backward raised {exc}") from None
        ref = image.clone().requires_grad_(True)
        extract_patch(ref, 0, 0, 6).sum().backward()
        expect_close(leaf.grad, ref.grad, what="the gradient of the corner patch's sum with respect to the image")
    return run_check("centre-pixel patch extractor", test,
                     "Hint: pad the image so that every pixel's window fits, by mirroring it at the border "
                     "(P // 2 above and left, the rest below and right); pixel (y, x) of the image sits at "
                     "(y + P // 2, x + P // 2) of the padded image.")


def _window(p: int, keep: int) -> slice:
    start = p // 2 - keep // 2
    return slice(start, start + keep)


def _check_keep_centre(student) -> None:
    """The learner's change must do what the exercise asks, or the measurement would mean nothing."""
    g = torch.Generator().manual_seed(5)
    patches = torch.rand(4, 3, ABLATION_PATCH, ABLATION_PATCH, generator=g)
    for keep in (22, 10, 3):
        got = call_case(f"keep={keep}", student, patches.clone(), keep)
        if not isinstance(got, torch.Tensor) or got.shape != patches.shape:
            raise CheckFailed(f"keep={keep}: return a tensor of the patches' shape {tuple(patches.shape)}, got "
                              f"{getattr(got, 'shape', type(got).__name__)}.")
        win = _window(ABLATION_PATCH, keep)
        expect_close(got[..., win, win], patches[..., win, win],
                     what=f"keep={keep}: the central {keep}x{keep} window "
                          f"(rows and columns {win.start}..{win.stop - 1})")
        want = patches.clone()
        mean = patches[..., win, win].mean((-2, -1), keepdim=True)            # (B, 3, 1, 1)
        want[:] = mean
        want[..., win, win] = patches[..., win, win]
        expect_close(got, want, what=f"keep={keep}: the pixels outside the window (the window's mean colour, "
                                     "per patch and channel)")


def context_ablation(student, models: dict, images: torch.Tensor, masks: torch.Tensor) -> dict | None:
    """Take context away from the 38-pixel checkpoint at test time and measure it.

    ``student(patches float[B, 3, P, P], keep) -> float[B, 3, P, P]`` keeps the central ``keep x keep`` window of
    every patch and fills the rest with the window's mean colour. ``models``: {patch size: patch classifier} with
    sizes 10, 22 and 38 (the course checkpoints). On ``ABLATION_PIXELS`` pixels drawn uniformly (a fixed draw) from
    ``images`` float[N, 3, H, W] / ``masks`` int64[N, H, W] it measures the 38-pixel checkpoint with windows 38, 22
    and 10 and the checkpoints trained on 22- and 10-pixel patches. Prints the table; returns
    ``{"blanked": {window: miou}, "trained": {patch size: miou}, "background": miou}``, or None when the change
    fails (then the printed ❌ says why).
    """
    results = {}

    def test():
        _check_keep_centre(student)
        missing = {10, 22, ABLATION_PATCH} - set(models)
        if missing:
            raise CheckFailed(f"models needs the checkpoints of patch sizes {sorted(missing)} too.")
        g = torch.Generator().manual_seed(0)
        n, h, w = masks.shape
        index = torch.randint(0, n, (ABLATION_PIXELS,), generator=g)
        ys = torch.randint(0, h, (ABLATION_PIXELS,), generator=g)
        xs = torch.randint(0, w, (ABLATION_PIXELS,), generator=g)
        labels = masks[index, ys, xs]

        def miou(model, p, keep=None):
            padded = pad_for_patches(images, p)
            cm = ConfusionMatrix(NUM_CLASSES)
            with torch.no_grad():
                for s in range(0, ABLATION_PIXELS, 500):
                    batch = extract_patches(padded, index[s:s + 500], ys[s:s + 500], xs[s:s + 500], p)
                    if keep is not None:
                        batch = student(batch, keep)
                    cm.update(model.eval()(batch).argmax(1), labels[s:s + 500])
            return cm.compute()["miou"]

        results["blanked"] = {k: miou(models[ABLATION_PATCH], ABLATION_PATCH, k) for k in ABLATION_WINDOWS}
        results["trained"] = {p: miou(models[p], p) for p in (ABLATION_PATCH, 22, 10)}
        cm = ConfusionMatrix(NUM_CLASSES)
        cm.update(torch.zeros_like(labels), labels)
        results["background"] = cm.compute()["miou"]

    if not run_check("the 38-pixel checkpoint with its context blanked", test,
                     "Hint: copy the patches, compute the mean of the central window per patch and channel, fill "
                     "the whole patch with it, then put the window back."):
        return None
    print(f"mIoU on {ABLATION_PIXELS} test pixels of {len(images)} scenes (the same pixels for every row)")
    print(f"{'window seen':>12} {'P = 38, rest blanked':>21} {'checkpoint trained at that size':>32}")
    for k in ABLATION_WINDOWS:
        print(f"{f'{k}x{k}':>12} {results['blanked'][k]:>21.3f} {results['trained'][k]:>32.3f}")
    print(f"{'all background':>12} {results['background']:>21.3f}")
    return results


CONTEXT_CHOICES = ("trained", "blanked", "mixed")


def context_answer(student, measured: dict | None) -> bool:
    """``student(measured) -> "trained" | "blanked" | "mixed"``, verified against the learner's own ``measured``
    (the dict :func:`context_ablation` returned)."""
    def test():
        if measured is None:
            raise CheckFailed("run the ablation above first (its check must pass).")
        got = student(measured)
        if got not in CONTEXT_CHOICES:
            raise CheckFailed(f"answer one of {CONTEXT_CHOICES}, got {got!r}.")
        small = [k for k in ABLATION_WINDOWS if k != ABLATION_PATCH]
        trained_wins = [measured["trained"][k] > measured["blanked"][k] for k in small]
        want = "trained" if all(trained_wins) else "blanked" if not any(trained_wins) else "mixed"
        if got != want:
            raise CheckFailed(f"your table says otherwise: compare the two columns row by row for the "
                              f"{' and '.join(f'{k}x{k}' for k in small)} windows.")
    return run_check("what context does to the 38-pixel checkpoint", test,
                     "Hint: a network trained on large patches has learned to read the whole patch; the question "
                     "is whether it still labels well when part of what it learned to read is gone.")
