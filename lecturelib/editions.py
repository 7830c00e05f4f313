"""The student edition: solution cells replaced by stubs, outputs cleared.

Convention: an exercise's solution is a code cell tagged ``solution`` that holds
only imports and function definitions. In the student edition every function in
such a cell keeps its signature and docstring and its body becomes
``raise NotImplementedError(...)``, so "Run all" still goes through and the
self-checks print ❌ until the learner writes the body.

    python -m lecturelib.editions [NOTEBOOK_DIR] [OUT_DIR]     # default: notebooks/ -> build/student/
"""
from __future__ import annotations

import argparse
import ast
import io
import sys
import tokenize
from pathlib import Path

import nbformat

SOLUTION_TAG = "solution"
STUB_MESSAGE = "Exercise: write this function, then run the check below."


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


def stub_source(source: str, where: str = "cell") -> str:
    """Replace every function body in ``source`` by ``raise NotImplementedError``.

    Each function keeps its decorators, its signature up to the colon that ends it (however many lines it
    spans, whatever follows the colon) and its docstring. Only imports, function definitions and a
    leading comment are allowed in a solution cell; anything else raises ``ValueError`` naming the line.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ValueError(f"{where}: solution cell is not valid Python ({exc})") from exc
    lines = source.splitlines()
    out: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.extend(lines[node.lineno - 1:node.end_lineno])
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            body_start = node.body[0].lineno
            colon_line, colon_col = header_colon(lines, node)
            if body_start > colon_line:           # the body starts on a line of its own
                header = lines[first - 1:body_start - 1]
            else:                                 # "def f(a,\n      b): return a + b": cut after the colon
                header = lines[first - 1:colon_line - 1] + [lines[colon_line - 1][:colon_col + 1]]
            doc = ast.get_docstring(node, clean=False)
            indent = " " * (node.col_offset + 4)
            out.extend(header)
            if doc is not None:
                d = node.body[0]
                if d.lineno > colon_line:
                    out.extend(lines[d.lineno - 1:d.end_lineno])
                else:
                    out.append(indent + ast.get_source_segment(source, d))
            out.append(f"{indent}# YOUR CODE HERE")
            out.append(f'{indent}raise NotImplementedError("{STUB_MESSAGE}")')
        else:
            raise ValueError(f"{where}: line {node.lineno}: a solution cell may hold only imports and "
                             f"function definitions, found {type(node).__name__}")
        out.append("")
    leading = [ln for ln in lines[:tree.body[0].lineno - 1] if ln.startswith("#")] if tree.body else []
    return "\n".join(leading + out).rstrip() + "\n"


def student_notebook(nb: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """A copy of ``nb`` with solutions stubbed and every output cleared."""
    nb = nbformat.from_dict(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if SOLUTION_TAG in cell.get("metadata", {}).get("tags", []):
            cell.source = stub_source(cell.source, where=f"{name} cell {i}")
        cell.outputs = []
        cell.execution_count = None
    nb.metadata.pop("widgets", None)
    return nb


def build_student_edition(src: Path, dst: Path) -> list[Path]:
    """Write the student edition of every notebook in ``src`` to ``dst``; returns the written paths."""
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"notebook folder {src} does not exist; pass the course's notebooks/ folder")
    if src.resolve() == dst.resolve():
        raise ValueError("the output folder must differ from the notebook folder (it would overwrite the solutions)")
    notebooks = sorted(src.glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no .ipynb files in {src}")
    dst.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        out = dst / path.name
        nbformat.write(student_notebook(nb, path.name), out)
        written.append(out)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the student edition of the course notebooks.")
    parser.add_argument("src", nargs="?", default="notebooks", type=Path)
    parser.add_argument("dst", nargs="?", default="build/student", type=Path)
    args = parser.parse_args(argv)
    for p in build_student_edition(args.src, args.dst):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
