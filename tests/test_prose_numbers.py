"""Numbers in the notebooks' prose are never measurements typed by hand.

A measured number (an accuracy, a time, a gain, a speed-up) changes whenever a notebook runs again; typed into a
markdown cell it goes stale without anyone noticing. The course prints such numbers from the code that measures
them and the prose points at the printout ("the table above"); a margin is a named constant (``MIN_GAP``) that the
assertion and the text share.

The scan below finds every number in a markdown cell that looks measured -- a decimal (0.42, 3.5, 1e-3), a
percentage (12 %, 22–75 %) or a factor (18×, 1.5x) -- and fails unless it is in ``ALLOWED`` with a reason: a
figure quoted from a paper (which the notebook's references cell must also name), a constant of the course, an
arXiv identifier. Sizes such as 3×3, 4×4 → 2×2, 224×224 and upsampling factors such as ×2 are not factors of
anything measured and are not reported. The one measured number a header may state, "Run time: about X min", is
left out of the scan because ``test_run_time_header_matches_setup`` pins it to the ``expected_minutes=`` of the
notebook's set-up cell.
"""
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

MEASURED = re.compile(r"""
      (?<![\w.])\d+(?:\.\d+)?(?:\s*[–-]\s*\d+(?:\.\d+)?)?\s?%        # percentages, ranges too: 12 %, 22–75 %
    | (?<![\w.×])\d+(?:\.\d+)?\s?[×x](?!\s*\d)(?!\w)                  # factors: 18×, 1.5x (not 3×3 or 224 × 224)
    | (?<![\w.])\d*\.\d+(?:e[-+]?\d+)?(?!\w|\.\d)                     # decimals: 0.42, 3.5, 2.5e-3
    | (?<![\w.])\d+e[-+]?\d+(?!\w|\.\d)                               # powers of ten: 1e-3
""", re.VERBOSE)
RUN_TIME = re.compile(r"\**Run time:\**\s*about\s+(\d+(?:\.\d+)?)\s*min")
# numbered headings ("### 3.1 Bottom-up proposals") and section references ("Section 4.3", "§ 2.2")
SECTION_NUMBER = re.compile(r"^(#+\s*)\d+(?:\.\d+)+|(Section\s|§\s?)\d+(?:\.\d+)+", re.MULTILINE)
SETUP_MINUTES = re.compile(r"lecturelib\.setup\([^)]*expected_minutes=(\d+(?:\.\d+)?)")

PAPER = "paper: "   # reasons that start with this are figures quoted from a paper

