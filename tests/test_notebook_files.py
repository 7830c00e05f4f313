"""The committed notebooks are executed, in order, with no errors, follow the course's layout, and show what a
reader can see without running them."""
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager

from lecturelib.widgets import LIVE_ONLY

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_overview_exists():
    assert (ROOT / "notebooks" / "00_overview.ipynb").is_file()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_are_fresh_and_in_order(path):
    nb = nbformat.read(path, as_version=4)
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), (
        f"{path.name} was not executed top to bottom in one fresh kernel (execution counts {counts}); "
        "run `make notebooks`")
    for i, c in enumerate(nb.cells):
        for o in c.get("outputs", []):
            assert o.output_type != "error", f"{path.name} cell {i} has an error output"
            assert "image/svg+xml" not in o.get("data", {}), f"{path.name} cell {i}: SVG output (use PNG)"
    assert path.stat().st_size < 2_000_000, f"{path.name} is {path.stat().st_size / 1e6:.1f} MB; shrink its figures"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_layout(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    assert "Run time" in first.source, f"{path.name}: the header must state the measured run time"
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert any("lecturelib.setup(" in s for s in code[:3]), f"{path.name}: set-up cell missing"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "References" in text, f"{path.name}: references section missing"
    if not path.name.startswith("00"):
        assert any("assert " in s for s in code), f"{path.name}: no claim is asserted"
        assert any("solution" in c.metadata.get("tags", []) for c in nb.cells), f"{path.name}: no exercise"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_widgets_can_render(path):
    """Every widget view in an output has its stored state; no widget that needs a live kernel is stored."""
    nb = nbformat.read(path, as_version=4)
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    for mid, model in state.items():
        assert LIVE_ONLY not in model.get("state", {}).get("_dom_classes", []), \
            f"{path.name}: widget {mid} only works with a live kernel; it must not be stored (scripts/run_notebooks.py)"
    for i, c in enumerate(nb.cells):
        for o in c.get("outputs", []):
            view = o.get("data", {}).get("application/vnd.jupyter.widget-view+json")
            assert view is None or view["model_id"] in state, \
                f"{path.name} cell {i}: a widget view without stored state shows 'model not found'"


def test_the_explorer_cell_shows_a_static_picture():
    nb = nbformat.read(ROOT / "notebooks" / "05_transposed_convolution.ipynb", as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "transposed_conv_explorer(" in c.source]
    assert len(cells) == 1 and "from lecturelib.widgets import transposed_conv_explorer" in cells[0].source
    (output,) = cells[0].outputs
    assert set(output.data) == {"image/png", "text/plain"} and "VBox(" not in output.data["text/plain"]
    assert nb.metadata["kernelspec"]["display_name"] == KernelSpecManager().get_kernel_spec("python3").display_name
