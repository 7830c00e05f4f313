"""Lesson 07's detectors: R-CNN, Fast R-CNN, Faster R-CNN and YOLO v1 on the same backbone."""
from __future__ import annotations

import pytest
import torch

from lecturelib.detection import DetectionConfig, decode, encode, proposal_boxes, sample_rois, select_boxes
from lecturelib.fast_rcnn import FastRCNN
from lecturelib.faster_rcnn import FasterRCNN
from lecturelib.rcnn import RCNN, warp_boxes_from_image
from lecturelib.roi_pool import roi_max_pool
from lecturelib.scenes import CourseScenes
from lecturelib.yolo import YOLO, decode_targets, yolo_targets

CFG = DetectionConfig(width=4, hidden=16, roi_batch=8, epochs=1, batch_size=2)
DETECTORS = {"rcnn": RCNN, "fast_rcnn": FastRCNN, "faster_rcnn": FasterRCNN, "yolo": YOLO}
LOSSES = {"rcnn": {"classifier", "box"}, "fast_rcnn": {"classifier", "box"},
          "faster_rcnn": {"rpn_objectness", "rpn_box", "classifier", "box"},
          "yolo": {"coord", "confidence_obj", "confidence_noobj", "class"}}


def scenes(n=2, size=64):
    ds = CourseScenes("train", n=n, size=size, mode="instance")
    return [ds[i] for i in range(n)]


