"""The exercises marked the nbgrader way, and the student edition made by nbgrader.

Convention: an exercise's solution is a code cell tagged ``solution`` that holds only imports and function
definitions; the cell after it, tagged ``check``, calls a self-check from ``lecturelib.checks``. ``mark`` turns
this convention into nbgrader's: each function body (after its docstring) goes between ``### BEGIN SOLUTION`` and
``### END SOLUTION``, a ``solution`` cell gets nbgrader's solution-cell metadata and a ``check`` cell that of an
autograder test cell (locked, 1 point unless an instructor set other points). ``mark`` is idempotent; it also tags
``check`` the cell after a solution when that cell calls a check and has no tag yet.

    python -m lecturelib.editions mark notebooks/*.ipynb             # add the nbgrader marking (in place)
    python -m lecturelib.editions student [NOTEBOOK_DIR] [OUT_DIR]   # nbgrader generate_assignment -> build/student/

nbgrader's ``generate_assignment`` makes the student edition: it replaces each solution region by
``# YOUR CODE HERE`` and ``raise NotImplementedError()`` (the self-check then says "not implemented yet"), clears
the outputs and locks the check cells. What it does not do is done here: the live-widget state in the notebook
metadata is dropped, and every notebook must be fully marked before anything is written (a solution cell without
markers would lose its signature and docstring).
Under ``nbgrader autograde`` a failing self-check raises (see :func:`lecturelib.checks.run_check`), so its test cell
loses its points.
"""
from __future__ import annotations

import argparse
import ast
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tokenize
from pathlib import Path

import nbformat

SOLUTION_TAG = "solution"
CHECK_TAG = "check"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
SCHEMA_VERSION = 3                     # nbgrader's cell-metadata schema
ASSIGNMENT = "course"                  # the assignment name `student` uses in its temporary course directory


