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
    global _watch
    _watch = _ReferenceWatch()
    try:
        with torch.random.fork_rng(devices=[]):
            try:
                test()
            finally:
                _watch.stop()
        _watch.raise_if_called()
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
    finally:
        _watch = None
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


def too_high_or_low(got, want) -> str:
    """What a *predict* check says of a wrong number: "too high" or "too low", never the right value."""
    return "too high" if got > want else "too low"


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


class _ReferenceWatch:
    """While a check runs: notice a call of a refused reference made while the student's function is running,
    from the student's own code or from any function it calls (a course or library function that wraps the
    reference), however it was reached (``getattr`` with a built string, ``importlib``, ``eval`` ...), with
    ``sys.setprofile``. A reference written in C counts when the student's own code calls it. The check's own calls
    of the reference (made while no student function runs) do not count."""

    def __init__(self):
        self.codes: dict = {}          # code object of a Python reference -> the reference
        self.builtins: list = []       # references written in C (torch ops)
        self.students: list = []       # the student's module globals: calls made from there count
        self.student_codes: set = set()  # the student's functions: calls count while one of them runs
        self.depth = 0
        self.hits: list = []
        self.previous = None
        self.active = False

    def add(self, student, references) -> None:
        import inspect
        import sys

        for ref in references:
            target = inspect.unwrap(ref)
            code = getattr(target, "__code__", None)
            if code is None and inspect.isclass(target) and "__init__" in vars(target):
                code = getattr(vars(target)["__init__"], "__code__", None)
            if code is not None:
                self.codes[code] = ref
            else:
                self.builtins.append(ref)
        code = getattr(student, "__code__", None)
        if code is not None:
            self.student_codes.add(code)
        g = getattr(student, "__globals__", None)
        if g is not None and all(g is not h for h in self.students):
            self.students.append(g)
        if not self.active:
            self.previous = sys.getprofile()
            sys.setprofile(self._hook)
            self.active = True

    def _from_student(self, frame) -> bool:
        return frame is not None and any(frame.f_globals is g for g in self.students)

    def _hook(self, frame, event, arg):
        if event == "call":
            if frame.f_code in self.student_codes:
                self.depth += 1
            ref = self.codes.get(frame.f_code)
            if ref is not None and self.depth > 0:
                self.hits.append(ref)
        elif event == "return":
            if frame.f_code in self.student_codes:
                self.depth -= 1
        elif event == "c_call" and self.builtins and self.depth > 0:
            if any(arg is ref for ref in self.builtins) and self._from_student(frame):
                self.hits.append(arg)

    def stop(self) -> None:
        import sys

        if self.active:
            sys.setprofile(self.previous)
            self.active = False

    def raise_if_called(self) -> None:
        if self.hits:
            raise CheckFailed(f"your code called {_whose(self.hits[0])} while the check ran; write the computation "
                              "yourself.")


_watch: _ReferenceWatch | None = None


def refuse_reference(student, *references) -> None:
    """Raise :class:`CheckFailed` if ``student`` is one of the reference implementations in ``references`` (the
    course's or a library's) or wraps one, or if its code names one of them (directly, by an alias bound in the
    student's module, as an attribute of a module the student imported, or through a closure).

    Call it first in an *implement* exercise's check, so that importing the answer does not pass. Inside
    :func:`run_check` it also watches the rest of the check: a reference called from the student's own code, however
    it was reached (a name built at run time, ``importlib`` ...), fails the check when the test ends.
    Raises CheckFailed also when ``student`` is not callable.
    """
    import inspect
    import types

    if not callable(student):
        raise CheckFailed(f"expected a function, got {type(student).__name__}; define it with def.")
    target = inspect.unwrap(student)
    func = getattr(target, "func", target)                          # functools.partial
    for ref in references:
        if func is ref:
            raise CheckFailed(f"this is {_whose(ref)}; write your own.")
        code = getattr(inspect.unwrap(ref), "__code__", None)
        if code is not None and getattr(func, "__code__", None) is code:
            raise CheckFailed(f"this is a copy of {_whose(ref)}; write your own.")
    if not hasattr(func, "__code__") and not inspect.isclass(func):
        call = vars(type(func)).get("__call__")                     # an instance of a class with __call__
        func = call if hasattr(call, "__code__") else func
    if _watch is not None:
        _watch.add(func, references)
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
    names = _code_names(code)
    bound: dict[str, list] = {}                                     # what each name can mean in the student's code
    modules = [module_globals[n] for n in names if isinstance(module_globals.get(n), types.ModuleType)]
    for name in names:
        if name in module_globals:
            bound.setdefault(name, []).append(module_globals[name])
        for module in modules:
            if name in vars(module):
                bound.setdefault(name, []).append(vars(module)[name])
    for name, objects in bound.items():                             # by identity first: the right owner is named
        for ref in references:
            if any(obj is ref for obj in objects):
                raise CheckFailed(f"your function calls {name} ({_whose(ref)}); write the computation yourself.")
    for name in sorted(names - set(bound)):                        # a reference's name reached some other way
        same = [ref for ref in references if ref.__name__ == name]
        if same:
            raise CheckFailed(f"your function calls {name}, the name of {' and '.join(_whose(r) for r in same)}; "
                              "write the computation yourself.")
