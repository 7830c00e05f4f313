"""The stored notebooks read at a glance: figures wide and sharp enough, widgets with a picture, each lesson opening
with what the student will see and closing with its measured results."""
from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import nbformat
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MIN_WIDTH_PX = 400          # a full-width figure narrower than this is unreadable on a page
MIN_DPI = 99.5              # matplotlib writes 100 dpi as 99.9998 in the PNG header
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def pngs(cell):
    for out in cell.get("outputs", []):
        data = out.get("data", {}).get("image/png")
        if data:
            yield Image.open(io.BytesIO(base64.b64decode(data)))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_figures_are_wide_and_at_least_100_dpi(path):
    nb = nbformat.read(path, as_version=4)
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for image in pngs(cell):
            width, _ = image.size
            if width < MIN_WIDTH_PX and "small-figure" not in tags(cell):
                problems.append(f"cell {i}: figure {width} px wide (< {MIN_WIDTH_PX}; tag the cell small-figure "
                                "only for a genuinely small picture)")
            dpi = image.info.get("dpi")
            if dpi is not None and dpi[0] < MIN_DPI:
                problems.append(f"cell {i}: figure saved at {dpi[0]:.0f} dpi (< 100; lecturelib.setup() sets 100)")
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_widget_cell_stores_a_picture(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        is_widget = "widget" in tags(cell) or any(WIDGET_VIEW in o.get("data", {}) for o in cell.get("outputs", []))
        if is_widget:
            assert any(True for _ in pngs(cell)), f"{path.name}: widget cell {i} stores no image/png of its frame"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_lesson_opens_with_what_you_will_see(path):
    nb = nbformat.read(path, as_version=4)
    opening = [c for c in nb.cells[:3] if c.cell_type == "markdown"]
    section = next((c.source for c in opening if re.search(r"^#+ What you will see", c.source, re.M)), None)
    assert section is not None, f"{path.name}: no 'What you will see' section in its first three cells"
    body = section.split("What you will see", 1)[1].split("\n#", 1)[0]
    lines = [ln for ln in body.splitlines()[1:] if ln.strip()]
    assert len(lines) == 3, f"{path.name}: 'What you will see' has {len(lines)} lines, expected 3"


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if not p.name.startswith("00")], ids=lambda p: p.stem)
def test_each_lesson_closes_with_its_results_table(path):
    nb = nbformat.read(path, as_version=4)
    heads = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "markdown" and re.search(r"^## Results\b", c.source, re.M)]
    assert heads, f"{path.name}: no '## Results' section"
    after = [c for c in nb.cells[heads[-1] + 1:] if c.cell_type == "code"]
    assert after and any(o.get("text") or o.get("data") for o in after[0].outputs), (
        f"{path.name}: the Results section's first code cell prints nothing")
    later = [c for c in nb.cells[heads[-1] + 1:] if c.cell_type == "markdown" and re.match(r"^## ", c.source)]
    assert all(c.source.startswith("## References") for c in later), (
        f"{path.name}: the Results section is not at the end (later sections: "
        f"{[c.source.splitlines()[0] for c in later]})")
