"""Every lesson's exercises: their kinds, what the student edition hides, and both editions run.

For each notebook, the cells the exercises need (tagged ``exercise-setup``), the solution cells and the check cells
are run in notebook order in one kernel: with the course's solutions every check must print ✅; then the solution
cells are replaced by what nbgrader's ``generate_assignment`` makes of them (each body ``raise
NotImplementedError()``) and the solution and check cells are run again: every check must print ❌, and nothing
may raise. Together with the static test that no other cell uses an exercise's function, this shows the student
edition runs top to bottom.
"""
from __future__ import annotations

import ast
import importlib
import io
import pkgutil
import re
import tokenize
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import lecturelib
from lecturelib.checks import FAIL, PASS
from lecturelib.editions import CHECK_TAG, SOLUTION_TAG

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SETUP_TAG = "exercise-setup"
KINDS = ("predict", "implement", "interpret")
HEADING = re.compile(r"^#{2,4} Exercise (\d+) \((\w+)\): \S", re.M)


def tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def lesson(path: Path) -> str:
    return path.name[:2]


def exercises(nb) -> list[tuple[int, str]]:
    return [(int(n), kind) for c in nb.cells if c.cell_type == "markdown" for n, kind in HEADING.findall(c.source)]


def solution_names(nb) -> set[str]:
    names = set()
    for cell in nb.cells:
        if SOLUTION_TAG in tags(cell):
            names |= {n.name for n in ast.parse(cell.source).body if isinstance(n, ast.FunctionDef)}
    return names