# notebook -> {the exact string the scan finds: why it may be typed by hand}
ALLOWED = {
    "00_overview": {
        "70 %": "scenes.TRAIN_ROWS, the share of each photograph that train scenes crop from",
        "22–75 %": "SceneConfig.min_scale and max_scale, the item sides the scene generator draws",
        "0.35": "SceneConfig.p_touch, the probability that the scene generator places an item touching its twin",
        "1708.07747": "arXiv identifier of Fashion-MNIST",
    },
    "01_patch_classification": {
        "1708.07747": "arXiv identifier of Fashion-MNIST",
    },
    "02_fully_convolutional": {},
    "03_multiscale": {},
    "04_recurrent_refinement": {
        "0.5": "the centring constant of refinement_step (`image - 0.5`), which exercise 2 asks for",
        "15 %": "lecturelib.checks.lesson04.RF_TOLERANCE, the tolerance of exercise 1's prediction",
    },
    "05_transposed_convolution": {
        "1603.07285": "arXiv identifier of Dumoulin & Visin's guide to convolution arithmetic",
    },
    "06_skip_connections": {
        "59.4": PAPER + "FCN-32s mean IU on the VOC 2011 val subset, Long et al. 2015, Table 2",
        "62.4": PAPER + "FCN-16s mean IU on the VOC 2011 val subset, Long et al. 2015, Table 2",
        "62.7": PAPER + "FCN-8s mean IU on the VOC 2011 val subset, Long et al. 2015, Table 2",
    },
    "07_object_detection": {
        "0.5": "IoU threshold of AP@0.5 and of the localization criterion (constants of the metrics); the NMS "
               "threshold of exercise 1 and of the detectors' recipe (DetectionConfig.nms)",
        ".5": "the first IoU threshold in COCO's name AP@[.5:.95] (the protocol's constant)",
        ".95": "the last IoU threshold in COCO's name AP@[.5:.95] (the protocol's constant)",
        "0.95": "the last IoU threshold of COCO's AP (the protocol's constant)",
        "0.75": "the IoU threshold of AP@0.75 (COCO's constant), a column of exercise 4's table",
        "0.7": "an NMS threshold exercise 4 compares (an input, lecturelib.checks.lesson07.NMS_SETTINGS)",
        "0.3": "an NMS threshold exercise 4 compares (an input, lecturelib.checks.lesson07.NMS_SETTINGS)",
        "1312.6229": "arXiv identifier of OverFeat",
        "1504.08083": "arXiv identifier of Fast R-CNN",
        "1506.01497": "arXiv identifier of Faster R-CNN",
        "66.0": PAPER + "R-CNN (VGG-16, box regression) mAP on VOC 2007 test, Girshick et al. 2014 Table 3 / Fast "
                        "R-CNN Table 1; the lecture's ladder",
        "66.9": PAPER + "Fast R-CNN mAP on VOC 2007 test (Girshick 2015, Table 1), the lecture's figure for Fast and "
                        "Faster R-CNN",
        "146×": PAPER + "Fast R-CNN over R-CNN in test time per image without proposals (VGG-16), Girshick 2015, "
                        "Table 4",
        "0.32": PAPER + "Fast R-CNN's test time per image without proposals, Girshick 2015, Table 4",
        "1.8": PAPER + "selective search + Fast R-CNN per image, Ren et al. 2015, timing table",
        "69.9": PAPER + "Faster R-CNN (VGG-16, VOC 2007 trainval) mAP on VOC 2007 test, Ren et al. 2015",
        "0.2": PAPER + "Faster R-CNN's 198 ms as the lecture rounds it (Ren et al. 2015, timing table)",
        "1×": PAPER + "R-CNN's speed-up in the lecture's ladder (the reference)",
        "25×": PAPER + "Fast R-CNN's speed-up over R-CNN in the lecture's ladder (50 s / 2 s)",
        "250×": PAPER + "Faster R-CNN's speed-up over R-CNN in the lecture's ladder (50 s / 0.2 s)",
    },
    "08_instance_segmentation": {
        "0.5": "IoU threshold of AP^r@0.5 and SDSConfig.pos_iou, constants of the metric and of SDS's recipe",
        "0.7": "IoU threshold of AP^r@0.7, a constant of the metric",
        "0.50": "first IoU threshold of COCO's AP (the protocol's constant)",
        "0.95": "last IoU threshold of COCO's AP (the protocol's constant)",
        "0.3": "SDSConfig.nms, the mask IoU of SDS's region NMS",
        "1e-3": "the tolerance with which tests/test_mask_ap.py compares the evaluator with pycocotools",
        "0.2": PAPER + "Faster R-CNN's 198 ms as the slides round it (Ren et al. 2015, timing table)",
        "49.7": PAPER + "SDS AP^r@0.5 on VOC 2012 val, as tabulated by Dai et al. 2016",
        "25.3": PAPER + "SDS AP^r@0.7 on VOC 2012 val, as tabulated by Dai et al. 2016",
        "63.5": PAPER + "MNC AP^r@0.5 on VOC 2012 val, Dai et al. 2016",
        "41.5": PAPER + "MNC AP^r@0.7 on VOC 2012 val, Dai et al. 2016",
        "0.36": PAPER + "MNC's time per image, Dai et al. 2016",
        "133×": PAPER + "SDS's 48 s over MNC's 0.36 s per image, both from Dai et al. 2016",
        "10×": "the claim's speed threshold (the cascade at least 10x faster than SDS), asserted in its cell",
        "3 ×": "claims.MARGIN_STDS, the course's margin in pooled standard deviations",
        "0.03": "MIN_GAP, the claims' minimum gap in AP, fixed before the checkpoints were evaluated",
    },
    "09_attention_and_spatial_transformers": {
        "1708.07747": "arXiv identifier of Fashion-MNIST",
        "0.5": "the entries of exercise 1's θ (a zoom on the top-right quarter), whose output it asks to predict",
    },
}


def measured_numbers(markdown: str) -> list[str]:
    """The numbers in a markdown text that look measured, in order of appearance."""
    text = SECTION_NUMBER.sub(r"\1\2", RUN_TIME.sub("Run time", markdown))
    return [m.group(0).strip() for m in MEASURED.finditer(text)]


def unexplained(path: Path, allowed: dict[str, str]) -> list[tuple[int, str]]:
    """(cell index, number) for every number of a markdown cell of ``path`` that ``allowed`` does not explain."""
    nb = nbformat.read(path, as_version=4)
    return [(i, n) for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
            for n in measured_numbers(c.source) if n not in allowed]


