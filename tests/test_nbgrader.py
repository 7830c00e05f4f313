"""nbgrader on a real lesson, as an instructor runs it: generate_assignment, then autograde two submissions.

In a temporary course directory, lesson 02 (its exercises, one check cell each) is released with
``nbgrader generate_assignment``; Alice submits the release with every exercise solved (the solutions of the
source notebook), Bob the same with one exercise wrong. ``nbgrader autograde`` executes both: Alice gets every
point, Bob loses exactly the points of the wrong exercise's check cell.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import nbformat
import pytest

from lecturelib.editions import BEGIN, generate_assignment, nbgrader

pytest.importorskip("nbgrader")

REPO = Path(__file__).resolve().parents[1]
LESSON = REPO / "notebooks" / "02_fully_convolutional.ipynb"
ASSIGNMENT = "lesson02"
WRONG = "my_linear_to_conv"                   # Bob's wrong exercise: a fresh convolution, the Linear's weights lost
WRONG_BODY = "    return nn.Conv2d(in_channels, linear.out_features, kernel_size)"


def graded(nb) -> dict[str, dict]:
    return {c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"] for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("grade_id")}


def submission(release: nbformat.NotebookNode, source: nbformat.NotebookNode, wrong: str | None = None):
    """The release with the source's solutions written in; the exercise ``wrong`` gets a wrong body."""
    answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in source.cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    nb = nbformat.from_dict(release)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.metadata.get("nbgrader", {}).get("solution"):
            assert "NotImplementedError" in cell.source and BEGIN not in cell.source, "the release shows a solution"
            cell.source = answers[grade_id]
            if grade_id == wrong:
                head = cell.source.split(BEGIN)[0]
                cell.source = head.rstrip() + "\n" + WRONG_BODY + "\n"
    return nb


def test_generate_assignment_then_autograde_a_correct_and_a_wrong_submission(tmp_path):
    from nbgrader.api import Gradebook

    start = time.monotonic()
    course = tmp_path / "course"
    (course / "source" / ASSIGNMENT).mkdir(parents=True)
    shutil.copy(LESSON, course / "source" / ASSIGNMENT / LESSON.name)
    generate_assignment(course, ASSIGNMENT)

    source = nbformat.read(LESSON, as_version=4)
    release = nbformat.read(course / "release" / ASSIGNMENT / LESSON.name, as_version=4)
    checks = {k: v for k, v in graded(release).items() if v["grade"]}
    n = len(checks)
    assert n >= 2 and all(v["locked"] and v["points"] == 1 for v in checks.values()), checks
    assert all(not c.get("outputs") for c in release.cells if c.cell_type == "code")

    for student, wrong in [("alice", None), ("bob", WRONG)]:
        folder = course / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(submission(release, source, wrong), folder / LESSON.name)
    nbgrader(course, "autograde", ASSIGNMENT, "--create", "--force", "--Execute.timeout=600")

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        def scores(student):
            return {grade_id: gb.find_grade(grade_id, LESSON.stem, ASSIGNMENT, student).score for grade_id in checks}

        def total(student):
            nb = gb.find_submission_notebook(LESSON.stem, ASSIGNMENT, student)
            return nb.score, nb.max_score

        alice, bob = scores("alice"), scores("bob")
        assert total("alice") == (n, n), alice
        assert alice == {k: 1 for k in checks}
        assert total("bob") == (n - 1, n), bob
        assert bob == {k: 0 if k == f"check-{WRONG}" else 1 for k in checks}, bob
    bob_nb = nbformat.read(course / "autograded" / "bob" / ASSIGNMENT / LESSON.name, as_version=4)
    text = "".join(o.get("text", "") + "".join(o.get("traceback", [])) for c in bob_nb.cells
                   if c.cell_type == "code" for o in c.outputs)
    assert "\u274c Linear -> Conv2d" in text and "CheckFailed" in text
    assert time.monotonic() - start < 120, "the nbgrader round trip should take under 2 min"
