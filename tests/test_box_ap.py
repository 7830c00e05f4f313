"""Box AP: hand-made cases and agreement with pycocotools' bbox evaluation (the COCO reference) to 1e-3."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lecturelib.box_ap import BoxAP, box_ap
from lecturelib.mask_ap import COCO_THRESHOLDS
from lecturelib.timing import time_per_image

pytest.importorskip("pycocotools")
from coco_reference import coco_ap  # noqa: E402


def xywh(box):
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def coco_reference(preds, targets, num_classes):
    """AP per (threshold, class) from pycocotools ('bbox'); NaN where COCO reports -1."""
    images, anns, dets = [], [], []
    for i, (p, t) in enumerate(zip(preds, targets)):
        images.append({"id": i + 1, "height": 64, "width": 64})
        for b, c in zip(t["boxes"], t["labels"]):
            bb = xywh(b)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c), "bbox": bb,
                         "area": bb[2] * bb[3], "iscrowd": 0})
        for b, c, s in zip(p["boxes"], p["labels"], p["scores"]):
            dets.append({"image_id": i + 1, "category_id": int(c), "bbox": xywh(b), "score": float(s)})
    return coco_ap(images, anns, dets, num_classes, "bbox")


def random_case(rng, n_images, num_classes):
    """Random ground truth (some images without any), detections near it or anywhere, tied scores included."""
    preds, targets = [], []
    for _ in range(n_images):
        G = int(rng.integers(0, 5))
        xy = rng.uniform(0, 48, (G, 2))
        gt = np.concatenate([xy, xy + rng.uniform(4, 16, (G, 2))], 1)
        gl = rng.integers(1, num_classes, G)
        boxes, labels = [], []
        for _ in range(int(rng.integers(0, 7))):
            if G and rng.random() < 0.7:
                j = int(rng.integers(G))
                boxes.append(gt[j] + rng.normal(0, 2.0, 4))
                labels.append(gl[j] if rng.random() < 0.85 else int(rng.integers(1, num_classes)))
            else:
                x, y = rng.uniform(0, 48, 2)
                boxes.append([x, y, x + rng.uniform(3, 16), y + rng.uniform(3, 16)])
                labels.append(int(rng.integers(1, num_classes)))
        b = np.array(boxes, np.float32).reshape(-1, 4)
        b = np.concatenate([np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:])], 1)
        scores = np.round(rng.random(len(b)), 1)                  # one decimal: ties between images
        preds.append({"boxes": torch.from_numpy(b), "labels": torch.tensor(labels, dtype=torch.int64).reshape(-1),
                      "scores": torch.from_numpy(scores).float()})
        targets.append({"boxes": torch.from_numpy(gt.astype(np.float32)).reshape(-1, 4),
                        "labels": torch.from_numpy(gl).long()})
    return preds, targets


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_pycocotools(seed):
    rng = np.random.default_rng(seed)
    preds, targets = random_case(rng, n_images=12, num_classes=4)
    out = box_ap(preds, targets, 4)
    ref = coco_reference(preds, targets, 4)
    for k, t in enumerate(COCO_THRESHOLDS):
        np.testing.assert_allclose(out["per_class"][t], ref[k], atol=1e-3, equal_nan=True)
    ref_mean = np.nanmean(ref, axis=1)
    assert out["ap50"] == pytest.approx(ref_mean[0], abs=1e-3)
    assert out["ap75"] == pytest.approx(ref_mean[5], abs=1e-3)
    assert out["ap"] == pytest.approx(np.nanmean(ref_mean), abs=1e-3)


def test_hand_made_cases():
    t = {"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([1, 2])}
    exact = {"boxes": t["boxes"].clone(), "labels": t["labels"].clone(), "scores": torch.tensor([0.9, 0.8])}
    assert box_ap([exact], [t], 3)["ap"] == pytest.approx(1.0)
    # shifted by 3 px: IoU 49/151 < 0.5 for the 10-px box -> a miss at every threshold
    shifted = {**exact, "boxes": exact["boxes"] + 3}
    assert box_ap([shifted], [t], 3)["ap50"] == 0.0
    # right box, wrong class: a miss; a duplicate of a hit: a false positive ranked below it (AP stays 1)
    wrong = {**exact, "labels": torch.tensor([2, 1])}
    assert box_ap([wrong], [t], 3)["ap50"] == 0.0
    dup = {"boxes": torch.cat([exact["boxes"], exact["boxes"][:1]]), "labels": torch.tensor([1, 2, 1]),
           "scores": torch.tensor([0.9, 0.8, 0.1])}
    assert box_ap([dup], [t], 3)["ap50"] == pytest.approx(1.0)
    # an image without objects: its detections are false positives
    empty_t = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    fp = {"boxes": torch.tensor([[1.0, 1, 5, 5]]), "labels": torch.tensor([1]), "scores": torch.tensor([0.95])}
    out = box_ap([exact, fp], [t, empty_t], 3)
    assert 0.0 < out["per_class"][0.5][1] < 1.0 and out["per_class"][0.5][2] == pytest.approx(1.0)
    ref = coco_reference([exact, fp], [t, empty_t], 3)
    assert out["per_class"][0.5][1] == pytest.approx(ref[0, 1], abs=1e-3)


def test_accumulates_like_one_call():
    rng = np.random.default_rng(9)
    preds, targets = random_case(rng, n_images=8, num_classes=3)
    m = BoxAP(3)
    for p, t in zip(preds, targets):
        m.update([p], [t])
    assert m.compute()["ap"] == pytest.approx(box_ap(preds, targets, 3)["ap"])


def test_bad_input():
    t = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1])}
    p = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1]), "scores": torch.tensor([0.5])}
    with pytest.raises(ValueError, match="x1 < x0"):
        box_ap([{**p, "boxes": torch.tensor([[10.0, 0, 0, 10]])}], [t], 2)
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        box_ap([{**p, "boxes": torch.zeros(1, 1, 4)}], [t], 2)
    with pytest.raises(ValueError, match="one dict per image"):
        box_ap([p], [t, t], 2)
    with pytest.raises(ValueError, match="check num_classes"):
        box_ap([{**p, "labels": torch.tensor([5])}], [t], 2)
    with pytest.raises(ValueError, match="must agree"):
        box_ap([{**p, "scores": torch.tensor([0.5, 0.4])}], [t], 2)
    with pytest.raises(KeyError, match="boxes"):
        box_ap([{"scores": p["scores"], "labels": p["labels"]}], [t], 2)


def test_time_per_image_is_a_median_in_ms():
    calls = []
    ms = time_per_image(lambda im: calls.append(im), [torch.zeros(3, 4, 4)] * 3, repeats=2, warmup=2)
    assert len(calls) == 2 + 6 and 0 <= ms < 50
    with pytest.raises(ValueError, match="at least one image"):
        time_per_image(lambda im: None, [])