def markdown_numbers(path: Path) -> set[str]:
    nb = nbformat.read(path, as_version=4)
    return {n for c in nb.cells if c.cell_type == "markdown" for n in measured_numbers(c.source)}


# ----------------------------------------------------------------------------- the scanner itself


def test_the_scanner_finds_measured_numbers_and_skips_sizes():
    text = ("The multi-scale net wins by 0.03 mIoU (+0.012 on small items), labels 12 % more pixels, 91.0% agree, "
            "and is 18× faster, 1.5x slower or 4 x cheaper; errors below 2.5e-3 and 1e-4.\n"
            "3×3 kernels, 4×4 → 2×2, a 224 × 224 input, 1x64x32x32 tensors, ×2 upsampling, ×32 (fixed), "
            "stride 32, 2·3·2·3 = 36, seeds 0, 1, 2 and the year 2015.\n"
            "### 3.1 A numbered heading, then Section 4.3 and § 2.2 of a paper.\n"
            "**Run time:** about 2.6 min with the quick profile.")
    assert measured_numbers(text) == ["0.03", "0.012", "12 %", "91.0%", "18×", "1.5x", "4 x", "2.5e-3", "1e-4"]


def test_a_planted_measured_number_fails_the_check(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Lesson\n\nRun time: about 1.5 min."),
                nbformat.v4.new_code_cell("course = lecturelib.setup(seed=0, expected_minutes=1.5)"),
                nbformat.v4.new_markdown_cell("FCN-8s gains 0.025 mIoU over FCN-16s here, far from the paper's 0.3."),
                nbformat.v4.new_markdown_cell("## References\n- Long et al. 2015 (FCN-8s - FCN-16s = 0.3, Table 2).")]
    path = tmp_path / "99_planted.ipynb"
    nbformat.write(nb, path)
    assert unexplained(path, {"0.3": PAPER + "the paper's gap"}) == [(2, "0.025")]
    assert unexplained(path, {"0.3": PAPER + "the paper's gap", "0.025": "typed by hand"}) == []


# ----------------------------------------------------------------------------- the notebooks


def test_every_notebook_has_an_allow_list():
    assert sorted(ALLOWED) == [p.stem for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_measured_number_is_typed_into_the_prose(path):
    found = unexplained(path, ALLOWED.get(path.stem, {}))
    assert not found, (
        f"{path.name}: numbers in markdown cells that look measured: "
        + ", ".join(f"cell {i}: {n!r}" for i, n in found)
        + ". Print a measured number from the code that measures it and refer to the printout; name a margin by "
        "the constant the code uses; allow a quoted paper figure or a course constant in ALLOWED with its reason.")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_allow_list_is_minimal(path):
    stale = set(ALLOWED.get(path.stem, {})) - markdown_numbers(path)
    assert not stale, f"{path.name}: ALLOWED holds numbers the notebook no longer writes: {sorted(stale)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_quoted_paper_figures_name_their_source_in_the_references(path):
    nb = nbformat.read(path, as_version=4)
    refs = [c.source for c in nb.cells if c.cell_type == "markdown" and "## References" in c.source]
    assert len(refs) == 1, f"{path.name}: expected one markdown cell with '## References'"
    references = measured_numbers(refs[0].split("## References", 1)[1])
    missing = [n for n, why in ALLOWED.get(path.stem, {}).items() if why.startswith(PAPER) and n not in references]
    assert not missing, f"{path.name}: paper figures whose source the references cell does not give: {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_run_time_header_matches_setup(path):
    nb = nbformat.read(path, as_version=4)
    header = RUN_TIME.search(nb.cells[0].source)
    assert header, f"{path.name}: the first cell must say 'Run time: about X min'"
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    setup = SETUP_MINUTES.search(code[0])
    assert setup, f"{path.name}: the first code cell must call lecturelib.setup(..., expected_minutes=X)"
    assert float(header.group(1)) == float(setup.group(1)), (
        f"{path.name}: the header says about {header.group(1)} min, lecturelib.setup(expected_minutes="
        f"{setup.group(1)})")


def test_the_overview_quotes_the_scene_generator_constants():
    from lecturelib import scenes

    config = scenes.SceneConfig()
    assert (scenes.TRAIN_ROWS, config.min_scale, config.max_scale, config.p_touch) == (0.7, 0.22, 0.75, 0.35)
    assert config.min_visible == 0.5        # "at least half of its area visible"
