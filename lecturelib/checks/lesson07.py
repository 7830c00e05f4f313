"""Self-checks for lesson 07 (object detection).

- ``nms_survivors`` (predict): which boxes of a drawn example survive non-maximum suppression;
- ``box_iou`` and ``nms`` (implement): the IoU of every pair of boxes, and class-wise greedy NMS;
- ``without_nms`` and ``answer_without_nms`` (interpret): a shipped detector with its final NMS turned off,
  evaluated on a few test scenes, and what happens to its AP and why.

Boxes are pixel-edge float (x0, y0, x1, y1). The truth always comes from torchvision (``box_iou``, ``nms``) or from
the detector itself, never from a stored answer.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch

from . import CheckFailed, expect_close, refuse_reference, run_check

REFERENCES = {"my_box_iou": "torchvision.ops.box_iou", "my_nms": "torchvision.ops.batched_nms"}

NMS_SETTINGS = (0.3, 0.5, 0.7)                # the NMS thresholds the ablation compares with "off"
UNCHANGED = 0.01                              # an AP change smaller than this counts as "unchanged"
CHANGES = ("falls", "rises", "unchanged")
CAUSES = ("duplicates", "lost objects")


def _call(case: str, fn, *args):
    """``fn(*args)``; an exception other than NotImplementedError becomes a CheckFailed naming ``case``."""
    try:
        return fn(*args)
    except (NotImplementedError, CheckFailed):
        raise
    except Exception as exc:
        raise CheckFailed(f"case '{case}': your code raised {type(exc).__name__}: {exc}.") from None


def _as_index_list(got, what: str) -> list[int]:
    wrong = f"{what}: return a list (or a 1-D tensor) of box indices, got {type(got).__name__}."
    if isinstance(got, torch.Tensor):
        got = got.flatten().tolist()
    if isinstance(got, (str, bytes, dict)) or got is None:
        raise CheckFailed(wrong)
    try:
        return [int(v) for v in got]
    except (TypeError, ValueError):
        raise CheckFailed(wrong) from None


# ----------------------------------------------------------------------------- predict: NMS by hand
def nms_survivors(student, boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float = 0.5) -> bool:
    """Check ``student() -> indices``: the boxes (float[N, 4]) that survive NMS at ``iou_threshold`` (all of one
    class), in any order. The truth is ``torchvision.ops.nms``; a wrong answer is told how many boxes are wrong
    in each direction, not which."""
    from torchvision.ops import box_iou as iou_of
    from torchvision.ops import nms as reference

    def test():
        got = _as_index_list(student(), "your prediction")
        bad = sorted(k for k in got if not 0 <= k < len(boxes))
        if bad:
            raise CheckFailed(f"your prediction names boxes {bad}; the boxes are numbered 0 to {len(boxes) - 1}.")
        if len(set(got)) != len(got):
            raise CheckFailed("your prediction names a box twice; list each surviving box once.")
        truth = set(reference(boxes, scores, iou_threshold).tolist())
        extra, missing = set(got) - truth, truth - set(got)
        if not extra and not missing:
            return
        parts = []
        if extra:
            parts.append(f"{len(extra)} of the boxes you keep {'is' if len(extra) == 1 else 'are'} suppressed")
        if missing:
            parts.append(f"{len(missing)} box{'' if len(missing) == 1 else 'es'} you drop survive"
                         f"{'s' if len(missing) == 1 else ''}")
        amount = "too many" if len(got) > len(truth) else "too few" if len(got) < len(truth) else "the right number"
        iou = iou_of(boxes, boxes)
        inside = any(iou[i, j] <= iou_threshold and _contains(boxes[i], boxes[j]) for i in range(len(boxes))
                     for j in range(len(boxes)) if i != j)
        hint = ("visit the boxes by decreasing score, not by number; a box that was suppressed suppresses nothing "
                "itself")
        hint += "; the IoU of a small box inside a large one is only its area over the large one's" if inside else ""
        raise CheckFailed(f"you keep {len(got)} boxes, {amount}: {' and '.join(parts)}. Redo it: {hint}.")

    return run_check(f"which boxes survive NMS at {iou_threshold}", test,
                     "Hint: the IoU is intersection / union, compare it with the threshold (more than it: dropped).")


def _contains(outer: torch.Tensor, inner: torch.Tensor) -> bool:
    return bool(outer[0] <= inner[0] and outer[1] <= inner[1] and outer[2] >= inner[2] and outer[3] >= inner[3])


# ----------------------------------------------------------------------------- implement: box IoU
def _box_iou_cases() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(11)
    xy = torch.rand(7, 2, generator=g) * 20
    rand = torch.cat([xy, xy + 0.5 + torch.rand(7, 2, generator=g) * 10], 1)            # non-integer corners
    square = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    return [
        ("identical boxes", square, square.clone()),
        ("boxes that touch along an edge", square, torch.tensor([[4.0, 0.0, 8.0, 4.0], [0.0, 4.0, 4.0, 9.0]])),
        ("a box inside another", square, torch.tensor([[1.0, 1.0, 3.0, 3.0]])),
        ("disjoint boxes", square, torch.tensor([[10.0, 10.0, 12.0, 13.0]])),
        ("a zero-area box (x0 == x1) against others", torch.tensor([[2.0, 0.0, 2.0, 4.0]]), rand[:3]),
        ("no boxes in a (a is [0, 4])", torch.zeros(0, 4), rand[:3]),
        ("no boxes in b (b is [0, 4])", rand[:2], torch.zeros(0, 4)),
        ("3 x 5 boxes with fractional corners (every pair)", rand[:3], rand[2:]),
    ]


def box_iou(student) -> bool:
    """Check ``student(a float[N, 4], b float[M, 4]) -> float[N, M]`` against ``torchvision.ops.box_iou`` on cases
    the exercise does not show: identical, touching, nested, disjoint and zero-area boxes, empty sets, N != M."""
    from torchvision.ops import box_iou as reference

    def test():
        refuse_reference(student, reference)
        for name, a, b in _box_iou_cases():
            got = _call(name, student, a.clone(), b.clone())
            if not isinstance(got, torch.Tensor):
                raise CheckFailed(f"case '{name}': return a tensor, got {type(got).__name__}.")
            expect_close(got, reference(a, b), what=f"case '{name}' ({len(a)} x {len(b)} boxes)")

    return run_check("box IoU", test, "Hint: the intersection of two boxes is itself a box, from the larger of the "
                     "two left (top) edges to the smaller of the two right (bottom) edges, and empty when that "
                     "gives a negative side; the union is the two areas minus the intersection. All pairs at once: "
                     "broadcast a, with a new axis, against b.")


# ----------------------------------------------------------------------------- implement: class-wise NMS
def _nms_problems(keep: list[int], boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                  threshold: float) -> str | None:
    """Why ``keep`` is not greedy class-wise NMS under any order of tied scores (None if it is).

    Greedy NMS (for some order of equal scores) is exactly a list that (a) runs by non-increasing score, (b) holds
    no two boxes of one class overlapping by IoU > threshold, and (c) drops only boxes that a kept box of their
    class, scored at least as high, overlaps by IoU > threshold.
    """
    from torchvision.ops import box_iou as iou_of

    n = len(boxes)
    out_of_range = [k for k in keep if not 0 <= k < n]
    if out_of_range:
        return f"you keep index {out_of_range[0]}, but there are {n} boxes"
    if len(set(keep)) != len(keep):
        twice = next(k for k in keep if keep.count(k) > 1)
        return f"you keep box {twice} twice"
    for a, b in zip(keep, keep[1:]):
        if scores[b] > scores[a]:
            return (f"box {b} (score {scores[b]:.2f}) comes after box {a} (score {scores[a]:.2f}); return the kept "
                    "boxes highest score first")
    iou = iou_of(boxes, boxes) if n else torch.zeros(0, 0)
    same = labels[:, None] == labels[None, :]
    for i, a in enumerate(keep):
        for b in keep[i + 1:]:
            if same[a, b] and iou[a, b] > threshold:
                return (f"you keep boxes {a} and {b} of the same class although they overlap by IoU "
                        f"{iou[a, b]:.2f} > {threshold}")
    kept = torch.zeros(n, dtype=torch.bool)
    kept[keep] = True
    for j in range(n):
        if kept[j]:
            continue
        killers = kept & same[j] & (scores >= scores[j]) & (iou[j] > threshold)
        if not killers.any():
            other = kept & ~same[j] & (iou[j] > threshold)
            why = (f" (box {int(other.nonzero()[0])} overlaps it, but is of another class: NMS compares boxes of "
                   "one class only)" if other.any() else "")
            return (f"you drop box {j} (class {int(labels[j])}, score {scores[j]:.2f}), but no kept box of its "
                    f"class scored at least as high overlaps it by more than {threshold}{why}")
    return None


def _nms_cases() -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, float]]:
    g = torch.Generator().manual_seed(5)
    xy = torch.rand(40, 2, generator=g) * 40
    rand_boxes = torch.cat([xy, xy + 5 + torch.rand(40, 2, generator=g) * 15], 1)
    rand_scores = torch.randperm(40, generator=g).float() / 40 + 0.01
    rand_labels = torch.randint(1, 6, (40,), generator=g)
    one = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    chain = torch.tensor([[0.0, 0.0, 10.0, 10.0], [3.0, 0.0, 13.0, 10.0], [6.0, 0.0, 16.0, 10.0]])
    mixed = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [0.0, 1.0, 10.0, 11.0],
                          [5.0, 5.0, 5.0, 9.0], [2.0, 2.0, 8.0, 8.0]])                    # box 3 has zero area
    cases = [
        ("a chain of three boxes, one class", chain, torch.tensor([0.9, 0.8, 0.7]), torch.ones(3, dtype=torch.long),
         0.5),
        ("no boxes at all", torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5),
        ("one box", one, torch.tensor([0.3]), torch.ones(1, dtype=torch.long), 0.5),
        ("the same box in four classes", one.repeat(4, 1), torch.tensor([0.2, 0.9, 0.5, 0.7]),
         torch.tensor([1, 2, 3, 4]), 0.5),
        ("two identical boxes with the same score (a tie)", one.repeat(2, 1), torch.tensor([0.6, 0.6]),
         torch.ones(2, dtype=torch.long), 0.5),
        ("a chain of three boxes with equal scores (ties)", chain, torch.full((3,), 0.5),
         torch.ones(3, dtype=torch.long), 0.5),
        ("a zero-area box among overlapping boxes of two classes", mixed, torch.tensor([0.9, 0.8, 0.85, 0.95, 0.7]),
         torch.tensor([1, 1, 2, 1, 2]), 0.5),
        ("threshold 0 (any overlap suppresses)", chain, torch.tensor([0.9, 0.8, 0.7]), torch.ones(3, dtype=torch.long),
         0.0),
        ("threshold 1 (nothing is suppressed)", one.repeat(3, 1), torch.tensor([0.9, 0.8, 0.7]),
         torch.ones(3, dtype=torch.long), 1.0),
        ("40 random boxes of 5 classes at 0.4", rand_boxes, rand_scores, rand_labels, 0.4),
        ("40 random boxes of 5 classes at 0.1", rand_boxes, rand_scores, rand_labels, 0.1),
        ("40 random boxes, all of one class, at 0.5", rand_boxes, rand_scores, torch.ones(40, dtype=torch.long), 0.5),
    ]
    return cases


def nms(student) -> bool:
    """Check ``student(boxes float[N, 4], scores float[N], labels int64[N], iou_threshold) -> kept indices``,
    highest score first: greedy NMS done class by class (``torchvision.ops.batched_nms``), on cases the exercise
    does not show: empty input, ties, identical and zero-area boxes, many classes, thresholds 0 and 1. With tied
    scores any order of the ties is accepted."""
    from torchvision.ops import batched_nms
    from torchvision.ops import nms as plain_nms

    def test():
        refuse_reference(student, batched_nms, plain_nms)
        for name, boxes, scores, labels, t in _nms_cases():
            got = _as_index_list(_call(name, student, boxes.clone(), scores.clone(), labels.clone(), t),
                                 f"case '{name}'")
            problem = _nms_problems(got, boxes, scores, labels, t)
            if problem:
                ties = len(scores.unique()) < len(scores)
                want = "" if ties else f" (expected {batched_nms(boxes, scores, labels, t).tolist()}, got {got})"
                raise CheckFailed(f"case '{name}' ({len(boxes)} boxes, IoU threshold {t}): {problem}{want}.")

    return run_check("class-wise non-maximum suppression", test,
                     "Hint: visit the boxes by decreasing score; keep a box unless an already kept box of the same "
                     "class overlaps it by IoU > iou_threshold (a dropped box removes nothing).")


# ----------------------------------------------------------------------------- interpret: no NMS
def detection_counts(preds: list[dict], targets: list[dict], iou_threshold: float = 0.5) -> tuple[int, int]:
    """(true positives, false positives) of detections against ground truth at ``iou_threshold``, matched the way
    box AP matches them (per image and class, by decreasing score, :func:`lecturelib.mask_ap.match_image`)."""
    from torchvision.ops import box_iou as iou_of

    from ..mask_ap import match_image

    tp = fp = 0
    for p, t in zip(preds, targets):
        for c in p["labels"].unique().tolist():
            mine = p["labels"] == c
            order = p["scores"][mine].argsort(descending=True)
            boxes, truth = p["boxes"][mine][order], t["boxes"][t["labels"] == c]
            hits = match_image(iou_of(boxes, truth).numpy() if len(truth) else np.zeros((len(boxes), 0)),
                               iou_threshold)
            tp, fp = tp + int(hits.sum()), fp + int((~hits).sum())
    return tp, fp


def _score(preds: list[dict], targets: list[dict], num_classes: int) -> dict:
    from ..box_ap import box_ap

    result = box_ap(preds, targets, num_classes)
    found, false_pos = detection_counts(preds, targets)
    return {"boxes": sum(len(p["boxes"]) for p in preds) / len(preds), "found": found,
            "objects": sum(len(t["boxes"]) for t in targets), "false_pos": false_pos / len(preds),
            "ap50": float(result["ap50"]), "ap75": float(result["ap75"])}


def _with_nms(model, threshold: float):
    changed = copy.copy(model)
    changed.config = dataclasses.replace(model.config, nms=threshold)
    return changed


def without_nms(student, model, images: list, targets: list[dict]) -> dict | None:
    """The ablation: ``student(model)`` must return the detector with its final class-wise NMS turned off (it gets a
    copy; the notebook's model is not changed). Evaluates the detector on ``images`` / ``targets`` with NMS at
    each of :data:`NMS_SETTINGS` and with the student's change, prints the table and returns it:
    ``{"nms 0.3": {...}, "nms 0.5": ..., "nms 0.7": ..., "no nms": ...}``, each with ``boxes`` (per image),
    ``found`` (objects hit at IoU 0.5, of ``objects``), ``false_pos`` (per image, at IoU 0.5), ``ap50``, ``ap75``.
    Returns None when the change is missing or is not "NMS off"."""
    measured: dict = {}
    num_classes = model.config.num_classes

    def predict(m):
        with torch.no_grad():
            return m.predict(images)

    def test():
        changed = student(copy.deepcopy(model))
        if changed is None or not hasattr(changed, "predict"):
            raise CheckFailed(f"return the changed detector, got {type(changed).__name__}.")
        mine, off = predict(changed), predict(_with_nms(model, 1.0))
        for i, (p, q) in enumerate(zip(mine, off)):
            if len(p["boxes"]) != len(q["boxes"]) or not torch.allclose(p["boxes"], q["boxes"]):
                raise CheckFailed(f"on scene {i} your detector returns {len(p['boxes'])} boxes; with its NMS off "
                                  f"(and nothing else changed) it returns {len(q['boxes'])}.")
        for t in NMS_SETTINGS:
            measured[f"nms {t}"] = _score(predict(_with_nms(model, t)), targets, num_classes)
        measured["no nms"] = _score(mine, targets, num_classes)
        objects = measured["no nms"]["objects"]
        print(f"{type(model).__name__} on {len(images)} test scenes ({objects} objects); found and false positives "
              "at IoU 0.5")
        print(f"{'final NMS':<12}{'boxes/image':>12}{'found':>7}{'false pos/image':>16}{'AP@0.5':>8}{'AP@0.75':>9}")
        for name, r in measured.items():
            label = name + (" (recipe)" if name == f"nms {model.config.nms}" else "")
            print(f"{label:<16}{r['boxes']:>8.1f}{r['found']:>7}{r['false_pos']:>16.1f}{r['ap50']:>8.3f}"
                  f"{r['ap75']:>9.3f}")

    ok = run_check("the detector without NMS", test,
                   "Hint: the detector's recipe is model.config (a frozen dataclass: dataclasses.replace makes a "
                   "changed copy); its field nms is the IoU above which the final NMS drops a box. Which threshold "
                   "can no IoU exceed?")
    return measured if ok else None


def answer_without_nms(student, measured: dict | None) -> bool:
    """Check ``student(measured) -> (change, cause)``: how AP@0.5 changes from the recipe's NMS to no NMS
    (``"falls"``, ``"rises"`` or ``"unchanged"``: within :data:`UNCHANGED`) and why (``"duplicates"``: more false
    positives while no fewer objects are found; ``"lost objects"``: fewer objects found), judged on ``measured``,
    the student's own table."""

    def test():
        if measured is None:
            raise CheckFailed("run the ablation above first (its check must pass).")
        answer = student(measured)
        if not isinstance(answer, (tuple, list)) or len(answer) != 2:
            raise CheckFailed(f"return a pair (change, cause), got {answer!r}.")
        change, cause = answer
        if change not in CHANGES or cause not in CAUSES:
            raise CheckFailed(f"change must be one of {CHANGES} and cause one of {CAUSES}, got {answer!r}.")
        on, off = measured["nms 0.5"], measured["no nms"]
        delta = off["ap50"] - on["ap50"]
        want_change = "unchanged" if abs(delta) < UNCHANGED else "falls" if delta < 0 else "rises"
        if change != want_change:
            raise CheckFailed(f"you say AP@0.5 {change} without NMS; compare the AP@0.5 of the rows 'nms 0.5' and "
                              f"'no nms' (a change under {UNCHANGED} counts as unchanged).")
        want_cause = "lost objects" if off["found"] < on["found"] else "duplicates"
        if cause != want_cause:
            raise CheckFailed(f"'{cause}' is not what the table shows: compare the columns found and false "
                              "pos/image of the two rows.")

    return run_check("AP without NMS, and why", test,
                     "Hint: AP ranks every box of every scene by score; a second box on an object already found "
                     "cannot match it again.")