def header_colon(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[int, int]:
    """(line, column) of the colon that ends the ``def`` header of ``node`` (line 1-based as in ``ast``, column
    0-based), found with ``tokenize`` so that colons inside the signature (annotations, lambdas, strings)
    do not count."""
    rest = "\n".join(lines[node.lineno - 1:]) + "\n"
    depth = 0
    for tok in tokenize.generate_tokens(io.StringIO(rest).readline):
        if tok.type != tokenize.OP:
            continue
        if tok.string in "([{":
            depth += 1
        elif tok.string in ")]}":
            depth -= 1
        elif tok.string == ":" and depth == 0:
            return node.lineno + tok.start[0] - 1, tok.start[1]
    raise ValueError(f"no colon ends the signature of {node.name}()")


def _parse(source: str, where: str) -> ast.Module:
    try:
        return ast.parse(source)
    except SyntaxError as exc:
        raise ValueError(f"{where}: solution cell is not valid Python ({exc})") from exc


def solution_functions(source: str, where: str = "cell") -> list[str]:
    """Names of the functions a solution cell defines; ``ValueError`` naming the line if the cell holds anything
    but imports and function definitions (a leading comment is allowed)."""
    names = []
    for node in _parse(source, where).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.append(node.name)
        elif not isinstance(node, (ast.Import, ast.ImportFrom)):
            raise ValueError(f"{where}: line {node.lineno}: a solution cell may hold only imports and "
                             f"function definitions, found {type(node).__name__}")
    if not names:
        raise ValueError(f"{where}: a solution cell must define at least one function")
    return names


def marked_regions(source: str, where: str = "cell") -> int:
    """Number of ``### BEGIN SOLUTION`` / ``### END SOLUTION`` regions in ``source``; ``ValueError`` if they are
    nested or unbalanced."""
    depth, regions = 0, 0
    for n, line in enumerate(source.splitlines(), start=1):
        if BEGIN in line:
            if depth:
                raise ValueError(f"{where}: line {n}: nested {BEGIN!r}")
            depth, regions = 1, regions + 1
        elif END in line:
            if not depth:
                raise ValueError(f"{where}: line {n}: {END!r} without {BEGIN!r}")
            depth = 0
    if depth:
        raise ValueError(f"{where}: {BEGIN!r} without {END!r}")
    return regions


def mark_source(source: str, where: str = "cell") -> str:
    """``source`` with the body of every function (after its docstring) between ``### BEGIN SOLUTION`` and
    ``### END SOLUTION``, indented as the body; already marked sources come back unchanged (idempotent).

    A body written on the ``def`` line (``def f(a): return a``) is moved to a line of its own. Raises
    ``ValueError`` naming the line for a cell that holds anything but imports and function definitions, or a
    function with nothing but a docstring.
    """
    names = solution_functions(source, where)
    if marked_regions(source, where):
        return source
    tree = ast.parse(source)
    lines = source.splitlines()
    out = lines[:]
    # edit from the last function up, so the line numbers of the earlier ones stay valid
    for node in reversed([n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]):
        indent = " " * (node.col_offset + 4)
        body = node.body
        doc = ast.get_docstring(node, clean=False) is not None
        code = body[1:] if doc else body
        if not code:
            raise ValueError(f"{where}: {node.name}() has no body to hide besides its docstring")
        colon_line, colon_col = header_colon(lines, node)
        if body[0].lineno == colon_line:       # "def f(a): return a": rewrite header + body on lines of their own
            head = lines[node.decorator_list[0].lineno - 1 if node.decorator_list else node.lineno - 1:colon_line - 1]
            head.append(lines[colon_line - 1][:colon_col + 1])
            stmts = [indent + ast.get_source_segment(source, s) for s in body]
            if doc:
                head, stmts = head + stmts[:1], stmts[1:]
            new = head + [indent + BEGIN] + stmts + [indent + END]
            first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            out[first - 1:node.end_lineno] = new
        else:
            start, end = code[0].lineno, node.end_lineno
            out[end:end] = [indent + END]
            out[start - 1:start - 1] = [indent + BEGIN]
    marked = "\n".join(out)
    if solution_functions(marked, where) != names:
        raise AssertionError(f"{where}: marking changed the functions of the cell")
    return marked


def _tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _grade_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", text)


def nbgrader_solution_metadata(grade_id: str) -> dict:
    """nbgrader's metadata of an autograded-answer cell (a solution cell without points)."""
    return {"grade": False, "grade_id": grade_id, "locked": False, "schema_version": SCHEMA_VERSION,
            "solution": True, "task": False}


def nbgrader_test_metadata(grade_id: str, points: float = 1) -> dict:
    """nbgrader's metadata of an autograder test cell worth ``points``: locked, graded."""
    return {"grade": True, "grade_id": grade_id, "locked": True, "points": points,
            "schema_version": SCHEMA_VERSION, "solution": False, "task": False}


def mark_notebook(nb: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """A copy of ``nb`` with every ``solution`` and ``check`` cell marked the nbgrader way (see the module doc).

    The cell after a solution cell that calls ``checks.`` and has no tags is tagged ``check``. A ``check`` cell's
    grade id is ``check-`` + the function names of the solution cell before it, so it does not change when cells
    are added elsewhere. Points an instructor set on a check cell are kept.
    """
    nb = nbformat.from_dict(nb)
    last_solution = None
    for i, cell in enumerate(nb.cells):
        where = f"{name} cell {i}"
        tags = _tags(cell)
        if SOLUTION_TAG in tags:
            if cell.cell_type != "code":
                raise ValueError(f"{where}: a cell tagged {SOLUTION_TAG!r} must be a code cell")
            cell.source = mark_source(cell.source, where)
            last_solution = "-".join(solution_functions(cell.source, where))
            cell.metadata["nbgrader"] = nbgrader_solution_metadata(_grade_id(last_solution))
            nxt = nb.cells[i + 1] if i + 1 < len(nb.cells) else None
            if nxt is not None and nxt.cell_type == "code" and "checks." in nxt.source and not _tags(nxt):
                nxt.metadata["tags"] = [CHECK_TAG]
        elif CHECK_TAG in tags:
            if cell.cell_type != "code" or last_solution is None:
                raise ValueError(f"{where}: a cell tagged {CHECK_TAG!r} must be a code cell after a solution cell")
            points = cell.metadata.get("nbgrader", {}).get("points", 1)
            cell.metadata["nbgrader"] = nbgrader_test_metadata(_grade_id(f"check-{last_solution}"), points)
    ids = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells if "nbgrader" in c.metadata]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{name}: two exercises share a grade id ({sorted(ids)}); rename a function")
    return nb


def marking_problems(nb: nbformat.NotebookNode, name: str = "notebook") -> list[str]:
    """What ``mark`` would still change in ``nb`` (empty when the notebook is fully marked)."""
    marked = mark_notebook(nb, name)
    problems = []
    for i, (a, b) in enumerate(zip(nb.cells, marked.cells)):
        if a.source != b.source:
            problems.append(f"{name} cell {i}: no {BEGIN!r} / {END!r} markers")
        if a.metadata.get("nbgrader") != b.metadata.get("nbgrader") or _tags(a) != _tags(b):
            problems.append(f"{name} cell {i}: nbgrader metadata or {CHECK_TAG!r} tag missing or stale")
    return problems


def mark_files(paths: list[Path]) -> list[Path]:
    """Mark the notebooks at ``paths`` in place; returns the ones that changed."""
    changed = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if marking_problems(nb, path.name):
            nbformat.write(mark_notebook(nb, path.name), path)
            changed.append(path)
    return changed


def build_student_edition(src: Path, dst: Path) -> list[Path]:
    """Write the student edition of every notebook in ``src`` to ``dst`` with nbgrader's ``generate_assignment``
    (run in a temporary course directory, no database); returns the written paths."""
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"notebook folder {src} does not exist; pass the course's notebooks/ folder")
    if src.resolve() == dst.resolve():
        raise ValueError("the output folder must differ from the notebook folder (it would overwrite the solutions)")
    notebooks = sorted(src.glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no .ipynb files in {src}")
    problems = [p for path in notebooks for p in marking_problems(nbformat.read(path, as_version=4), path.name)]
    if problems:
        raise ValueError("not marked the nbgrader way (run `python -m lecturelib.editions mark "
                         f"{src}/*.ipynb`):\n  " + "\n  ".join(problems))
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "source" / ASSIGNMENT
        source.mkdir(parents=True)
        for path in notebooks:
            shutil.copy(path, source / path.name)
        generate_assignment(Path(tmp), ASSIGNMENT, "--no-db", "--ClearSolutions.enforce_metadata=True")
        dst.mkdir(parents=True, exist_ok=True)
        written = []
        for path in notebooks:
            nb = nbformat.read(Path(tmp) / "release" / ASSIGNMENT / path.name, as_version=4)
            nb.metadata.pop("widgets", None)
            nbformat.write(nb, dst / path.name)
            written.append(dst / path.name)
    return written


def nbgrader(course: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` in the course directory ``course`` (the notebooks' kernels import this checkout's
    lecturelib; this interpreter's scripts, such as nbgrader's ``alembic``, come first on PATH); ``RuntimeError``
    with nbgrader's log if it fails."""
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root] + [p for p in os.environ.get("PYTHONPATH", "").split(
        os.pathsep) if p and p != root]))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cmd = [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={course}"]
    proc = subprocess.run(cmd, cwd=course, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"nbgrader {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def generate_assignment(course: Path, assignment: str, *args: str) -> subprocess.CompletedProcess:
    """``nbgrader generate_assignment ASSIGNMENT --force ARGS`` in the course directory ``course``."""
    return nbgrader(course, "generate_assignment", assignment, "--force", *args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mark the exercises the nbgrader way; build the student edition.")
    sub = parser.add_subparsers(dest="command", required=True)
    mark = sub.add_parser("mark", help="add nbgrader's markers and metadata to solution and check cells (in place)")
    mark.add_argument("notebooks", nargs="+", type=Path)
    student = sub.add_parser("student", help="write the student edition with nbgrader generate_assignment")
    student.add_argument("src", nargs="?", default="notebooks", type=Path)
    student.add_argument("dst", nargs="?", default="build/student", type=Path)
    args = parser.parse_args(argv)
    if args.command == "mark":
        changed = mark_files(args.notebooks)
        for p in args.notebooks:
            print(f"{'marked' if p in changed else 'already marked'}: {p}")
    else:
        for p in build_student_edition(args.src, args.dst):
            print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
