import math
import warnings

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from lecturelib.metrics import BoundaryAccuracy, ConfusionMatrix, boundary_band, segmentation_report


@pytest.mark.parametrize("seed", range(5))
def test_confusion_matrix_matches_torchmetrics(seed):
    g = torch.Generator().manual_seed(seed)
    C = 6
    cm = ConfusionMatrix(C)
    preds, targets = [], []
    for _ in range(3):  # accumulate over batches
        target = torch.randint(0, C - 1, (2, 17, 23), generator=g)  # class C-1 never in the target
        pred = torch.randint(0, C - 2, (2, 17, 23), generator=g)    # classes C-2, C-1 never predicted
        target[torch.rand(target.shape, generator=g) < 0.1] = 255
        cm.update(pred, target)
        preds.append(pred)
        targets.append(target)
    pred, target = torch.cat(preds), torch.cat(targets)
    out = cm.compute()
    # pixel accuracy (micro) and per-class IoU against torchmetrics
    acc = MulticlassAccuracy(C, average="micro", ignore_index=255)(pred, target)
    assert math.isclose(out["pixel_acc"], float(acc), abs_tol=1e-6)
    iou_ref = MulticlassJaccardIndex(C, average="none", ignore_index=255)(pred, target)
    present = [c for c in range(C) if ((target == c).any() or ((pred == c) & (target != 255)).any())]
    assert present == [c for c in range(C) if not math.isnan(out["iou"][c])]
    for c in present:
        assert math.isclose(out["iou"][c], float(iou_ref[c]), abs_tol=1e-6)
    assert math.isclose(out["miou"], float(iou_ref[present].mean()), abs_tol=1e-6)
    assert math.isnan(out["iou"][C - 1])  # absent everywhere


def test_miou_is_not_the_mean_of_batch_ious():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([[1, 1]]), torch.tensor([[1, 1]]))
    cm.update(torch.tensor([[0, 0, 0, 0]]), torch.tensor([[1, 1, 1, 1]]))
    out = cm.compute()
    # class 1: tp 2, fn 4 -> 1/3; class 0: tp 0, fp 4 -> 0
    assert out["iou"] == pytest.approx([0.0, 1 / 3])


def test_boundary_band_hand_example():
    t = torch.zeros(8, 8, dtype=torch.long)
    t[:, 4:] = 1
    band = boundary_band(t, width=1)
    assert band[:, 3:5].all() and not band[:, :3].any() and not band[:, 5:].any()
    band2 = boundary_band(t, width=2)
    assert band2[:, 2:6].all() and not band2[:, :2].any() and not band2[:, 6:].any()


def test_boundary_accuracy_penalises_a_shifted_edge_only_near_the_edge():
    t = torch.zeros(1, 16, 16, dtype=torch.long)
    t[..., 8:] = 1
    p = torch.zeros_like(t)
    p[..., 9:] = 1  # one column wrong
    ba = BoundaryAccuracy(width=2)
    ba.update(p, t)
    assert ba.compute() == pytest.approx(3 / 4)  # band = columns 6..9, column 8 wrong
    rep = segmentation_report(p, t, 2)
    assert rep["pixel_acc"] == pytest.approx(15 / 16)
    assert rep["boundary_acc"] == pytest.approx(3 / 4)


def test_ignore_pixels_count_nowhere():
    t = torch.full((4, 4), 255)
    t[0, 0] = 1
    cm = ConfusionMatrix(3)
    cm.update(torch.ones(4, 4, dtype=torch.long), t)
    out = cm.compute()
    assert out["pixel_acc"] == 1.0 and out["miou"] == 1.0
    assert np.isnan(out["iou"][0]) and np.isnan(out["iou"][2])


def test_metric_without_labelled_foreground_says_so():
    target = torch.zeros(375, 500, dtype=torch.long)
    target[100:200, 100:300] = 255                       # the foreground of a 0/255 mask read as "ignore"
    with pytest.warns(UserWarning, match="mIoU is undefined"):
        report = segmentation_report(torch.zeros(375, 500, dtype=torch.long), target, 2)
    assert np.isnan(report["miou"])                      # not 1.0
    target[100:200, 100:300] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert segmentation_report(torch.zeros(375, 500, dtype=torch.long), target, 2)["miou"] == pytest.approx(
            0.5 * 167500 / 187500)


def test_labels_from_scores_equals_argmax_ties_included():
    from lecturelib.metrics import labels_from_scores

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 11, 17, 9, generator=g)
    scores[:, 4] = scores[:, 7]                       # exact ties: the first class wins, as in argmax
    scores[0, :, 0, 0] = 1.0                          # all equal: class 0
    assert torch.equal(labels_from_scores(scores), scores.argmax(1))
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        labels_from_scores(scores[0])
