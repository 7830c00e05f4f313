"""Self-checks of lesson 05 (transposed convolution).

    from lecturelib.checks import lesson05 as checks
    checks.output_sizes(my_prediction_output_sizes)        # predict: output sides of five settings
    checks.uneven_overlap(my_prediction_uneven)            # predict: which (kernel, stride) pairs overlap unevenly
    checks.scatter(my_scatter)                             # implement: the scatter view
    checks.backward_pass(my_transposed_by_autograd)        # implement: the gradient of conv2d

Every truth is computed here from the course's own functions (:func:`lecturelib.transposed.conv_transpose_output_size`,
:func:`lecturelib.frames.phase_counts`, :func:`lecturelib.transposed.conv_transpose_scatter`), never typed in.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..frames import phase_counts
from ..transposed import (
    conv_transpose,
    conv_transpose_autograd,
    conv_transpose_gather,
    conv_transpose_matrix,
    conv_transpose_output_size,
    conv_transpose_scatter,
)
from . import CheckFailed, expect_close, refuse_reference, run_check, too_high_or_low

# the implement exercises' names -> the course's own implementation of each
REFERENCES = {"my_scatter": "lecturelib.transposed.conv_transpose_scatter",
              "my_transposed_by_autograd": "lecturelib.transposed.conv_transpose_autograd"}

# Exercise 1: (n, kernel_size, stride, padding, output_padding), dilation 1, in the order the notebook lists them
OUTPUT_SIZE_QUESTIONS = [(3, 3, 2, 0, 0), (3, 3, 2, 1, 0), (3, 3, 2, 1, 1), (5, 4, 2, 1, 0), (4, 1, 3, 0, 2)]

# Exercise 2: the (kernel_size, stride) pairs the notebook asks about
OVERLAP_QUESTIONS = [(3, 2), (4, 2), (5, 2), (6, 3), (4, 3), (1, 2), (3, 1)]

# Exercises 3 and 4: (H, W, k, stride, padding, output_padding), none of them shown in the lesson:
# odd and non-square inputs, a 1x1 input, stride 3 with a kernel of 2 (gaps), padding that crops almost all
IMPLEMENT_CASES = [(3, 5, 3, 2, 1, 0), (4, 4, 4, 2, 1, 0), (2, 3, 2, 3, 0, 0), (5, 2, 3, 2, 2, 0),
                   (1, 1, 3, 2, 1, 0), (3, 3, 5, 1, 2, 0)]
OUTPUT_PADDING_CASES = [(3, 4, 3, 2, 1, 1), (2, 5, 3, 3, 1, 2), (4, 3, 4, 2, 1, 1)]


def _describe(n, k, s, p, op) -> str:
    return f"n={n}, kernel_size={k}, stride={s}, padding={p}, output_padding={op}"


def output_sizes(student) -> bool:
    """``student()`` returns the output sides (ints) of the transposed convolutions in ``OUTPUT_SIZE_QUESTIONS``."""
    def test():
        got = student()
        if not isinstance(got, (list, tuple)) or len(got) != len(OUTPUT_SIZE_QUESTIONS):
            raise CheckFailed(f"return a list of {len(OUTPUT_SIZE_QUESTIONS)} ints, one per setting, got {got!r}.")
        wrong = []
        for i, (case, answer) in enumerate(zip(OUTPUT_SIZE_QUESTIONS, got), start=1):
            want = conv_transpose_output_size(*case)
            if not isinstance(answer, int) or isinstance(answer, bool):
                raise CheckFailed(f"setting {i}: answer with an int, got {answer!r}.")
            if answer != want:
                wrong.append(f"setting {i} ({_describe(*case)}): {answer} is {too_high_or_low(answer, want)}")
        if wrong:
            raise CheckFailed("; ".join(wrong) + ".")
    return run_check("Exercise 1: output sizes predicted", test,
                     hint="Hint: first count the cells the scattered kernels cover (copies start `stride` cells "
                          "apart); padding then crops that many cells from *each* side; output_padding adds cells "
                          "at one side only.")


def uneven_overlap(student) -> bool:
    """``student()`` returns the (kernel_size, stride) pairs of ``OVERLAP_QUESTIONS`` whose copies overlap unevenly."""
    def test():
        got = student()
        try:
            chosen = {(int(k), int(s)) for k, s in got}
        except (TypeError, ValueError):
            raise CheckFailed(f"return a set of (kernel_size, stride) pairs, got {got!r}.") from None
        unknown = chosen - set(OVERLAP_QUESTIONS)
        if unknown:
            raise CheckFailed(f"{sorted(unknown)} is not among the pairs asked about: {OVERLAP_QUESTIONS}.")
        uneven = {(k, s) for k, s in OVERLAP_QUESTIONS if len(set(phase_counts(k, s))) > 1}
        marked_even = len(chosen - uneven)              # counts only: naming a wrong pair would give its answer
        missed = len(uneven - chosen)
        if marked_even or missed:
            raise CheckFailed(f"{marked_even + missed} of {len(OVERLAP_QUESTIONS)} pairs wrong: {marked_even} you "
                              f"chose overlap evenly, and you left out {missed} that overlap unevenly.")
    return run_check("Exercise 2: uneven overlap predicted", test,
                     hint="Hint: in 1-D, tap a of the copy from input i lands on cell i*s + a. Count, for each "
                          "position modulo s, how many taps a in 0..k-1 land there; a cell nobody writes counts too.")


def _cases(seed: int, cases):
    gen = torch.Generator().manual_seed(seed)
    for H, W, k, s, p, op in cases:
        x = torch.randn(H, W, generator=gen, dtype=torch.float64)
        w = torch.randn(k, k, generator=gen, dtype=torch.float64)
        yield x, w, s, p, op


def _reference_2d(x: torch.Tensor, w: torch.Tensor, stride: int, padding: int, output_padding: int = 0):
    return conv_transpose_scatter(x[None, None], w[None, None], stride=stride, padding=padding,
                                  output_padding=output_padding)[0, 0]


def _case_name(x, w, s, p, op=0) -> str:
    extra = f", output_padding {op}" if op else ""
    return f"a {x.shape[0]}x{x.shape[1]} input, {w.shape[0]}x{w.shape[0]} kernel, stride {s}, padding {p}{extra}"


def _expect_tensor(got, name: str) -> torch.Tensor:
    if not isinstance(got, torch.Tensor):
        raise CheckFailed(f"{name}: return a torch.Tensor, got {type(got).__name__}.")
    return got


def _expect_gradients(call, x, w, s, p, op, name: str) -> None:
    """The student's output must be differentiable in x and w, with the reference's gradients."""
    gen = torch.Generator().manual_seed(7)
    xs, ws = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    out = _expect_tensor(call(xs, ws), name)
    weights = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    if not out.requires_grad:
        raise CheckFailed(f"{name}: the output does not depend differentiably on x and w (no gradient flows); "
                          "build it from x and w with torch operations, without .detach(), .item() or numpy.")
    gx, gw = torch.autograd.grad((out * weights).sum(), (xs, ws), allow_unused=True)
    xr, wr = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    rx, rw = torch.autograd.grad((_reference_2d(xr, wr, s, p, op) * weights).sum(), (xr, wr))
    for g, r, what in ((gx, rx, "x"), (gw, rw, "w")):
        expect_close(torch.zeros_like(r) if g is None else g, r, what=f"{name}: gradient with respect to {what}",
                     atol=1e-9)


def scatter(student) -> bool:
    """``student(x, w, stride, padding) -> Tensor[H_out, W_out]`` for x (float64 Tensor[H, W]), w (Tensor[k, k]).

    Refuses the course's implementations and PyTorch's; then compares with the reference on unseen sizes and
    checks that gradients flow to x and w as they should."""
    def test():
        refuse_reference(student, conv_transpose_scatter, conv_transpose_gather, conv_transpose_matrix,
                         conv_transpose_autograd, conv_transpose, F.conv_transpose2d)
        for x, w, s, p, _ in _cases(1, IMPLEMENT_CASES):
            name = _case_name(x, w, s, p)
            got = _expect_tensor(student(x.clone(), w.clone(), s, p), name)
            expect_close(got, _reference_2d(x, w, s, p), what=name, atol=1e-9)
        x, w, s, p, _ = next(_cases(5, IMPLEMENT_CASES[:1]))
        _expect_gradients(lambda xs, ws: student(xs, ws, s, p), x, w, s, p, 0, _case_name(x, w, s, p))
    return run_check("Exercise 3: scatter implementation", test,
                     hint="Hint: every input value scales the whole kernel; the copies start `stride` cells apart "
                          "on an output large enough to hold all of them, and the crop by `padding` comes last.")


def backward_pass(student) -> bool:
    """``student(x, w, stride, padding, output_padding) -> Tensor[H_out, W_out]`` computed by autograd through a
    convolution. Refuses the course's implementations and ``F.conv_transpose2d``; tests unseen sizes, among them
    settings with ``output_padding`` (where two output sizes map to the same convolution output)."""
    def test():
        refuse_reference(student, conv_transpose_scatter, conv_transpose_gather, conv_transpose_matrix,
                         conv_transpose_autograd, conv_transpose, F.conv_transpose2d)
        for x, w, s, p, op in _cases(2, IMPLEMENT_CASES + OUTPUT_PADDING_CASES):
            name = _case_name(x, w, s, p, op)
            got = _expect_tensor(student(x.clone(), w.clone(), s, p, op), name)
            expect_close(got, _reference_2d(x, w, s, p, op), what=name, atol=1e-9)
    return run_check("Exercise 4: transposed convolution = gradient of conv2d", test,
                     hint="Hint: the transposed convolution of x is the gradient, with respect to the input z of a "
                          "convolution, of <conv2d(z), x>. z must have the size of the transposed convolution's "
                          "output: several sizes of z give the same conv2d output, and output_padding says which.")
