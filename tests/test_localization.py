"""Lesson 07: the localization network (class + box heads), Overfeat's sliding window, the self-checks."""
from __future__ import annotations

import pytest
import torch

from lecturelib import localization as L
from lecturelib import overfeat as O
from lecturelib.session import set_seed
from lecturelib.training import TrainConfig, fit

CFG = L.LocalizationConfig(width=4, hidden=16, n_train=64, n_test=16, epochs=1, batch_size=16)


@pytest.fixture(scope="module")
def data():
    return L.OneItemScenes(CFG, "train"), L.OneItemScenes(CFG, "test")


@pytest.fixture(scope="module")
def net():
    set_seed(0)
    model = L.localizer(CFG).eval()
    with torch.no_grad():                         # non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model


def test_one_item_scenes_are_deterministic_and_hold_one_item_or_none(data):
    train, _ = data
    again = L.OneItemScenes(CFG, "train", n=8)
    assert torch.equal(again.images, train.images[:8]) and torch.equal(again.boxes, train.boxes[:8])
    assert train.images.shape == (64, 3, CFG.window, CFG.window)
    has = train.labels > 0
    assert 0 < int((~has).sum()) < 64                                   # some empty windows, most with an item
    assert (train.boxes[~has] == 0).all()
    b = train.boxes[has]
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all() and b.min() >= 0 and b.max() <= CFG.window
    assert not torch.equal(L.OneItemScenes(CFG, "test", n=8).images, train.images[:8])


def test_forward_shapes_and_bad_input(net):
    out = net(torch.rand(3, 3, CFG.window, CFG.window))
    assert out["scores"].shape == (3, CFG.num_classes) and out["boxes"].shape == (3, 4)
    with pytest.raises(ValueError, match="overfeat"):
        net(torch.rand(1, 3, 40, 40))
    with pytest.raises(ValueError, match="box_loss"):
        L.LocalizationConfig(box_loss="l1")
    with pytest.raises(ValueError, match="does not fit"):
        L.LocalizationConfig(window=31)
    with pytest.raises(ValueError, match="OneItemScenes"):
        L.LocalizationTask(CFG, (torch.rand(2, 3, 30, 30), torch.zeros(2)))


def test_the_fused_sequential_is_both_heads(net):
    x = torch.rand(5, 3, CFG.window, CFG.window)
    with torch.no_grad():
        out, fused = net(x), net.as_sequential().eval()(x)
    assert torch.allclose(fused[:, :CFG.num_classes], out["scores"], atol=1e-6)
    assert torch.allclose(fused[:, CFG.num_classes:], out["boxes"], atol=1e-6)


@pytest.mark.parametrize("box_loss", L.BOX_LOSSES)
def test_loss_with_and_without_items(net, box_loss):
    cfg = L.LocalizationConfig(**{**CFG.__dict__, "box_loss": box_loss})
    model = L.localizer(cfg).train()
    x = torch.rand(4, 3, cfg.window, cfg.window)
    boxes = torch.tensor([[2.0, 3.0, 20.0, 25.0]] * 4)
    for labels in (torch.tensor([0, 3, 0, 5]), torch.zeros(4, dtype=torch.long)):
        total, c, b = L.localization_loss(model(x), labels, boxes, cfg)
        assert torch.isfinite(total) and total.item() == pytest.approx((c + cfg.box_weight * b).item())
        total.backward()
        assert model.box.weight.grad is not None
        model.zero_grad()
    total, _, b = L.localization_loss(model(x), torch.zeros(4, dtype=torch.long), boxes, cfg)
    assert b.item() == 0.0                                              # no box loss where there is no item


def test_metrics_perfect_and_baseline(data):
    train, test = data
    perfect = L.localization_metrics(test.labels, test.boxes, test.labels, test.boxes)
    assert perfect == {"class_acc": 1.0, "box_iou": pytest.approx(1.0), "loc_acc": 1.0}
    shifted = test.boxes + torch.tensor([100.0, 0, 100.0, 0])
    assert L.localization_metrics(test.labels, test.boxes, test.labels, shifted)["loc_acc"] == 0.0
    base = L.baseline_metrics(train, test)
    assert 0 <= base["loc_acc"] <= base["class_acc"] + 1 and 0 < base["box_iou"] < 1
    a = torch.tensor([[0.0, 0, 4, 4], [0, 0, 2, 2]])
    assert torch.allclose(L.paired_iou(a, a[[1, 0]]), torch.tensor([0.25, 0.25]))


