"""Lesson 08's self-checks: the course's solutions pass, the stubs and plausible wrong answers fail (naming why),
the references themselves are refused, and no check touches the global RNG."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lecturelib.cascade import CascadeConfig, MaskCascade, decode_boxes
from lecturelib.checks import lesson08
from lecturelib.mask_ap import mask_iou
from lecturelib.scenes import CourseScenes

TOY_IOU = np.array([[0.6, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.78, 0.0], [0.0, 0.0, 0.75]])


def stub(*args, **kwargs):
    raise NotImplementedError()


def my_mask_iou(a, b):
    fa, fb = a.flatten(1).double(), b.flatten(1).double()
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


def my_decode_boxes(anchors, deltas):
    w, h = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    cx = anchors[:, 0] + 0.5 * w + deltas[:, 0] * w
    cy = anchors[:, 1] + 0.5 * h + deltas[:, 1] * h
    w, h = w * torch.exp(deltas[:, 2]), h * torch.exp(deltas[:, 3])
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], 1)


def outcome(capsys, ok):
    return ok, capsys.readouterr().out


def test_predict_hits(capsys):
    assert lesson08.hits_at_thresholds(lambda: (3, 2), TOY_IOU)
    ok, out = outcome(capsys, lesson08.hits_at_thresholds(lambda: (4, 3), TOY_IOU))    # the duplicate counted
    assert not ok and "IoU 0.5" in out and "too high" in out
    ok, out = outcome(capsys, lesson08.hits_at_thresholds(lambda: (3, 1), TOY_IOU))
    assert not ok and "IoU 0.7" in out and "too low" in out
    ok, out = outcome(capsys, lesson08.hits_at_thresholds(stub, TOY_IOU))
    assert not ok and "not implemented yet" in out
    assert not lesson08.hits_at_thresholds(lambda: 3, TOY_IOU)


def test_implement_mask_iou(capsys):
    assert lesson08.mask_iou(my_mask_iou)
    ok, out = outcome(capsys, lesson08.mask_iou(mask_iou))                                 # the course's own
    assert not ok and "course's own" in out

    def nan_on_empty(a, b):                                                                # forgets empty unions
        fa, fb = a.flatten(1).double(), b.flatten(1).double()
        inter = fa @ fb.T
        return inter / (fa.sum(1)[:, None] + fb.sum(1)[None] - inter)

    ok, out = outcome(capsys, lesson08.mask_iou(nan_on_empty))
    assert not ok and "empty" in out
    assert not lesson08.mask_iou(lambda a, b: torch.zeros(len(a), len(b)))
    assert not lesson08.mask_iou(stub)


def test_implement_decode_boxes(capsys):
    assert lesson08.decode_boxes(my_decode_boxes)
    ok, out = outcome(capsys, lesson08.decode_boxes(decode_boxes))
    assert not ok and "course's own" in out

    def corners(anchors, deltas):                                      # moves the corners, not the centre and size
        w, h = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
        return anchors + torch.stack([deltas[:, 0] * w, deltas[:, 1] * h, deltas[:, 2] * w, deltas[:, 3] * h], 1)

    ok, out = outcome(capsys, lesson08.decode_boxes(corners))
    assert not ok and "random offsets" in out
    assert not lesson08.decode_boxes(stub)

    def via_torchvision(anchors, deltas):                              # torchvision's box coder does the same
        from torchvision.models.detection._utils import BoxCoder
        return BoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(deltas, anchors)

    ok, out = outcome(capsys, lesson08.decode_boxes(via_torchvision))
    assert not ok and "decode_single" in out

    def via_lesson07(anchors, deltas):                                 # a course function that wraps the reference
        from lecturelib import detection
        return detection.decode(anchors, deltas * deltas.new_tensor(detection.BOX_SCALE))

    ok, out = outcome(capsys, lesson08.decode_boxes(via_lesson07))
    assert not ok and "decode" in out

    def via_lesson07_hidden(anchors, deltas):                          # the same, reached by a built name
        from lecturelib import detection
        wrapper = getattr(detection, "de" + "code")
        return wrapper(anchors, deltas * deltas.new_tensor(detection.BOX_SCALE))

    ok, out = outcome(capsys, lesson08.decode_boxes(via_lesson07_hidden))
    assert not ok and "while the check ran" in out and "decode_boxes" in out

    import types

    from lecturelib import cascade as course_cascade
    clone = types.FunctionType(course_cascade.decode_boxes.__code__, vars(course_cascade))   # its code, a new name
    ok, out = outcome(capsys, lesson08.decode_boxes(clone))
    assert not ok and "copy of" in out


@pytest.fixture(scope="module")
def small_cascade():
    torch.manual_seed(0)
    model = MaskCascade(CascadeConfig(width=4, score_threshold=0.0, detections=500)).eval()
    with torch.no_grad():
        model.mask_head[1].bias.fill_(5.0)              # untrained, but every mask non-empty: detections to suppress
    scenes = CourseScenes("test", 2, 64, mode="instance")
    return model, [scenes[i] for i in range(2)]


def test_interpret_without_nms(capsys, small_cascade):
    model, scenes = small_cascade
    before = torch.random.get_rng_state()
    measured = lesson08.without_nms(lambda m: setattr(m, "config", dataclasses.replace(m.config, mask_nms=1.0)),
                                     model, scenes)
    assert torch.equal(before, torch.random.get_rng_state())
    assert measured and measured["without"]["detections"] > measured["with"]["detections"]
    assert model.config.mask_nms == 0.5                                  # the shipped model is not changed
    out = capsys.readouterr().out
    assert "with region NMS" in out and "without" in out
    ok, out = outcome(capsys, lesson08.without_nms(lambda m: None, model, scenes) is not None)  # changes nothing
    assert not ok and "still" in out
    for change, says in ((dict(score_threshold=0.001), "you also changed score_threshold"),   # more detections, NMS on
                         (dict(mask_nms=0.9), "loosens region NMS")):
        ok, out = outcome(capsys, lesson08.without_nms(
            lambda m, c=change: setattr(m, "config", dataclasses.replace(m.config, **c)), model, scenes) is not None)
        assert not ok and says in out, out
    def duplicate_outputs(m):                            # more detections with NMS still on
        forward = m.forward
        m.forward = lambda images: [{k: torch.cat([v, v]) for k, v in p.items()} for p in forward(images)]
    for change, says in ((duplicate_outputs, "differ from the shipped cascade's"),
                         (lambda m: setattr(m, "config", dataclasses.replace(m.config, mask_nms="1.0")),
                          "must be a number"),
                         (lambda m: setattr(m, "config", dataclasses.asdict(m.config)), "keep it a CascadeConfig")):
        ok, out = outcome(capsys, lesson08.without_nms(change, model, scenes) is not None)
        assert not ok and says in out, out
    assert lesson08.without_nms(stub, model, scenes) is None
    truth = measured["without"]["ap50"] < measured["with"]["ap50"]
    assert lesson08.nms_answer(lambda m: truth, measured)
    ok, out = outcome(capsys, lesson08.nms_answer(lambda m: not truth, measured))
    assert not ok and "table" in out
    ok, out = outcome(capsys, lesson08.nms_answer(lambda m: True, None))
    assert not ok and "run the ablation above first" in out
    assert not lesson08.nms_answer(stub, measured)
