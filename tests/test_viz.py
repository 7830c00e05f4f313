"""Pictures for any label set: class names in legends and the layout of long legends; instance masks."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lecturelib.datasets import VOC_CLASSES  # noqa: E402
from lecturelib.scenes import CLASS_NAMES  # noqa: E402
from lecturelib.viz import (  # noqa: E402
    COURSE_STYLE,
    colorize,
    instance_overlay,
    legend_handles,
    legend_outside,
    overlay,
    show_grid,
    use_course_style,
)


def legend_texts(fig):
    return [t.get_text() for t in fig.legends[0].get_texts()]


def overlaps(fig) -> bool:
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    return any(ax.get_window_extent(renderer).overlaps(legend) for ax in fig.axes)


def voc_row():
    mask = np.zeros((40, 40), np.int64)
    mask[10:20, 10:30] = 15
    return [np.zeros((40, 40, 3), np.uint8), mask, mask]


def test_other_label_sets_get_their_names_and_room_for_the_legend():
    fig = show_grid([voc_row()], legend=True, class_names=VOC_CLASSES)
    assert legend_texts(fig) == list(VOC_CLASSES) and not overlaps(fig)
    plt.close(fig)
    fig = show_grid([voc_row()], legend=True, num_classes=21)          # no names: no Fashion-MNIST names
    assert legend_texts(fig)[:3] == ["background", "class 1", "class 2"] and legend_texts(fig)[-1] == "class 20"
    assert not overlaps(fig)
    plt.close(fig)
    with pytest.raises(ValueError, match="num_classes=20 but 21 class_names"):
        show_grid([voc_row()], legend=True, num_classes=20, class_names=VOC_CLASSES)


def test_the_course_figures_keep_their_layout():
    assert [h.get_label() for h in legend_handles()] == list(CLASS_NAMES)
    fig = show_grid([[np.zeros((8, 8), np.int64)] * 3], legend=True, size=2.0)
    assert legend_texts(fig) == list(CLASS_NAMES) and not overlaps(fig)
    assert 2.0 < fig.get_figheight() < 3.0                       # the panels keep their size; the legend adds a band
    plt.close(fig)
    m = np.arange(12).reshape(3, 4) % 11
    assert (colorize(m) == colorize(m, 11)).all() and (colorize(m, class_names=CLASS_NAMES) == colorize(m)).all()
    image = np.zeros((3, 4, 3), np.uint8)
    assert (overlay(image, m, class_names=VOC_CLASSES) == overlay(image, m, 21)).all()


def test_instance_overlay_thresholds_probabilities_like_mask_ap():
    image = np.zeros((16, 16, 3), np.uint8)
    probs = torch.full((1, 16, 16), 0.02)
    probs[0, 4:8, 4:8] = 0.95
    painted = (instance_overlay(image, probs) != 0).any(2)
    assert int(painted.sum()) == 16 and painted[4:8, 4:8].all()
    model_output = probs[:, None]                                      # a model's masks [D, 1, H, W]
    assert (instance_overlay(image, model_output) == instance_overlay(image, probs)).all()
    assert (instance_overlay(image, probs > 0.5) == instance_overlay(image, probs)).all()
    assert (instance_overlay(image, (probs > 0.5).to(torch.uint8)) == instance_overlay(image, probs)).all()
    with pytest.raises(ValueError, match="image"):
        instance_overlay(image, torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        instance_overlay(image, torch.zeros(16, 16))


@pytest.mark.parametrize("layout", [None, "constrained"])
def test_legend_outside_never_covers_a_panel(layout):
    fig, axes = plt.subplots(2, 3, figsize=(6, 4), layout=layout)
    for ax in axes.flat:
        ax.imshow(colorize(np.arange(16).reshape(4, 4) % 11))
    legend_outside(fig, num_classes=11)
    fig.canvas.draw()
    assert legend_texts(fig) == list(CLASS_NAMES) and not overlaps(fig)
    plt.close(fig)
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="no handles"):
        legend_outside(fig, handles=[])
    plt.close(fig)


def test_the_course_style_sets_100_dpi_and_nearest_interpolation():
    with matplotlib.rc_context({"figure.dpi": 72, "image.interpolation": "antialiased"}):
        use_course_style()
        assert matplotlib.rcParams["figure.dpi"] == 100 and matplotlib.rcParams["image.interpolation"] == "nearest"
        assert set(COURSE_STYLE) <= set(matplotlib.rcParams)