def empty_target():
    return {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_forward_backward_on_empty_targets_and_odd_sizes(name):
    torch.manual_seed(0)
    model = DETECTORS[name](CFG)
    (im0, t0), _ = scenes()
    odd = torch.rand(3, 37, 51)                                  # no multiple of 16, no object
    targets = [{k: t0[k] for k in ("boxes", "labels")}, empty_target()]
    model.train()
    losses = model([im0, odd], targets)
    assert set(losses) == LOSSES[name]
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    # a batch whose images hold no object at all
    model.zero_grad()
    losses = model([odd, odd.flip(-1)], [empty_target(), empty_target()])
    sum(losses.values()).backward()
    model.eval()
    preds = model.predict([im0, odd])
    assert len(preds) == 2
    for p, (H, W) in zip(preds, [(64, 64), (37, 51)]):
        assert set(p) == {"boxes", "scores", "labels"}
        assert p["boxes"].dtype == torch.float32 and p["boxes"].shape[-1] == 4
        assert len(p["boxes"]) == len(p["scores"]) == len(p["labels"]) <= CFG.detections
        if len(p["boxes"]):
            assert p["boxes"][:, 0::2].max() <= W and p["boxes"][:, 1::2].max() <= H and p["boxes"].min() >= 0
            assert p["labels"].min() >= 1 and p["labels"].max() < CFG.num_classes


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_bad_input_gives_clear_errors(name):
    model = DETECTORS[name](CFG).train()
    im = torch.rand(3, 32, 32)
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        model([torch.rand(32, 32)], [empty_target()])
    with pytest.raises(ValueError, match="x1 <= x0"):
        model([im], [{"boxes": torch.tensor([[10.0, 5, 4, 20]]), "labels": torch.tensor([1])}])
    with pytest.raises(ValueError, match=r"\[G, 4\]"):
        model([im], [{"boxes": torch.zeros(4), "labels": torch.zeros(0, dtype=torch.long)}])
    with pytest.raises(ValueError, match="one target dict"):
        model([im, im], [empty_target()])


def test_rcnn_and_fast_rcnn_have_the_same_parameters_and_differ_in_features():
    r, f = RCNN(CFG), FastRCNN(CFG)
    assert {k: v.shape for k, v in r.state_dict().items()} == {k: v.shape for k, v in f.state_dict().items()}
    image = torch.rand(3, 64, 64)
    boxes = torch.tensor([[4.0, 6, 30, 40], [10, 10, 60, 50]])
    r.eval()
    assert r.roi_features([image], [boxes]).shape == (2, r.backbone.out_channels, CFG.roi_size, CFG.roi_size)
    # a crop's features do not depend on the other crops (one CNN pass per proposal)
    one = r.roi_features([image], [boxes[:1]])
    torch.testing.assert_close(one[0], r.roi_features([image], [boxes])[0])
    crops = warp_boxes_from_image(image, boxes, CFG.crop, 0.0)
    assert crops.shape == (2, 3, CFG.crop, CFG.crop)


def test_fast_rcnn_roi_features_are_roi_max_pooling_of_the_shared_map():
    torch.manual_seed(1)
    model = FastRCNN(CFG).eval()
    image = torch.rand(3, 64, 64)
    boxes = torch.tensor([[4.0, 6, 30, 40], [10, 10, 60, 50], [0, 0, 64, 64]])
    with torch.no_grad():
        feats = model.backbone(image[None])
        rois = torch.cat([torch.zeros(3, 1), boxes], 1)
        ours = roi_max_pool(feats, rois, CFG.roi_size, 1 / model.backbone.stride)
        torch.testing.assert_close(model.roi_features([image], [boxes]), ours)


def test_yolo_targets_round_trip_on_hand_made_boxes():
    boxes = torch.tensor([[3.0, 5, 19, 29], [40, 8, 63, 30], [20, 40, 52, 64]])
    labels = torch.tensor([4, 1, 10])
    T = yolo_targets(boxes, labels, (8, 8), cell=8, image_size=64, num_classes=11)
    assert T.shape == (8, 8, 15) and T[..., 0].sum() == 3
    # the first box's centre (11, 17) is in cell row 2, column 1, at offsets (0.375, 0.125)
    torch.testing.assert_close(T[2, 1, :5], torch.tensor([1.0, 0.375, 0.125, 0.5, (24 / 64) ** 0.5]))
    assert T[2, 1, 5 + 4 - 1] == 1 and T[2, 1, 5:].sum() == 1
    got_boxes, got_labels = decode_targets(T, cell=8, image_size=64)
    order = [0, 1, 2]                                        # centres in cells (2, 1), (2, 6), (6, 4): row-major
    torch.testing.assert_close(got_boxes, boxes[order], atol=1e-4, rtol=0)
    assert got_labels.tolist() == labels[order].tolist()


def test_yolo_keeps_the_larger_object_when_two_centres_share_a_cell():
    boxes = torch.tensor([[0.0, 0, 40, 40], [16, 16, 24, 24]])     # both centres in cell (2, 2) of 8-px cells
    T = yolo_targets(boxes, torch.tensor([2, 3]), (8, 8), 8, 64, 11)
    b, lab = decode_targets(T, 8, 64)
    assert lab.tolist() == [2] and torch.allclose(b, boxes[:1])


def test_yolo_loss_is_zero_for_a_perfect_prediction_but_the_confidence():
    model = YOLO(CFG)
    boxes = torch.tensor([[3.0, 5, 19, 29]])
    T = yolo_targets(boxes, torch.tensor([2]), (8, 8), 8, 64, 11)
    pred = torch.zeros(1, 8, 8, 2, 5)
    pred[0, 2, 1, 0, :4] = T[2, 1, 1:5]
    pred[0, 2, 1, 0, 4] = 1.0                                     # confidence = IoU = 1
    probs = torch.full((1, 8, 8, 10), 0.1)
    probs[0, 2, 1] = T[2, 1, 5:]
    losses = model.loss(pred, probs, [{"boxes": boxes, "labels": torch.tensor([2])}])
    assert float(losses["coord"]) == pytest.approx(0, abs=1e-10)
    assert float(losses["confidence_obj"]) == pytest.approx(0, abs=1e-10)
    assert float(losses["class"]) == 0 and float(losses["confidence_noobj"]) == 0
    pred[0, 5, 5, 1, 4] = 0.5                                     # a confident box where there is nothing
    assert float(model.loss(pred, probs, [{"boxes": boxes, "labels": torch.tensor([2])}])["confidence_noobj"]) == \
        pytest.approx(CFG.lambda_noobj * 0.25)


def test_box_coding_round_trip_and_roi_sampling():
    rois = torch.tensor([[0.0, 0, 10, 10], [5, 5, 30, 20]])
    boxes = torch.tensor([[1.0, 2, 12, 9], [4, 6, 33, 22]])
    torch.testing.assert_close(decode(rois, encode(rois, boxes)), boxes)
    gt, labels = torch.tensor([[10.0, 10, 30, 30]]), torch.tensor([3])
    props = torch.tensor([[11.0, 11, 30, 30], [0, 0, 8, 8], [15, 15, 40, 40], [20, 20, 60, 60]])
    cfg = DetectionConfig(roi_batch=4, roi_pos_fraction=0.5)
    sel, lab, tgt = sample_rois(props, gt, labels, cfg, torch.Generator().manual_seed(0))
    assert len(sel) == 4 and (lab > 0).sum() == 2 and set(lab.tolist()) == {0, 3}
    assert (tgt[lab == 0] == 0).all()
    torch.testing.assert_close(decode(sel[lab > 0], tgt[lab > 0]), gt.expand(2, 4))


def test_select_boxes_nms_is_per_class():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10]])
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.2, 0.8, 0.0], [0.3, 0.0, 0.7]])
    out = select_boxes(boxes, scores, (20, 20), DetectionConfig(nms=0.5))
    assert out["labels"].tolist() == [1, 2] and out["scores"].tolist() == pytest.approx([0.9, 0.7])


def test_proposal_boxes_are_distinct_pixel_edge_boxes():
    image, target = scenes(1)[0]
    boxes = proposal_boxes(image)
    assert boxes.dtype == torch.float32 and len(boxes) == len(torch.unique(boxes, dim=0)) > 10
    assert (boxes[:, 2] > boxes[:, 0]).all() and boxes.max() <= 64


def test_detection_task_caches_proposals_and_scores_box_ap():
    from lecturelib.tasks import DetectionTask
    from lecturelib.training import evaluate

    data = scenes(3)
    task = DetectionTask(CFG, data, data[:2], proposals=True)
    _, first = task.train_set[0]
    assert "proposals" in first and task.train_set.seconds > 0
    seconds = task.train_set.seconds
    _, again = task.train_set[0]
    assert again["proposals"] is first["proposals"] and task.train_set.seconds == seconds     # computed once
    torch.manual_seed(0)
    metrics = evaluate(FastRCNN(CFG), task, "cpu", batch_size=2)
    assert set(metrics) == {"ap50", "ap75", "ap"} and 0 <= metrics["ap"] <= metrics["ap50"] <= 1
    plain = DetectionTask(CFG, data, None, proposals=False)
    assert "proposals" not in plain.train_set[0][1]
