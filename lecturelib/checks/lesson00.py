"""Self-checks for 00_overview.

    from lecturelib.checks import lesson00 as checks
    checks.mask_to_box(my_mask_to_box)
"""
from __future__ import annotations

import numpy as np

from ..instances import instances_to_targets
from . import CheckFailed, call_case, expect_equal, refuse_reference, run_check

# the course's own implementation of each implement exercise (tests: never shown with show_source)
REFERENCES = {"my_mask_to_box": "lecturelib.instances.instances_to_targets"}


def _course_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The box the course's detection targets carry for ``mask`` (:func:`lecturelib.instances.instances_to_targets`)."""
    return tuple(int(v) for v in instances_to_targets(np.asarray(mask).astype(np.int64))["boxes"][0])


def _mask_cases() -> list[tuple[str, np.ndarray]]:
    """Masks the notebook does not show: borders, single pixels, several parts, non-square, 0/1 integers."""
    cases = []
    m = np.zeros((6, 8), bool)
    m[2:4, 1:6] = True
    cases.append(("a 2x5 block in a 6x8 mask", m))
    one = np.zeros((5, 5), bool)
    one[4, 0] = True
    cases.append(("a single pixel in the bottom-left corner", one))
    right = np.zeros((4, 9), bool)
    right[1, 8] = right[3, 5] = True
    cases.append(("two pixels, one in the last column", right))
    cases.append(("a mask that is all True (7x3)", np.ones((7, 3), bool)))
    row = np.zeros((3, 11), np.uint8)
    row[0, 2:9] = 1
    cases.append(("one row of 0/1 uint8 values in the first row", row))
    parts = np.zeros((12, 10), bool)
    parts[1:3, 6:8] = parts[9:11, 0:2] = True
    cases.append(("two separate parts (the box spans both)", parts))
    rng = np.random.default_rng(0)
    for k in range(12):
        r = rng.random((rng.integers(3, 20), rng.integers(3, 20))) < 0.1
        r[rng.integers(r.shape[0]), rng.integers(r.shape[1])] = True
        cases.append((f"random mask {k + 1} of shape {r.shape}", r))
    return cases


def mask_to_box(student) -> bool:
    """``student(mask bool[H, W]) -> (x0, y0, x1, y1)`` pixel-edge ints; an empty mask raises ValueError."""
    def test():
        refuse_reference(student, instances_to_targets)
        for what, mask in _mask_cases():
            got = call_case(what, student, mask.copy())
            try:
                got = tuple(int(v) for v in got)
            except TypeError:
                raise CheckFailed(f"{what}: return four numbers (x0, y0, x1, y1), got {got!r}.") from None
            want = _course_box(mask)
            if len(got) != 4:
                raise CheckFailed(f"{what}: return four numbers (x0, y0, x1, y1), got {len(got)}.")
            if got[:2] == want[1::-1] and got[2:] == want[:1:-1]:
                raise CheckFailed(f"{what}: you return (y0, x0, y1, x1); the box is (x0, y0, x1, y1): columns first.")
            expect_equal(got, want, what=f"the box of {what}")
        try:
            student(np.zeros((4, 5), bool))
        except ValueError:
            pass
        else:
            raise CheckFailed("an empty mask has no box: raise ValueError for it.")
    return run_check("mask_to_box", test,
                     hint="Hint: the box is pixel-edge: x0 is the left edge of the leftmost column, x1 the right "
                          "edge of the rightmost one (one past its index).")
