"""Mask AP: hand-made cases and agreement with pycocotools (the COCO reference) to 1e-3."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from lecturelib.mask_ap import COCO_THRESHOLDS, MaskAP, average_precision, mask_ap, mask_iou, semantic_to_instances

pycocotools = pytest.importorskip("pycocotools")
from coco_reference import coco_ap  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402


def box_mask(H, W, x0, y0, x1, y1):
    m = torch.zeros(H, W, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def coco_reference(preds, targets, num_classes):
    """AP per (threshold, class) from pycocotools; NaN where COCO reports -1."""
    images, anns, dets = [], [], []
    for i, (p, t) in enumerate(zip(preds, targets)):
        H, W = t["masks"].shape[-2:]
        images.append({"id": i + 1, "height": H, "width": W})
        for m, c in zip(t["masks"], t["labels"]):
            rle = mask_utils.encode(np.asfortranarray(m.numpy().astype(np.uint8)))
            area = float(mask_utils.area(rle))
            rle["counts"] = rle["counts"].decode()
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c), "segmentation": rle,
                         "area": area, "bbox": list(mask_utils.toBbox(rle)), "iscrowd": 0})
        for m, c, s in zip(p["masks"], p["labels"], p["scores"]):
            rle = mask_utils.encode(np.asfortranarray(m.numpy().astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            dets.append({"image_id": i + 1, "category_id": int(c), "segmentation": rle, "score": float(s)})
    return coco_ap(images, anns, dets, num_classes, "segm")


def random_case(rng, n_images, num_classes, H=24, W=24):
    preds, targets = [], []
    for _ in range(n_images):
        G = int(rng.integers(0, 5))
        gms, gls = [], []
        for _ in range(G):
            x0, y0 = rng.integers(0, W - 4), rng.integers(0, H - 4)
            x1, y1 = x0 + rng.integers(3, W - x0 + 1), y0 + rng.integers(3, H - y0 + 1)
            gms.append(box_mask(H, W, x0, y0, x1, y1) & torch.from_numpy(rng.random((H, W)) < 0.9))
            gls.append(int(rng.integers(1, num_classes)))
        D = int(rng.integers(0, 7))
        pms, pls = [], []
        for _ in range(D):
            if gms and rng.random() < 0.7:              # a perturbed copy of a ground truth
                j = int(rng.integers(len(gms)))
                m = gms[j].clone()
                shift = int(rng.integers(-3, 4))
                m = torch.roll(m, shifts=shift, dims=int(rng.integers(0, 2)))
                lab = gls[j] if rng.random() < 0.8 else int(rng.integers(1, num_classes))
            else:
                x0, y0 = rng.integers(0, W - 4), rng.integers(0, H - 4)
                m = box_mask(H, W, x0, y0, x0 + 6, y0 + 6)
                lab = int(rng.integers(1, num_classes))
            pms.append(m)
            pls.append(lab)
        empty = torch.zeros(0, H, W, dtype=torch.bool)
        targets.append({"masks": torch.stack(gms) if gms else empty, "labels": torch.tensor(gls, dtype=torch.long)})
        preds.append({"masks": torch.stack(pms) if pms else empty, "labels": torch.tensor(pls, dtype=torch.long),
                      "scores": torch.from_numpy(rng.random(D))})
    return preds, targets


def test_mask_iou_hand_computed():
    a = box_mask(4, 4, 0, 0, 2, 2)[None]            # 4 pixels
    b = torch.stack([box_mask(4, 4, 1, 0, 3, 2), box_mask(4, 4, 2, 2, 4, 4), box_mask(4, 4, 0, 0, 2, 2)])
    iou = mask_iou(a, b)
    assert iou.shape == (1, 3)
    assert iou[0].tolist() == pytest.approx([2 / 6, 0.0, 1.0])
    assert mask_iou(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)).item() == 0.0


def test_mask_iou_bad_input():
    with pytest.raises(ValueError, match="sizes differ"):
        mask_iou(torch.zeros(1, 4, 4), torch.zeros(1, 5, 4))
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        mask_iou(torch.zeros(4, 4), torch.zeros(1, 4, 4))


def test_average_precision_hand_computed():
    # 2 ground truths; detections hit, miss, hit: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    # monotone precision: 1 for recall <= 0.5, 2/3 above -> (51 * 1 + 50 * 2/3) / 101
    ap = average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), 2)
    assert ap == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert np.isnan(average_precision(np.zeros(0), np.zeros(0, bool), 0))
    assert average_precision(np.zeros(0), np.zeros(0, bool), 3) == 0.0


def test_perfect_and_empty_predictions():
    t = {"masks": torch.stack([box_mask(8, 8, 0, 0, 4, 4), box_mask(8, 8, 4, 4, 8, 8)]),
         "labels": torch.tensor([1, 2])}
    perfect = {"masks": t["masks"], "labels": t["labels"], "scores": torch.tensor([0.9, 0.8])}
    out = mask_ap([perfect], [t], num_classes=3)
    assert out["ap50"] == pytest.approx(1.0) and out["ap70"] == pytest.approx(1.0) and out["ap"] == pytest.approx(1.0)
    empty = {"masks": torch.zeros(0, 8, 8), "labels": torch.zeros(0, dtype=torch.long), "scores": torch.zeros(0)}
    out = mask_ap([empty], [t], num_classes=3)
    assert out["ap50"] == 0.0
    # an image with no instances adds false positives only
    no_gt = {"masks": torch.zeros(0, 8, 8), "labels": torch.zeros(0, dtype=torch.long)}
    confident = {**perfect, "scores": torch.tensor([0.99, 0.98])}
    out = mask_ap([perfect, confident], [t, no_gt], num_classes=3)
    assert out["ap50"] == pytest.approx(0.5)      # each class: precision 1/2 at every recall
    # no ground truth anywhere: NaN, not an exception
    out = mask_ap([empty], [no_gt], num_classes=3)
    assert np.isnan(out["ap50"])


def test_torchvision_mask_layout_and_bad_input():
    t = {"masks": box_mask(8, 8, 0, 0, 4, 4)[None].to(torch.uint8), "labels": torch.tensor([1])}
    p = {"masks": box_mask(8, 8, 0, 0, 4, 4)[None, None].float() * 0.9, "labels": torch.tensor([1]),
         "scores": torch.tensor([0.5])}
    assert mask_ap([p], [t], 2)["ap50"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one dict per image"):
        mask_ap([p], [t, t], 2)
    with pytest.raises(ValueError, match="check num_classes"):
        mask_ap([{**p, "labels": torch.tensor([5])}], [t], 2)
    with pytest.raises(KeyError, match="masks"):
        mask_ap([{"scores": p["scores"], "labels": p["labels"]}], [t], 2)


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_pycocotools(seed):
    rng = np.random.default_rng(seed)
    num_classes = 4
    preds, targets = random_case(rng, n_images=12, num_classes=num_classes)
    ours = MaskAP(num_classes)
    ours.update(preds, targets)
    out = ours.compute()
    ref = coco_reference(preds, targets, num_classes)
    for k, t in enumerate(COCO_THRESHOLDS):
        np.testing.assert_allclose(out["per_class"][t], ref[k], atol=1e-3, equal_nan=True)
    ref_mean = np.nanmean(ref, axis=1)
    assert out["ap50"] == pytest.approx(ref_mean[0], abs=1e-3)
    assert out["ap70"] == pytest.approx(ref_mean[4], abs=1e-3)
    assert out["ap"] == pytest.approx(np.nanmean(ref_mean), abs=1e-3)


def test_hand_made_case_agrees_with_pycocotools():
    # two touching same-class items; one prediction merges them (IoU < 0.5 with each), one splits correctly
    a, b = box_mask(10, 10, 0, 0, 4, 10), box_mask(10, 10, 4, 0, 8, 10)
    t = {"masks": torch.stack([a, b]), "labels": torch.tensor([1, 1])}
    blob = box_mask(10, 10, 0, 0, 10, 10)        # IoU 0.4 with each item
    merged = {"masks": blob[None], "labels": torch.tensor([1]), "scores": torch.tensor([1.0])}
    split = {"masks": torch.stack([a, b, blob]), "labels": torch.tensor([1, 1, 1]),
             "scores": torch.tensor([0.9, 0.8, 0.3])}
    for p in (merged, split):
        out = mask_ap([p], [t], 2)
        ref = coco_reference([p], [t], 2)
        assert out["ap50"] == pytest.approx(ref[0, 1], abs=1e-3)
    assert mask_ap([merged], [t], 2)["ap50"] == 0.0
    assert mask_ap([split], [t], 2)["ap50"] == pytest.approx(1.0)


def test_semantic_to_instances_merges_touching_items():
    sem = torch.zeros(6, 8, dtype=torch.long)
    sem[1:4, 0:3] = 2
    sem[1:4, 3:6] = 2          # touches the first: one component
    sem[5, 7] = 3
    p = semantic_to_instances(sem, 4)
    assert p["labels"].tolist() == [2, 3]
    assert p["masks"][0].sum() == 18


def test_caps_say_when_they_drop_confident_detections():
    from lecturelib.caps import CapWarning
    from lecturelib.sds import select_detections

    target = {"masks": torch.zeros(1, 8, 8, dtype=torch.bool), "labels": torch.tensor([1])}
    many = {"masks": torch.zeros(5, 8, 8, dtype=torch.bool), "labels": torch.ones(5, dtype=torch.long),
            "scores": torch.tensor([0.9, 0.8, 0.7, 0.6, 0.55])}
    with pytest.warns(CapWarning, match="max_dets=3"):
        MaskAP(2, max_dets=3).update([many], [target])
    many["scores"] = torch.tensor([0.9, 0.8, 0.7, 0.2, 0.1])          # only unconfident ones dropped: silent
    with warnings.catch_warnings():
        warnings.simplefilter("error", CapWarning)
        MaskAP(2, max_dets=3).update([many], [target])
    masks = torch.zeros(4, 8, 8, dtype=torch.bool)
    for k in range(4):
        masks[k, 2 * k:2 * k + 2] = True                                 # four disjoint regions
    probs = torch.tensor([[0.1, 0.9]] * 4)
    with pytest.warns(CapWarning, match="detections=2"):
        out = select_detections(torch.zeros(4, 4), probs, masks[:, None].float(), masks, 0.05, 0.5, 2)
    assert len(out["scores"]) == 2


def test_restrict_to_keeps_the_chosen_items_and_their_detections():
    from lecturelib.mask_ap import restrict_to

    gt = torch.zeros(3, 8, 8, dtype=torch.bool)
    gt[0, 0:4, 0:4] = True
    gt[1, 0:4, 4:8] = True                               # touches item 0
    gt[2, 6:8, 0:8] = True                               # alone
    target = {"masks": gt.to(torch.uint8), "labels": torch.tensor([1, 1, 2])}
    det = torch.zeros(4, 1, 8, 8)
    det[0, 0, 0:4, 0:4] = 1                              # item 0
    det[1, 0, 0:4, 0:8] = 1                              # both touching items as one blob
    det[2, 0, 6:8, 0:8] = 1                              # the lone item: left out
    det[3, 0, 5, 0:8] = 1                                # overlaps nothing: stays a false positive
    pred = {"masks": det, "labels": torch.tensor([1, 1, 2, 1]), "scores": torch.tensor([0.9, 0.8, 0.7, 0.6])}
    p, t = restrict_to(pred, target, torch.tensor([True, True, False]))
    assert t["labels"].tolist() == [1, 1] and t["masks"].shape == (2, 8, 8)
    assert p["scores"].tolist() == pytest.approx([0.9, 0.8, 0.6]) and p["masks"].dtype == torch.bool
    ap = mask_ap([p], [t], 3, thresholds=(0.5,))
    # item 0 found first (precision 1 at recall 0.5); the blob has IoU 0.5 with item 0 (taken) and item 1
    # gets matched at IoU exactly 0.5, so recall reaches 1 at precision 2/2
    assert ap["ap50"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one per instance"):
        restrict_to(pred, target, torch.tensor([True]))
