from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from lecturelib.checks import CheckFailed, expect_close, run_check
from lecturelib.editions import SOLUTION_TAG, build_student_edition, stub_source, student_notebook

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "exercise.ipynb"


def run(nb):
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_stub_keeps_signature_and_docstring_and_raises():
    src = 'import math\n\n\n@staticmethod\ndef f(x, y=2):\n    """Doc."""\n    return math.sqrt(x) + y\n'
    out = stub_source(src)
    assert "def f(x, y=2):" in out and '"""Doc."""' in out and "@staticmethod" in out
    assert "math.sqrt" not in out and "raise NotImplementedError" in out
    ns = {}
    exec(stub_source("def g(a):\n    return a\n"), ns)
    with pytest.raises(NotImplementedError):
        ns["g"](1)


@pytest.mark.parametrize("src,word", [("x = 1\n", "only imports and function definitions"),
                                      ("def f(:\n", "not valid Python")])
def test_stub_rejects_cells_it_cannot_stub(src, word):
    with pytest.raises(ValueError, match=word):
        stub_source(src)


@pytest.mark.parametrize("src,signature", [
    ("def f(a,\n      b): return a + b\n", "def f(a,\n      b):\n"),
    ("def f(): return 1\n", "def f():\n"),
    ('def f(x: dict = {"a": 1}, g=lambda y: y) -> "a:b":  # c: d\n    return 1\n',
     'def f(x: dict = {"a": 1}, g=lambda y: y) -> "a:b":  # c: d\n'),
    ('def f(a): """Doc: a."""; return a\n', 'def f(a):\n    """Doc: a."""\n'),
])
def test_stub_copies_the_signature_up_to_its_colon(src, signature):
    out = stub_source(src)
    assert out.startswith(signature) and "return" not in out.split("raise")[0].replace("# YOUR CODE HERE", "")
    ns = {}
    exec(compile(out, "stub", "exec"), ns)
    with pytest.raises(NotImplementedError):
        ns["f"](*([1] * ns["f"].__code__.co_argcount))


def test_solution_passes_and_student_edition_fails_on_the_fixture(tmp_path):
    solution = nbformat.read(FIXTURE, as_version=4)
    assert "\u2705 mask_iou" in run(solution)
    out = build_student_edition(FIXTURE.parent, tmp_path)
    student = nbformat.read(out[0], as_version=4)
    assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
    text = run(student)
    assert "\u274c mask_iou: not implemented yet" in text and "result: False" in text


def test_run_check_reports_wrong_answers_and_crashes_without_raising(capsys):
    assert not run_check("t", lambda: expect_close([1.0, 2.0], [1.0, 3.0]), hint="H")
    assert not run_check("t", lambda: 1 / 0)
    assert not run_check("t", lambda: (_ for _ in ()).throw(CheckFailed("wrong")))
    text = capsys.readouterr().out
    assert text.count("\u274c") == 3 and "max abs difference 1" in text and "ZeroDivisionError" in text


def course_notebooks():
    return sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", course_notebooks(), ids=lambda p: p.name)
def test_every_solution_cell_stubs_and_is_followed_by_a_check(path):
    nb = nbformat.read(path, as_version=4)
    student = student_notebook(nb, path.name)
    for i, (cell, stub) in enumerate(zip(nb.cells, student.cells)):
        if SOLUTION_TAG not in cell.metadata.get("tags", []):
            continue
        nxt = nb.cells[i + 1].source if i + 1 < len(nb.cells) else ""
        assert "check" in nxt, f"{path.name} cell {i}: the cell after a solution must call a check"
        ns = {}
        exec(stub.source, ns)
        funcs = [v for k, v in ns.items() if callable(v) and getattr(v, "__module__", None) is None
                 and not k.startswith("_") and type(v).__name__ == "function"]
        assert funcs, f"{path.name} cell {i}: no function to write"
        for f in funcs:
            with pytest.raises(NotImplementedError):
                f(*([None] * f.__code__.co_argcount))
