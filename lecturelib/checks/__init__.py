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


def _position(index: tuple) -> str:
    return "[" + ", ".join(str(int(i)) for i in index) + "]"


def expect_close(got, want, what: str = "result", atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Raise :class:`CheckFailed` unless ``got`` equals ``want`` (shape and values within tolerance).

    The message names the shape mismatch, or the position of the largest difference with both values there and
    how many entries differ, e.g. ``scores: wrong value at [0, 2]: got 0.5, expected 0.25 (3 of 12 values wrong)``.
    """
    g = got.detach().cpu().double().numpy() if isinstance(got, torch.Tensor) else np.asarray(got, dtype=np.float64)
    w = want.detach().cpu().double().numpy() if isinstance(want, torch.Tensor) else np.asarray(want, dtype=np.float64)
    if g.shape != w.shape:
        raise CheckFailed(f"{what}: shape {tuple(g.shape)}, expected {tuple(w.shape)}.")
    close = np.isclose(g, w, atol=atol, rtol=rtol, equal_nan=True)
    if not close.all():
        diff = np.where(close, 0.0, np.nan_to_num(np.abs(g - w), nan=np.inf))
        worst = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()
        where = f" at {_position(worst)}" if worst else ""
        raise CheckFailed(f"{what}: wrong value{where}: got {g[worst]:.4g}, expected {w[worst]:.4g} "
                          f"({int((~close).sum())} of {close.size} values wrong).")


def expect_equal(got, want, what: str = "result") -> None:
    """Raise :class:`CheckFailed` naming ``what``, the value got and the one expected, unless ``got == want``."""
    if got != want:
        raise CheckFailed(f"{what}: got {got!r}, expected {want!r}.")


def call_case(what: str, fn, *args):
    """``fn(*args)``; if it raises (anything but NotImplementedError, which means "not written yet"), a
    :class:`CheckFailed` that names the case ``what`` it raised on."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise
    except CheckFailed:
        raise
    except Exception as exc:            # the learner's code crashed on this case: say which one
        raise CheckFailed(f"{what}: your code raised {type(exc).__name__}: {exc}") from None


def whole_numbers(got, names: tuple[str, ...]) -> tuple[int, ...]:
    """A prediction ``got`` read as ``len(names)`` whole numbers, or a :class:`CheckFailed` saying what to return."""
    try:
        values = tuple(int(v) for v in got)
    except (TypeError, ValueError):
        values = ()
    if len(values) != len(names):
        raise CheckFailed(f"return {len(names)} whole numbers ({', '.join(names)}), got {got!r}.")
    return values


def _code_names(code) -> set[str]:
    """Every global and attribute name a code object (and the functions nested in it) refers to."""
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _code_names(const)
    return names


def _whose(ref) -> str:
    name = f"{ref.__module__}.{ref.__qualname__}"
    return f"the course's own {name}" if ref.__module__.startswith("lecturelib") else f"the library function {name}"


def refuse_reference(student, *references) -> None:
    """Raise :class:`CheckFailed` if ``student`` is one of the course's own implementations in ``references`` (or
    wraps one), or if its code calls one of them by its name or by any name bound to it in the student's module.

    Call it first in an *implement* exercise's check, so that importing the library's answer does not pass.
    Raises CheckFailed also when ``student`` is not callable.
    """
    import inspect

    if not callable(student):
        raise CheckFailed(f"expected a function, got {type(student).__name__}; define it with def.")
    target = inspect.unwrap(student)
    func = getattr(target, "func", target)                          # functools.partial
    for ref in references:
        if func is ref:
            raise CheckFailed(f"this is {_whose(ref)}; write your own.")
    code = getattr(func, "__code__", None)
    if code is None:
        return
    for cell in getattr(func, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:                                          # an empty closure cell
            continue
        for ref in references:
            if value is ref:
                raise CheckFailed(f"your function calls {_whose(ref)}; write the computation yourself.")
    module_globals = getattr(func, "__globals__", {})
    for name in _code_names(code):
        for ref in references:
            if name == ref.__name__ or module_globals.get(name) is ref:
                raise CheckFailed(f"your function calls {name} ({_whose(ref)}); write the computation yourself.")
