"""Box average precision: the detection metric of PASCAL VOC and COCO, hits judged by box IoU.

A predicted box (class, score) is a true positive when it overlaps a not-yet-matched ground-truth box
of the same class with IoU >= t (``torchvision.ops.box_iou``). Matching and the AP itself are those of
:mod:`lecturelib.mask_ap` (the COCO protocol, so the numbers agree with pycocotools' ``bbox`` evaluation):

- per image and class, detections sorted by score (at most ``max_dets``) are matched greedily, each to
  the unmatched ground truth with the highest IoU >= t;
- per class, all detections of all images are sorted by score; precision is made monotone and read at
  101 recall points (101-point interpolated AP); classes without ground truth are left out of the mean.

``ap50``: AP at IoU 0.5, PASCAL VOC's criterion (Everingham et al., IJCV 2010), the "mAP" of the R-CNN,
Fast / Faster R-CNN and YOLO papers' VOC tables. VOC 2007's official code reads precision at 11 recall
points instead of 101 and lets a detection whose best ground truth is taken count as a false positive
rather than try the next one; both change AP by a little, never its ranking of good and bad detectors.
``ap``: COCO's AP@[.5:.95], the mean over t = 0.50, 0.55, ..., 0.95 (Lin et al., ECCV 2014).

Boxes are pixel-edge float (x0, y0, x1, y1): a mask whose columns run 3..7 has x0 = 3, x1 = 8.
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

from .mask_ap import MaskAP


def check_boxes(boxes, what: str) -> torch.Tensor:
    """``boxes`` as float64[N, 4] on the CPU; ValueError naming ``what`` when not [N, 4] or when x1 < x0 or y1 < y0."""
    b = torch.as_tensor(boxes.detach().cpu() if isinstance(boxes, torch.Tensor) else np.asarray(boxes))
    if b.numel() == 0:
        return torch.zeros(0, 4, dtype=torch.float64)
    if b.dim() != 2 or b.shape[-1] != 4:
        raise ValueError(f"{what} must be boxes [N, 4] (x0, y0, x1, y1), got shape {tuple(b.shape)}; "
                         "use boxes[None] for a single box")
    b = b.double()
    bad = ((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])).nonzero().flatten()
    if len(bad):
        k = int(bad[0])
        raise ValueError(f"{what}[{k}] = {b[k].tolist()} has x1 < x0 or y1 < y0; boxes are (x0, y0, x1, y1), "
                         "not (x, y, w, h): convert with torchvision.ops.box_convert(boxes, 'xywh', 'xyxy')")
    return b


class BoxAP(MaskAP):
    """Accumulates predictions and ground truth image by image, then computes box AP.

    >>> ap = BoxAP(num_classes=11)
    >>> ap.update(preds, targets)      # lists of dicts, torchvision detection format
    >>> ap.compute()["ap50"], ap.compute()["ap"]

    ``preds[i]``: ``boxes`` float[D, 4], ``scores`` float[D], ``labels`` int[D]. ``targets[i]``: ``boxes``
    float[G, 4], ``labels`` int[G]. Label 0 (background) is never scored. At most ``max_dets`` detections per
    image and class are scored, the best first (a :class:`lecturelib.caps.CapWarning` says when one scored
    >= 0.5 is left out). ``compute()`` is :meth:`lecturelib.mask_ap.MaskAP.compute`: ``ap50``, ``ap75``,
    ``ap`` (mean over the thresholds), ``per_class``. Raises ValueError for lists of different lengths,
    boxes that are not [N, 4] or have x1 < x0, counts that disagree and labels outside 0..num_classes-1.
    """

    def update(self, preds: list[dict], targets: list[dict]) -> None:
        if len(preds) != len(targets):
            raise ValueError(f"got {len(preds)} predictions for {len(targets)} targets; pass one dict per image")
        for i, (p, t) in enumerate(zip(preds, targets)):
            for d, what, keys in ((p, f"preds[{i}]", ("boxes", "scores", "labels")), (t, f"targets[{i}]",
                                                                                        ("boxes", "labels"))):
                missing = [k for k in keys if k not in d]
                if missing:
                    raise KeyError(f"{what} has no {missing} (keys: {sorted(d)}); pass torchvision-style dicts")
            pb, gb = check_boxes(p["boxes"], f"preds[{i}]['boxes']"), check_boxes(t["boxes"], f"targets[{i}]['boxes']")
            ps = torch.as_tensor(p["scores"]).detach().cpu().double().reshape(-1).numpy()
            pl = torch.as_tensor(p["labels"]).detach().cpu().long().reshape(-1).numpy()
            gl = torch.as_tensor(t["labels"]).detach().cpu().long().reshape(-1).numpy()
            if not (len(pb) == len(ps) == len(pl)):
                raise ValueError(f"preds[{i}]: {len(pb)} boxes, {len(ps)} scores, {len(pl)} labels; they must agree")
            if len(gb) != len(gl):
                raise ValueError(f"targets[{i}]: {len(gb)} boxes but {len(gl)} labels")
            self._add_image(i, box_iou(pb, gb).numpy() if len(pb) and len(gb) else np.zeros((len(pb), len(gb))),
                            ps, pl, gl)


def box_ap(preds: list[dict], targets: list[dict], num_classes: int, **kwargs) -> dict:
    """One-shot :class:`BoxAP` over lists of per-image predictions and targets: ``ap50``, ``ap75``, ``ap``, ..."""
    m = BoxAP(num_classes, **kwargs)
    m.update(preds, targets)
    return m.compute()
