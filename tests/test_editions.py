from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from lecturelib.checks import CheckFailed, expect_close, run_check
from lecturelib.editions import (
    BEGIN,
    CHECK_TAG,
    END,
    SOLUTION_TAG,
    build_student_edition,
    mark_notebook,
    mark_source,
    marking_problems,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "exercise.ipynb"


def run(nb):
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def clear_solutions(source: str) -> str:
    """What nbgrader's generate_assignment makes of a marked solution cell."""
    from nbgrader.preprocessors import ClearSolutions

    cell = nbformat.v4.new_code_cell(source)
    ClearSolutions()._replace_solution_region(cell, "python")
    return cell.source


def fixture_notebook():
    nb = nbformat.read(FIXTURE, as_version=4)
    nb.cells[3].metadata["tags"] = [CHECK_TAG]      # the fixture's check calls run_check directly
    return nb


def test_mark_puts_the_body_after_the_docstring_between_markers_and_is_idempotent():
    src = 'import math\n\n\n@staticmethod\ndef f(x, y=2):\n    """Doc."""\n    z = math.sqrt(x)\n    return z + y\n'
    out = mark_source(src)
    assert out.splitlines()[6:10] == [f"    {BEGIN}", "    z = math.sqrt(x)", "    return z + y", f"    {END}"]
    assert mark_source(out) == out
    ns = {}
    exec(out, ns)
    assert ns["f"].__func__(4) == 4


@pytest.mark.parametrize("src,signature", [
    ("def f(a,\n      b): return a + b\n", "def f(a,\n      b):\n"),
    ("def f(): return 1\n", "def f():\n"),
    ('def f(x: dict = {"a": 1}, g=lambda y: y) -> "a:b":  # c: d\n    return 1\n',
     'def f(x: dict = {"a": 1}, g=lambda y: y) -> "a:b":  # c: d\n'),
    ('def f(a): """Doc: a."""; return a\n', 'def f(a):\n    """Doc: a."""\n'),
])
def test_the_stub_keeps_the_signature_up_to_its_colon_and_raises(src, signature):
    pytest.importorskip("nbgrader")
    marked = mark_source(src)
    ns = {}
    exec(marked, ns)                                  # the marked solution still runs
    assert ns["f"](*([1] * ns["f"].__code__.co_argcount)) is not None
    stub = clear_solutions(marked)
    assert stub.startswith(signature) and "return" not in stub
    ns = {}
    exec(compile(stub, "stub", "exec"), ns)
    with pytest.raises(NotImplementedError):
        ns["f"](*([1] * ns["f"].__code__.co_argcount))


@pytest.mark.parametrize("src,word", [("x = 1\n", "only imports and function definitions"),
                                      ("def f(:\n", "not valid Python"),
                                      ('def f():\n    """Only a docstring."""\n', "no body"),
                                      (f"def f():\n    {BEGIN}\n    return 1\n", "without"),
                                      ("import math\n", "at least one function")])
def test_mark_rejects_cells_it_cannot_mark(src, word):
    with pytest.raises(ValueError, match=word):
        mark_source(src)


def test_mark_notebook_gives_nbgrader_metadata_and_tags_the_check_after_a_solution():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("def f(a):\n    return a\n", metadata={"tags": [SOLUTION_TAG]}),
        nbformat.v4.new_code_cell("checks.f(f)"),
    ])
    assert marking_problems(nb)
    marked = mark_notebook(nb)
    assert marking_problems(marked) == [] and mark_notebook(marked) == marked
    sol, check = (c.metadata["nbgrader"] for c in marked.cells)
    assert sol["solution"] and not sol["grade"] and sol["grade_id"] == "f"
    assert check["grade"] and check["locked"] and check["points"] == 1 and check["grade_id"] == "check-f"
    assert marked.cells[1].metadata["tags"] == [CHECK_TAG]
    marked.cells[1].metadata["nbgrader"]["points"] = 3          # an instructor's points are kept
    assert mark_notebook(marked).cells[1].metadata["nbgrader"]["points"] == 3
    orphan = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", metadata={"tags": [CHECK_TAG]})])
    with pytest.raises(ValueError, match="after a solution cell"):
        mark_notebook(orphan)


def test_solution_passes_and_student_edition_fails_on_the_fixture(tmp_path):
    pytest.importorskip("nbgrader")
    solution = mark_notebook(fixture_notebook())
    assert "\u2705 mask_iou" in run(nbformat.from_dict(solution))
    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(solution, src / "exercise.ipynb")
    out = build_student_edition(src, tmp_path / "student")
    student = nbformat.read(out[0], as_version=4)
    assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
    assert "def mask_iou(a, b):" in student.cells[2].source and "inter" not in student.cells[2].source
    text = run(student)
    assert "\u274c mask_iou: not implemented yet" in text and "result: False" in text


def test_the_student_edition_refuses_unmarked_notebooks(tmp_path):
    with pytest.raises(ValueError, match="python -m lecturelib.editions mark"):
        build_student_edition(FIXTURE.parent, tmp_path)


def test_run_check_reports_wrong_answers_and_crashes_without_raising(capsys, monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    assert not run_check("t", lambda: expect_close([1.0, 2.0], [1.0, 3.0]), hint="H")
    assert not run_check("t", lambda: 1 / 0)
    assert not run_check("t", lambda: (_ for _ in ()).throw(CheckFailed("wrong")))
    text = capsys.readouterr().out
    assert text.count("\u274c") == 3 and "got 2, expected 3" in text and "ZeroDivisionError" in text


def test_run_check_raises_under_nbgrader_so_the_test_cell_loses_its_points(capsys, monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    assert run_check("t", lambda: None)
    with pytest.raises(CheckFailed, match="not implemented yet"):
        run_check("t", lambda: (_ for _ in ()).throw(NotImplementedError()))
    assert "\u274c t: not implemented yet" in capsys.readouterr().out


def course_notebooks():
    return sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", course_notebooks(), ids=lambda p: p.name)
def test_every_exercise_is_marked_the_nbgrader_way_and_its_stub_raises(path):
    """Fails until `python -m lecturelib.editions mark notebooks/NN_x.ipynb` has been run on a new lesson."""
    pytest.importorskip("nbgrader")
    nb = nbformat.read(path, as_version=4)
    assert marking_problems(nb, path.name) == [], "run: python -m lecturelib.editions mark " + str(path)
    for i, cell in enumerate(nb.cells):
        if SOLUTION_TAG not in cell.metadata.get("tags", []):
            continue
        nxt = nb.cells[i + 1] if i + 1 < len(nb.cells) else None
        assert nxt is not None and CHECK_TAG in nxt.metadata.get("tags", []) and "check" in nxt.source, \
            f"{path.name} cell {i}: the cell after a solution must call a check and be tagged {CHECK_TAG!r}"
        ns = {}
        exec(clear_solutions(cell.source), ns)
        funcs = [v for k, v in ns.items() if type(v).__name__ == "function" and not k.startswith("_")
                 and v.__module__ is None]                # defined in the cell, not imported
        assert funcs, f"{path.name} cell {i}: no function to write"
        for f in funcs:
            with pytest.raises(NotImplementedError):
                f(*([None] * f.__code__.co_argcount))