def test_trains_through_the_one_loop(data):
    train, test = data
    set_seed(0)
    model = L.localizer(CFG)
    hist = fit(model, L.LocalizationTask(CFG, train, test), TrainConfig(epochs=2, batch_size=16, lr=3e-3,
                                                                        progress=False), "cpu")
    assert {"class_loss", "box_loss"} <= set(hist.parts) and hist.train_loss[-1] < hist.train_loss[0]
    assert {"class_acc", "box_iou", "loc_acc"} <= set(hist.final)


# ----------------------------------------------------------------------------- Overfeat
def test_sliding_window_equals_the_network_on_every_window(net):
    fcn = O.sliding_window_net(net)
    image = torch.rand(3, 61, 47)
    for scale in (1.0, 0.8):
        d = O.dense_detections(fcn, image, scale, CFG.window, CFG.num_classes)
        h_s, w_s = round(61 * scale), round(47 * scale)
        resized = torch.nn.functional.interpolate(image[None], size=(h_s, w_s), mode="bilinear",
                                                  align_corners=False, antialias=scale < 1)[0]
        stride = 2 ** CFG.stages
        h, w = d["shape"]
        assert (h, w) == (O.positions(h_s, CFG.window, stride), O.positions(w_s, CFG.window, stride))
        crops = torch.stack([resized[:, stride * i:stride * i + CFG.window, stride * j:stride * j + CFG.window]
                             for i in range(h) for j in range(w)])
        with torch.no_grad():
            out = net(crops)
        assert torch.allclose(d["probs"], out["scores"].softmax(1), atol=1e-5)
        assert torch.allclose(d["boxes"] * scale - d["windows"][:, :2].repeat(1, 2) * scale,
                              out["boxes"] * CFG.window, atol=1e-3)
        k = w + 1                                       # position (1, 1)
        assert torch.allclose(d["windows"][k], torch.tensor(O.window_box(1, 1, scale, CFG.window, stride)))


def test_detector_outputs_on_odd_sizes_and_bad_input(net):
    det = O.Overfeat(net, O.OverfeatConfig(score_threshold=0.0))
    for shape in ((3, 64, 64), (3, 37, 50), (3, 20, 20)):
        (p,) = det.predict([torch.rand(*shape)])
        assert set(p) == {"boxes", "scores", "labels"} and p["boxes"].shape[1:] == (4,)
        b = p["boxes"]
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert b.min() >= 0 and (b[:, 2] <= shape[2]).all() and (b[:, 3] <= shape[1]).all()
        assert (p["labels"] >= 1).all() and len(b) <= det.config.max_detections
    assert det.window_count(64) > 0
    with pytest.raises(ValueError, match="merge"):
        O.OverfeatConfig(merge="mean")
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        det.detect(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="LocalizationNet"):
        O.sliding_window_net(torch.nn.Linear(2, 2))


def test_overfeat_merge_averages_a_cluster():
    boxes = torch.tensor([[0.0, 0, 10, 10], [2, 0, 12, 10], [30, 30, 40, 40], [0, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.3, 0.8, 0.7])
    labels = torch.tensor([1, 1, 1, 2])
    b, s, lab = O.overfeat_merge(boxes, scores, labels, 0.5)
    assert lab.tolist() == [1, 1, 2] and s.tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert b[0].tolist() == pytest.approx([0.5, 0, 10.5, 10])                # (0.9 * 0 + 0.3 * 2) / 1.2
    model = L.localizer(CFG).eval()
    with torch.no_grad():                         # every window predicts itself as the box
        model.box.weight.zero_()
        model.box.bias.copy_(torch.tensor([0.0, 0.0, 1.0, 1.0]))
    for merge in O.MERGES:
        det = O.Overfeat(model, O.OverfeatConfig(merge=merge, score_threshold=0.0))
        d = det.windows(torch.rand(3, 48, 48))
        assert torch.allclose(d["boxes"], d["windows"], atol=1e-4)
        found = det.detect(torch.rand(3, 48, 48))
        assert 1 <= len(found["boxes"]) <= len(d["boxes"])

