"""pycocotools' evaluation (the COCO reference) as AP per (threshold, class), shared by the box and mask AP tests."""
from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from lecturelib.mask_ap import COCO_THRESHOLDS


def coco_ap(images: list[dict], anns: list[dict], dets: list[dict], num_classes: int, iou_type: str) -> np.ndarray:
    """float[len(COCO_THRESHOLDS), num_classes]: COCOeval's AP (area 'all', maxDets 100) of ``dets`` against
    ``anns`` with ``iou_type`` "bbox" or "segm"; class 0 (background) and classes COCO reports as -1 are NaN."""
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": c, "name": str(c)} for c in range(1, num_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        res = coco.loadRes(dets) if dets else COCO()
        if not dets:
            res.dataset = {"images": images, "annotations": [], "categories": gt["categories"]}
            res.createIndex()
        ev = COCOeval(coco, res, iou_type)
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][:, :, :, 0, 2]               # (T, R, K) area 'all', maxDets 100
    out = np.full((len(COCO_THRESHOLDS), num_classes), np.nan)
    for k in range(num_classes - 1):
        p = prec[:, :, k]
        ok = (p > -1).all(1)
        out[ok, k + 1] = p[ok].mean(1)
    return out
