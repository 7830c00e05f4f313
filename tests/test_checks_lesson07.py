"""Lesson 07's self-checks pass right answers and fail the stub and plausible wrong ones, saying what is wrong."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torchvision.ops import box_iou, nms

from lecturelib.checks import lesson07 as checks

BOXES = torch.tensor([[0, 0, 10, 10], [2, 1, 12, 11], [4, 2, 14, 12], [1, 5, 5, 9],
                      [20, 0, 30, 10], [21, 1, 31, 11], [20, 14, 28, 20]], dtype=torch.float32)
SCORES = torch.tensor([0.9, 0.8, 0.7, 0.85, 0.5, 0.6, 0.3])


def stub(*args):
    raise NotImplementedError()


def own_iou(a, b):
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None] - inter)


def own_nms(boxes, scores, labels, t):
    kept = []
    for k in scores.argsort(descending=True).tolist():
        if all(labels[j] != labels[k] or own_iou(boxes[k:k + 1], boxes[j:j + 1]).item() <= t for j in kept):
            kept.append(k)
    return kept


# ----------------------------------------------------------------------------- predict
def test_nms_survivors_accepts_the_truth_in_any_order_and_type():
    truth = nms(BOXES, SCORES, 0.5).tolist()
    assert checks.nms_survivors(lambda: truth, BOXES, SCORES, 0.5)
    assert checks.nms_survivors(lambda: torch.tensor(truth[::-1]), BOXES, SCORES, 0.5)
    assert checks.nms_survivors(lambda: set(nms(BOXES, SCORES, 0.3).tolist()), BOXES, SCORES, 0.3)


@pytest.mark.parametrize("answer,says", [
    (stub, "not implemented yet"),
    (lambda: list(range(7)), "too many"),                                    # NMS forgotten
    (lambda: [0, 3, 5, 6], "too few"),                                       # box 2 dropped by the suppressed box 1
    (lambda: [0, 2, 3, 4, 6], "the right number"),                           # visited by number, not by score
    (lambda: [0, 2, 3, 5, 6, 7], "numbered 0 to 6"),
    (lambda: [0, 0, 2], "twice"),
    (lambda: "0, 2", "list"),
])
def test_nms_survivors_fails_wrong_answers_without_giving_the_answer(answer, says, capsys):
    assert not checks.nms_survivors(answer, BOXES, SCORES, 0.5)
    out = capsys.readouterr().out
    assert says in out
    truth = sorted(nms(BOXES, SCORES, 0.5).tolist())
    assert str(truth) not in out and str(truth)[1:-1] not in out


# ----------------------------------------------------------------------------- implement: IoU
def test_box_iou_passes_an_own_implementation():
    assert checks.box_iou(own_iou)


def no_clamp(a, b):                                          # disjoint boxes get a "positive" intersection
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).prod(-1)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None] - inter)


def union_is_sum(a, b):
    inter = (torch.minimum(a[:, None, 2:], b[None, :, 2:]) - torch.maximum(a[:, None, :2], b[None, :, :2]))
    inter = inter.clamp(min=0).prod(-1)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None])


def calls_torchvision(a, b):
    return box_iou(a, b)


@pytest.mark.parametrize("student,says", [
    (stub, "not implemented yet"),
    (box_iou, "the library function torchvision"),
    (calls_torchvision, "box_iou"),
    (no_clamp, "case"),
    (union_is_sum, "identical boxes"),
    (lambda a, b: own_iou(b, a), "shape"),
    (lambda a, b: own_iou(a, b).tolist(), "return a tensor"),
    (lambda a, b: torch.stack([own_iou(a[i:i + 1], b)[0] for i in range(len(a))]), "no boxes in a"),
])
def test_box_iou_fails_wrong_implementations_naming_the_case(student, says, capsys):
    assert not checks.box_iou(student)
    assert says in capsys.readouterr().out


# ----------------------------------------------------------------------------- implement: class-wise NMS
def test_nms_passes_an_own_implementation_and_any_order_of_ties():
    assert checks.nms(own_nms)
    assert checks.nms(lambda b, s, lab, t: torch.tensor(own_nms(b, s, lab, t), dtype=torch.long))

    def ties_reversed(boxes, scores, labels, t):          # among equal scores the last box first
        kept = []
        order = sorted(range(len(scores)), key=lambda k: (-float(scores[k]), -k))
        for k in order:
            if all(labels[j] != labels[k] or own_iou(boxes[k:k + 1], boxes[j:j + 1]).item() <= t for j in kept):
                kept.append(k)
        return kept

    assert checks.nms(ties_reversed)


def class_agnostic(boxes, scores, labels, t):
    return own_nms(boxes, scores, torch.ones_like(labels), t)


def suppressed_boxes_suppress(boxes, scores, labels, t):    # drops any box a higher-scored one overlaps
    order = scores.argsort(descending=True).tolist()
    return [k for i, k in enumerate(order)
            if all(labels[j] != labels[k] or own_iou(boxes[k:k + 1], boxes[j:j + 1]).item() <= t for j in order[:i])]


def at_or_above(boxes, scores, labels, t):                  # suppresses at IoU == threshold too
    kept = []
    for k in scores.argsort(descending=True).tolist():
        if all(labels[j] != labels[k] or own_iou(boxes[k:k + 1], boxes[j:j + 1]).item() < t for j in kept):
            kept.append(k)
    return kept


def calls_batched_nms(boxes, scores, labels, t):
    from torchvision.ops import batched_nms
    return batched_nms(boxes, scores, labels, t)


@pytest.mark.parametrize("student,says", [
    (stub, "not implemented yet"),
    (calls_batched_nms, "batched_nms"),
    (lambda b, s, lab, t: nms(b, s, t), "nms"),
    (class_agnostic, "another class"),
    (suppressed_boxes_suppress, "chain"),
    (at_or_above, "threshold 1"),
    (lambda b, s, lab, t: own_nms(b, s, lab, t)[::-1], "highest score first"),
    (lambda b, s, lab, t: list(range(len(b))), "overlap by IoU"),
    (lambda b, s, lab, t: own_nms(b, s, lab, t) + own_nms(b, s, lab, t)[:1], "twice"),
    (lambda b, s, lab, t: None, "list"),
])
def test_nms_fails_wrong_implementations_naming_the_case(student, says, capsys):
    assert not checks.nms(student)
    assert says in capsys.readouterr().out


# ----------------------------------------------------------------------------- interpret: no NMS
@pytest.fixture(scope="module")
def detector_and_scenes():
    from lecturelib.evaluate import load_course_model, recipe_of
    from lecturelib.scenes import CourseScenes

    model, info = load_course_model("faster_rcnn", 0)
    _, profile = recipe_of(info)
    pairs = [p for p in CourseScenes("test", n=4, size=profile.image_size, mode="instance")]
    return model, [p[0] for p in pairs], [{"boxes": p[1]["boxes"], "labels": p[1]["labels"]} for p in pairs]


def nms_off(model):
    model.config = dataclasses.replace(model.config, nms=1.0)
    return model


def test_without_nms_measures_every_setting_and_leaves_the_model_alone(detector_and_scenes, capsys):
    model, images, targets = detector_and_scenes
    before = model.config
    measured = checks.without_nms(nms_off, model, images, targets)
    assert model.config is before
    assert list(measured) == [f"nms {t}" for t in checks.NMS_SETTINGS] + ["no nms"]
    assert measured["no nms"]["boxes"] > measured["nms 0.5"]["boxes"] > 0
    assert measured["no nms"]["false_pos"] > measured["nms 0.5"]["false_pos"]
    assert all(0 <= r["ap50"] <= 1 and r["found"] <= r["objects"] for r in measured.values())
    assert "(recipe)" in capsys.readouterr().out


@pytest.mark.parametrize("change,says", [
    (stub, "not implemented yet"),
    (lambda m: None, "return the changed detector"),
    (lambda m: m, "with its NMS off"),                                              # nothing changed
    (lambda m: _replace(m, nms=1.0, score_threshold=0.5), "nothing else changed"),
    (lambda m: _replace(m, nms=0.0), "with its NMS off"),
])
def test_without_nms_fails_a_missing_or_wrong_change(detector_and_scenes, change, says, capsys):
    model, images, targets = detector_and_scenes
    assert checks.without_nms(change, model, images, targets) is None
    assert says in capsys.readouterr().out


def _replace(model, **changes):
    model.config = dataclasses.replace(model.config, **changes)
    return model


def table(ap50_on, ap50_off, found_on, found_off):
    row = {"boxes": 10.0, "objects": 20, "false_pos": 5.0, "ap75": 0.2}
    return {"nms 0.5": {**row, "ap50": ap50_on, "found": found_on},
            "no nms": {**row, "ap50": ap50_off, "found": found_off, "false_pos": 30.0}}


def test_answer_without_nms_is_judged_on_the_measured_table(capsys):
    def computed(m):
        on, off = m["nms 0.5"], m["no nms"]
        delta = off["ap50"] - on["ap50"]
        return ("unchanged" if abs(delta) < 0.01 else "falls" if delta < 0 else "rises",
                "lost objects" if off["found"] < on["found"] else "duplicates")

    for measured in (table(0.35, 0.22, 43, 45), table(0.35, 0.30, 43, 40), table(0.35, 0.36, 43, 43),
                     table(0.30, 0.35, 40, 44)):
        assert checks.answer_without_nms(computed, measured)
    assert checks.answer_without_nms(lambda m: ("falls", "duplicates"), table(0.35, 0.22, 43, 45))
    wrong = [(lambda m: ("rises", "duplicates"), table(0.35, 0.22, 43, 45), "compare the AP@0.5"),
             (lambda m: ("falls", "lost objects"), table(0.35, 0.22, 43, 45), "found and false"),
             (lambda m: ("falls", "duplicates"), table(0.35, 0.22, 43, 40), "found and false"),
             (lambda m: ("falls", "duplicates"), table(0.35, 0.345, 43, 45), "unchanged"),
             (lambda m: "falls", table(0.35, 0.22, 43, 45), "pair"),
             (lambda m: ("drops", "duplicates"), table(0.35, 0.22, 43, 45), "one of"),
             (stub, table(0.35, 0.22, 43, 45), "not implemented yet"),
             (lambda m: ("falls", "duplicates"), None, "run the ablation above first")]
    for answer, measured, says in wrong:
        assert not checks.answer_without_nms(answer, measured)
        assert says in capsys.readouterr().out


def test_detection_counts_match_box_ap_matching():
    truth = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([1, 2])}]
    preds = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [1, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]),
              "scores": torch.tensor([0.9, 0.8, 0.7, 0.6]), "labels": torch.tensor([1, 1, 1, 2])}]
    assert checks.detection_counts(preds, truth) == (1, 3)        # the duplicate, a wrong class, a miss
