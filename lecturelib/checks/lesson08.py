"""Self-checks for lesson 08 (instance segmentation): which predictions are hits at two IoU thresholds (predict),
mask IoU and anchor decoding (implement), and region NMS switched off in a shipped cascade (interpret)."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch

from . import CheckFailed, expect_close, refuse_reference, run_check

REFERENCES = {"my_mask_iou": "lecturelib.mask_ap.mask_iou", "my_decode_boxes": "lecturelib.cascade.decode_boxes"}


# ----------------------------------------------------------------------------- exercise 1 (predict)
def hits_at_thresholds(student, iou) -> bool:
    """Check ``student() -> (hits at IoU 0.5, hits at IoU 0.7)`` for detections whose mask IoU with the ground
    truths is ``iou`` float[D, G] (rows sorted by descending score, one class), against COCO's greedy matching
    (:func:`lecturelib.mask_ap.match_image`)."""
    from ..mask_ap import match_image

    iou = np.asarray(iou, dtype=np.float64)

    def test():
        got = student()
        if not (isinstance(got, (tuple, list)) and len(got) == 2):
            raise CheckFailed(f"return two whole numbers (hits at 0.5, hits at 0.7), got {got!r}.")
        for threshold, g in zip((0.5, 0.7), got):
            want = int(match_image(iou, threshold).sum())
            if not isinstance(g, (int, np.integer)):
                raise CheckFailed(f"the hits at IoU {threshold} must be a whole number, got {g!r}.")
            if g > want:
                raise CheckFailed(f"at IoU {threshold} your count is too high: some detection you counted cannot "
                                  "claim a ground truth.")
            if g < want:
                raise CheckFailed(f"at IoU {threshold} your count is too low: a detection you rejected does claim an "
                                  "unclaimed ground truth.")

    return run_check("hits at mask IoU 0.5 and 0.7", test,
                     "Hint: go down the detections by score; each takes the best ground truth not yet taken whose IoU "
                     "reaches the threshold, and a ground truth can be taken only once (a duplicate is a miss).")


# ----------------------------------------------------------------------------- exercises 2 and 3 (implement)
def _mask_cases() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    a = torch.zeros(2, 6, 6, dtype=torch.bool)
    a[0, 0:3, 0:3] = True
    a[1, 2:6, 1:5] = True
    b = torch.zeros(3, 6, 6, dtype=torch.bool)
    b[0, 0:3, 0:3] = True                     # identical to a[0]
    b[1, 1:4, 1:4] = True                     # partial overlap
    # b[2] stays empty: IoU 0 with everything
    rand_a = torch.rand(4, 9, 7, generator=g) > 0.5
    rand_b = torch.rand(5, 9, 7, generator=g) > 0.6
    empty = torch.zeros(2, 5, 3, dtype=torch.bool)
    return [("hand-made squares, one mask empty", a, b), ("random masks on a 9 x 7 grid", rand_a, rand_b),
            ("a mask with itself", rand_a[:1], rand_a[:1]), ("two empty masks (IoU 0, not NaN)", empty, empty)]


def mask_iou(student) -> bool:
    """Check ``student(a bool[N, H, W], b bool[M, H, W]) -> float[N, M]`` against ``lecturelib.mask_ap.mask_iou``,
    on cases the notebook does not show (empty masks, odd sizes)."""
    from ..mask_ap import mask_iou as reference

    def test():
        refuse_reference(student, reference)
        for what, a, b in _mask_cases():
            got = student(a, b)
            if not isinstance(got, torch.Tensor):
                raise CheckFailed(f"{what}: return a tensor, got {type(got).__name__}.")
            expect_close(got, reference(a, b), what=f"{what} (a: {tuple(a.shape)}, b: {tuple(b.shape)})")

    return run_check("mask IoU", test, "Hint: IoU = |a ∩ b| / |a ∪ b|, and |a ∪ b| = |a| + |b| − |a ∩ b|; all pairs "
                     "at once is a product of the flattened masks; decide what an empty union gives.")


def decode_boxes(student) -> bool:
    """Check ``student(anchors [N, 4], deltas [N, 4]) -> boxes [N, 4]`` against ``lecturelib.cascade.decode_boxes``,
    on zero offsets, random offsets of odd-sized anchors and an empty batch."""
    from torchvision.models.detection._utils import BoxCoder

    from ..cascade import decode_boxes as reference

    def test():
        refuse_reference(student, reference, BoxCoder.decode_single, BoxCoder.decode)
        anchors = torch.tensor([[0.0, 0.0, 10.0, 20.0], [8.0, 8.0, 24.0, 16.0], [30.0, 2.0, 62.0, 34.0]])
        expect_close(student(anchors, torch.zeros_like(anchors)), anchors,
                     what="zero offsets (must give the anchors back)")
        g = torch.Generator().manual_seed(11)
        xy = torch.rand(6, 2, generator=g) * 50
        odd = torch.cat([xy, xy + 3 + torch.rand(6, 2, generator=g) * 17], 1)
        deltas = torch.randn(6, 4, generator=g) * 0.4
        expect_close(student(odd, deltas), reference(odd, deltas), what="random offsets of odd-sized anchors",
                     atol=1e-4)
        got = student(odd[:0], deltas[:0])
        expect_close(got, odd[:0], what="no anchors (N = 0)")

    return run_check("anchor offset decoding", test,
                     "Hint: the offsets act on the centre and the size, not on the corners: dx is a fraction of the "
                     "anchor's width, dw a log of a ratio of widths; convert to corners only at the end.")


# ----------------------------------------------------------------------------- exercise 4 (interpret)
def _measure(model, scenes) -> dict:
    """Detections per scene (all, and scored >= 0.5) and AP^r@0.5 of ``model`` on ``scenes`` [(image, target)]."""
    from ..mask_ap import mask_ap
    from ..scenes import NUM_CLASSES

    preds, n_all, n_conf = [], [], []
    with torch.no_grad():
        for image, _ in scenes:
            p = model([image])[0]
            masks = p["masks"][:, 0] if p["masks"].dim() == 4 else p["masks"]
            preds.append({"masks": masks > 0.5, "labels": p["labels"], "scores": p["scores"].float()})
            n_all.append(len(p["scores"]))
            n_conf.append(int((p["scores"] >= 0.5).sum()))
    ap = mask_ap(preds, [t for _, t in scenes], NUM_CLASSES, thresholds=(0.5,))["ap50"]
    scores = [p["scores"].sort(descending=True).values for p in preds]
    return {"detections": float(np.mean(n_all)), "confident": float(np.mean(n_conf)), "ap50": float(ap),
            "scores": scores}


def without_nms(student_change, model, scenes) -> dict | None:
    """Apply ``student_change(model)`` (switch off region NMS) to a copy of the cascade ``model`` and measure both
    on ``scenes``: prints the table and returns {"with": {...}, "without": {...}} (detections per scene, scored
    >= 0.5 per scene, AP^r@0.5), or None when the change failed."""
    measured: dict = {}

    def test():
        changed = copy.deepcopy(model).eval()
        student_change(changed)
        if type(changed.config) is not type(model.config):
            raise CheckFailed(f"model.config became a {type(changed.config).__name__}: keep it a "
                              f"{type(model.config).__name__} (make the new one with dataclasses.replace).")
        nms = changed.config.mask_nms
        if isinstance(nms, bool) or not isinstance(nms, (int, float)) or nms != nms:
            raise CheckFailed(f"mask_nms must be a number (a mask IoU threshold), got {nms!r}.")
        others = [f.name for f in dataclasses.fields(model.config) if f.name != "mask_nms"
                  and getattr(changed.config, f.name) != getattr(model.config, f.name)]
        if others:
            raise CheckFailed(f"you also changed {', '.join(others)}: change only what region NMS reads, or the table "
                              "measures something else.")
        if changed.config.mask_nms != model.config.mask_nms and changed.config.mask_nms < 1:
            raise CheckFailed(f"mask_nms={changed.config.mask_nms} still suppresses a mask whose IoU with a better one "
                              "exceeds it: that loosens region NMS, it does not switch it off.")
        base, after = _measure(model, scenes), _measure(changed, scenes)
        print(f"{'':<18}{'detections/scene':>18}{'scored >= 0.5':>15}{'AP^r@0.5':>10}")
        for name, m in (("with region NMS", base), ("without", after)):
            print(f"{name:<18}{m['detections']:>18.1f}{m['confident']:>15.1f}{m['ap50']:>10.3f}")
        if after["detections"] <= base["detections"]:
            raise CheckFailed("the changed model returns no more detections than the shipped one: region NMS still "
                              "removes the overlapping masks.")
        reference = copy.deepcopy(model).eval()                # region NMS off and nothing else changed
        reference.config = dataclasses.replace(model.config, mask_nms=1.0)
        expected = _measure(reference, scenes)["scores"]
        if any(len(a) != len(b) or not torch.allclose(a, b, atol=1e-5) for a, b in zip(after["scores"], expected)):
            raise CheckFailed("your model's detections differ from the shipped cascade's with only region NMS switched "
                              "off: change nothing but the NMS threshold the cascade reads.")
        measured.update({"with": {k: v for k, v in base.items() if k != "scores"},
                         "without": {k: v for k, v in after.items() if k != "scores"}})

    ok = run_check(f"region NMS switched off ({len(scenes)} test scenes)", test,
                   "Hint: the cascade reads its region-NMS threshold from model.config (a frozen dataclass: make a "
                   "new one with dataclasses.replace); a mask is suppressed when its IoU with a better one exceeds it.")
    return measured if ok else None


def nms_answer(student, measured) -> bool:
    """Check ``student(measured) -> bool``: does AP^r@0.5 fall without region NMS, in the learner's own numbers?"""

    def test():
        if not measured:
            raise CheckFailed("no measurement: run the ablation above first (its check must pass).")
        got = student(measured)
        if not isinstance(got, (bool, np.bool_)):
            raise CheckFailed(f"return True or False, got {got!r}.")
        want = measured["without"]["ap50"] < measured["with"]["ap50"]
        if bool(got) != want:
            raise CheckFailed("that is not what your table says.")

    return run_check("does AP^r@0.5 fall without region NMS?", test,
                     "Hint: compare the AP^r@0.5 column of the two rows; a duplicate of a found item is a false "
                     "positive ranked among the hits.")