def identifiers(source: str) -> set[str]:
    lines = [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    try:
        return {t.string for t in tokenize.generate_tokens(io.StringIO("\n".join(lines) + "\n").readline)
                if t.type == tokenize.NAME}
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return set(re.findall(r"[A-Za-z_]\w*", source))


def checks_module(path: Path):
    try:
        return importlib.import_module(f"lecturelib.checks.lesson{lesson(path)}")
    except ModuleNotFoundError:
        return None


@pytest.fixture(scope="module")
def notebooks():
    return {p: nbformat.read(p, as_version=4) for p in NOTEBOOKS}


def test_every_lesson_has_two_to_four_exercises_of_two_kinds_and_the_course_all_three(notebooks):
    seen = set()
    for path, nb in notebooks.items():
        found = exercises(nb)
        kinds = {k for _, k in found}
        assert kinds <= set(KINDS), f"{path.name}: unknown exercise kind(s) {kinds - set(KINDS)}; use {KINDS}"
        seen |= kinds
        if lesson(path) == "00":
            continue
        assert 2 <= len(found) <= 4, f"{path.name}: {len(found)} exercises, expected 2-4"
        assert [n for n, _ in found] == list(range(1, len(found) + 1)), f"{path.name}: exercises not numbered 1..N"
        assert len(kinds) >= 2, f"{path.name}: exercises of one kind only ({kinds})"
    assert seen == set(KINDS), f"the course has exercises of kinds {seen}, expected all of {KINDS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_exercise_has_solution_and_check_cells(path):
    nb = nbformat.read(path, as_version=4)
    heading = None
    per_exercise: dict[int, list[str]] = {}
    for cell in nb.cells:
        if cell.cell_type == "markdown" and HEADING.search(cell.source):
            heading = int(HEADING.search(cell.source).group(1))
            per_exercise[heading] = []
        elif heading is not None and cell.cell_type == "code":
            per_exercise[heading] += [t for t in tags(cell) if t in (SOLUTION_TAG, CHECK_TAG)]
    for n, found in per_exercise.items():
        assert SOLUTION_TAG in found and CHECK_TAG in found, f"{path.name}: exercise {n} has no solution/check cell"
    for i, cell in enumerate(nb.cells):
        if SOLUTION_TAG in tags(cell):
            nxt = nb.cells[i + 1] if i + 1 < len(nb.cells) else None
            assert nxt is not None and CHECK_TAG in tags(nxt), (
                f"{path.name}: solution cell {i} is not followed by a check")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_other_cell_uses_an_exercise_function(path):
    """Otherwise the student edition (where each exercise raises NotImplementedError) would crash there."""
    nb = nbformat.read(path, as_version=4)
    names = solution_names(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or {SOLUTION_TAG, CHECK_TAG} & set(tags(cell)):
            continue
        used = names & identifiers(cell.source)
        assert not used, f"{path.name}: cell {i} uses the exercise function(s) {sorted(used)} outside a check cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_solutions_are_not_shown_and_not_in_the_library(path):
    module = checks_module(path)
    references = getattr(module, "REFERENCES", {}) if module else {}
    nb = nbformat.read(path, as_version=4)
    names = solution_names(nb)
    implement = [k for _, k in exercises(nb)].count("implement")
    if implement:
        assert references, (
            f"lecturelib/checks/lesson{lesson(path)}.py declares no REFERENCES for its implement exercises")
    for exercise, dotted in references.items():
        assert exercise in names, f"REFERENCES names {exercise}, which no solution cell of {path.name} defines"
        module_name, attr = dotted.rsplit(".", 1)
        getattr(importlib.import_module(module_name), attr)          # the reference exists
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                shown = re.findall(r"show_source\(\s*([\w.]+)\s*\)", cell.source)
                assert not [s for s in shown if s.split(".")[-1] == attr], (
                    f"{path.name}: cell {i} prints the source of {dotted}, the solution of {exercise}; "
                    "use show_signature")
    for info in pkgutil.walk_packages(lecturelib.__path__, "lecturelib."):
        mod = importlib.import_module(info.name)
        clash = sorted(n for n in names if hasattr(mod, n))
        assert not clash, f"{info.name} defines {clash}: an exercise's name must not be importable from lecturelib"


def student_source(source: str) -> str:
    from nbgrader.preprocessors import ClearSolutions

    cell = nbformat.v4.new_code_cell(source)
    ClearSolutions()._replace_solution_region(cell, "python")
    return cell.source


def text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_exercises_pass_with_the_solutions_and_fail_with_the_stubs(path):
    nb = nbformat.read(path, as_version=4)
    wanted = {SETUP_TAG, SOLUTION_TAG, CHECK_TAG}
    teacher = [nbformat.v4.new_code_cell(c.source, metadata={"tags": tags(c)}) for c in nb.cells
               if c.cell_type == "code" and wanted & set(tags(c))]
    if not any(CHECK_TAG in tags(c) for c in teacher):
        pytest.skip(f"{path.name} has no exercises")
    student = []
    for cell in teacher:
        if SOLUTION_TAG in tags(cell):
            stub = student_source(cell.source)
            assert stub != cell.source, f"{path.name}: a solution cell has no ### BEGIN SOLUTION region (make mark)"
            student.append(nbformat.v4.new_code_cell(stub, metadata={"tags": tags(cell)}))
        elif CHECK_TAG in tags(cell):
            student.append(nbformat.v4.new_code_cell(cell.source, metadata={"tags": tags(cell)}))
    for cell in teacher + student:          # a graded check never reseeds (or draws from) the notebook's global RNG
        if CHECK_TAG in tags(cell):
            cell.source = (f"import torch as _torch\n_rng = _torch.random.get_rng_state()\n{cell.source}\n"
                           "assert _torch.equal(_rng, _torch.random.get_rng_state()), "
                           "'this check changed the global torch RNG (run it inside run_check)'")
    run = nbformat.v4.new_notebook(cells=teacher + student, metadata=nb.metadata)
    NotebookClient(run, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    checks = [c for c in run.cells if CHECK_TAG in tags(c)]
    half = len(checks) // 2
    for i, cell in enumerate(checks[:half]):
        assert PASS in text(cell) and FAIL not in text(cell), (
            f"{path.name}: check {i + 1} does not pass with the course's solution:\n{text(cell)}")
    for i, cell in enumerate(checks[half:]):
        assert FAIL in text(cell) and PASS not in text(cell), (
            f"{path.name}: check {i + 1} does not fail for the student edition's stub:\n{text(cell)}")
