"""Self-checks for the exercises.

A check prints ✅ when the learner's code agrees with the reference, or ❌ with
what went wrong and a hint, and returns True/False. It never raises, so a
notebook keeps running; only under ``nbgrader autograde`` or ``validate``
(nbgrader sets ``NBGRADER_EXECUTION``) a failed check raises :class:`CheckFailed`
after printing, so that its autograder test cell loses its points.
Lesson-specific checks live in ``lecturelib.checks.lessonXX`` modules built on
:func:`run_check`.

Convention for notebooks: a cell tagged ``solution`` holds only imports and
function definitions (the learner's exercise), each body between nbgrader's
``### BEGIN SOLUTION`` / ``### END SOLUTION``; the next cell, tagged ``check``,
calls a check (``python -m lecturelib.editions mark`` adds the markers and
nbgrader's metadata).
"""
from __future__ import annotations

import os
import traceback
from typing import Callable

import numpy as np
import torch

PASS, FAIL = "\u2705", "\u274c"


class CheckFailed(AssertionError):
    """Raised inside a check's test function to report a wrong answer with a message."""


def run_check(title: str, test: Callable[[], None], hint: str = "") -> bool:
    """Run ``test()``; print ✅ title if it returns, ❌ with the reason and ``hint`` if it raises.

    The test may seed torch to build its reference models: it runs on a forked random number generator,
    so a check never changes the notebook's own random stream (the cells after it stay reproducible).
    """
    try:
        with torch.random.fork_rng(devices=[]):
            test()
    except NotImplementedError:
        message = f"{title}: not implemented yet. {hint}".rstrip()
    except CheckFailed as exc:
        message = f"{title}: {exc} {hint}".rstrip()
    except Exception as exc:  # the learner's code crashed: show where, briefly
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" (line {tb[-1].lineno} in {tb[-1].name})" if tb else ""
        message = f"{title}: your code raised {type(exc).__name__}: {exc}{where}. {hint}".rstrip()
    else:
        print(f"{PASS} {title}")
        return True
    print(f"{FAIL} {message}")
    if os.environ.get("NBGRADER_EXECUTION"):      # nbgrader autograde/validate: the test cell must fail
        raise CheckFailed(message)
    return False


def expect_close(got, want, what: str = "result", atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Raise :class:`CheckFailed` unless ``got`` equals ``want`` (shape and values within tolerance)."""
    g = got.detach().cpu().double().numpy() if isinstance(got, torch.Tensor) else np.asarray(got, dtype=np.float64)
    w = want.detach().cpu().double().numpy() if isinstance(want, torch.Tensor) else np.asarray(want, dtype=np.float64)
    if g.shape != w.shape:
        raise CheckFailed(f"{what} has shape {tuple(g.shape)}, expected {tuple(w.shape)}.")
    if not np.allclose(g, w, atol=atol, rtol=rtol, equal_nan=True):
        err = np.nanmax(np.abs(g - w))
        raise CheckFailed(f"{what} differs from the reference (max abs difference {err:.3g}).")


def expect_equal(got, want, what: str = "result") -> None:
    if got != want:
        raise CheckFailed(f"{what} is {got!r}, expected {want!r}.")
