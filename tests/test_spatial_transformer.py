"""Tests of lecturelib.spatial_transformer and lecturelib.clutter: the grid generator and the bilinear sampler
written from scratch against torch's (forward, backward, float64 gradcheck), the identity, θ in words, the window,
the two classifiers and their task, and the cluttered items."""
import math

import pytest
import torch
import torch.nn.functional as F

from lecturelib import clutter
from lecturelib import spatial_transformer as st
from lecturelib.tasks import ClutterTask
from lecturelib.training import count_parameters, evaluate, fit, train_config


def _theta(n, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.eye(2, 3, dtype=dtype) + 0.6 * torch.randn(n, 2, 3, generator=g, dtype=dtype))


@pytest.mark.filterwarnings("ignore:Since version 1.3.0")      # torch's note on unit-size grids
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [(2, 3, 5, 7), (1, 1, 1, 4), (3, 2, 8, 8)])
def test_affine_grid_equals_torch(size, align_corners):
    theta = _theta(size[0])
    ours = st.affine_grid(theta, size, align_corners)
    torch_grid = F.affine_grid(theta, size, align_corners=align_corners)
    assert ours.shape == torch_grid.shape == (size[0], size[2], size[3], 2)
    assert torch.allclose(ours, torch_grid, atol=1e-12)


@pytest.mark.parametrize("align_corners", [False, True])
def test_grid_sample_equals_torch_forward_and_backward(align_corners):
    theta = _theta(2, seed=1)
    x = torch.randn(2, 3, 9, 6, dtype=torch.float64, requires_grad=True)
    grid = (1.3 * F.affine_grid(theta, (2, 3, 5, 4), align_corners=align_corners)).requires_grad_()
    ours = st.grid_sample(x, grid, align_corners)
    ref = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=align_corners)
    assert torch.allclose(ours, ref, atol=1e-12)
    w = torch.randn_like(ref)
    g_ours = torch.autograd.grad((ours * w).sum(), (x, grid))
    g_ref = torch.autograd.grad((ref * w).sum(), (x, grid))
    for a, b in zip(g_ours, g_ref):
        assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("align_corners", [False, True])
def test_gradcheck_float64(align_corners):
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    theta = _theta(1, seed=2).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, t: st.transform(a, t, (3, 4), align_corners), (x, theta))
    grid = st.affine_grid(_theta(1, seed=3), (1, 2, 3, 3)).detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, g: st.grid_sample(a, g, align_corners), (x, grid))


def test_identity_returns_the_input_and_half_size_is_the_2x2_average():
    x = torch.rand(2, 3, 8, 12)
    eye = st.theta_from()[None].expand(2, 2, 3)
    assert torch.allclose(st.transform(x, eye, (8, 12)), x, atol=1e-6)
    assert torch.allclose(st.transform(x, eye, (4, 6)), F.avg_pool2d(x, 2), atol=1e-6)


def test_theta_from_words():
    assert torch.equal(st.theta_from(), torch.eye(2, 3))
    th = st.theta_from(scale=0.5, rotation=90, tx=0.25, ty=-0.5)
    assert torch.allclose(th, torch.tensor([[0.0, -0.5, 0.25], [0.5, 0.0, -0.5]]), atol=1e-7)
    # zoom 2x on the top-left quarter: the window is that quarter, in pixel-edge coordinates
    box = st.window_box(st.theta_from(0.5, 0, -0.5, -0.5)[None], 64, 64)
    assert torch.allclose(box, torch.tensor([[0.0, 0.0, 32.0, 32.0]]))
    rotated = st.window_box(st.theta_from(0.5, 45)[None], 64, 64)[0]
    half = 16 * math.sqrt(2)
    assert torch.allclose(rotated, torch.tensor([32 - half, 32 - half, 32 + half, 32 + half]), atol=1e-4)


@pytest.mark.parametrize("bad", [torch.zeros(2, 3), torch.zeros(1, 3, 2), torch.zeros(1, 2, 3, dtype=torch.long)])
def test_theta_of_the_wrong_shape_is_refused(bad):
    with pytest.raises(ValueError, match="theta"):
        st.affine_grid(bad, (1, 1, 4, 4))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="scale"):
        st.theta_from(scale=0)
    with pytest.raises(ValueError, match="rotation"):
        st.theta_from(rotation=float("nan"))
    with pytest.raises(ValueError, match="size"):
        st.affine_grid(torch.zeros(2, 2, 3), (1, 1, 4, 4))
    with pytest.raises(ValueError, match="grid"):
        st.grid_sample(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4, 3))
    with pytest.raises(ValueError, match="out_size"):
        st.STNConfig(out_size=30)


def test_classifiers_shapes_start_window_and_parameters():
    cfg = st.STNConfig(image_size=32, out_size=16, width=4, loc_width=4, initial_scale=0.5)
    torch.manual_seed(0)
    with_stn, plain = st.stn_classifier(cfg).eval(), st.plain_classifier(cfg).eval()
    x = torch.rand(3, 3, 32, 32)
    for model in (with_stn, plain):
        out = model(x)
        assert out["out"].shape == (3, 10) and out["view"].shape == (3, 3, 16, 16)
    # fresh: the transformer shows the centred window of side initial_scale, the plain model the whole image
    assert torch.allclose(with_stn(x)["theta"], torch.tensor([[0.5, 0, 0], [0, 0.5, 0]]).expand(3, 2, 3))
    assert torch.allclose(plain(x)["theta"], torch.eye(2, 3).expand(3, 2, 3))
    assert count_parameters(plain) >= count_parameters(with_stn)                 # not smaller than the transformer
    assert count_parameters(st.STNClassifier(cfg, stn=False, width=st.matched_width(cfg) - 1)) < count_parameters(
        with_stn)                                                                # and the smallest width that is
    with pytest.raises(ValueError, match="images"):
        plain(torch.rand(3, 1, 32, 32))
    with pytest.raises(ValueError, match="initial_scale"):
        st.STNConfig(initial_scale=1.5)


def test_localization_is_a_soft_argmax_of_a_cell_map():
    torch.manual_seed(0)
    loc = st.LocalizationNet(32, 4, initial_scale=0.6)
    x = torch.rand(2, 3, 32, 32)
    theta, weights = loc.locate(x)
    assert weights.shape == (2, 4, 4) and torch.allclose(weights.sum(dim=(1, 2)), torch.ones(2))
    # all the weight on one cell: the window's centre is that cell's centre, in normalised coordinates
    class OneCell(torch.nn.Module):
        def forward(self, f):
            logits = torch.full((f.shape[0], 1, *f.shape[2:]), -50.0)
            logits[:, 0, 3, 1] = 50.0                                  # row 3, column 1
            return logits

    loc.score = OneCell()
    theta, weights = loc.locate(x)
    assert torch.allclose(theta[:, :, 2], torch.tensor([[-0.25, 0.75]] * 2), atol=1e-5)
    assert torch.allclose(theta[:, 0, 0], torch.full((2,), 0.6)) and float(weights[0, 3, 1]) > 0.999


def test_translation_gradient_points_towards_what_lowers_the_loss():
    # a "classifier" whose loss for label 1 falls as its view gets brighter: the window must move to the bright spot
    image = torch.zeros(1, 3, 32, 32)
    image[..., 12:20, 20:28] = 1.0                      # a bright square, half inside the centred window (8..24)

    def classifier(view):
        return torch.stack([torch.zeros(len(view)), 20 * (view + 0.5).mean(dim=(1, 2, 3))], dim=1)

    theta = torch.tensor([[[0.47, 0.0, 0.0], [0.0, 0.47, 0.0]]])         # samples between pixel centres
    step = st.translation_gradient(classifier, image, torch.tensor([1]), theta, 16)
    assert step[0, 0] > 0 and abs(float(step[0, 1])) < 0.05 * float(step[0, 0])   # right, towards the square
    box = torch.tensor([[20.0, 12.0, 28.0, 20.0]])
    assert st.towards_item_share(step, theta, box, 32) == 1.0
    assert st.towards_item_share(-step, theta, box, 32) == 0.0


def test_clutter_items_are_deterministic_and_boxes_fit_the_masks():
    a, b = clutter.cluttered_item("train", 5, seed=1), clutter.cluttered_item("train", 5, seed=1)
    assert (a.image == b.image).all() and a.label == b.label and (a.box == b.box).all()
    assert (clutter.cluttered_item("test", 5, seed=1).image != a.image).any()
    ys, xs = a.mask.nonzero()
    assert tuple(a.box) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert 16 <= a.box[2] - a.box[0] <= 22 or 16 <= a.box[3] - a.box[1] <= 22
    images, labels, boxes = clutter.cluttered_set("test", 6, size=32)
    assert images.shape == (6, 3, 32, 32) and labels.dtype == torch.long and boxes.shape == (6, 4)
    assert 0 <= int(labels.min()) and int(labels.max()) <= 9 and float(boxes.max()) <= 32
    with pytest.raises(ValueError, match="n must"):
        clutter.cluttered_set("test", -1)


def test_clutter_task_trains_and_reports_the_window():
    cfg = st.STNConfig(image_size=32, out_size=16, width=4, loc_width=4, epochs=1, batch_size=8)
    data = clutter.cluttered_set("train", 16, size=32)
    task = ClutterTask(cfg, data, data)
    torch.manual_seed(0)
    model = st.stn_classifier(cfg)
    hist = fit(model, task, train_config(cfg, seed=0, progress=False), "cpu")
    assert len(hist.train_loss) == 1 and math.isfinite(hist.train_loss[0])
    m = evaluate(st.plain_classifier(cfg), task)
    area = ((data[2][:, 2] - data[2][:, 0]) * (data[2][:, 3] - data[2][:, 1]) / 32 ** 2).mean()
    assert m["window_iou"] == pytest.approx(float(area), rel=1e-5)        # the identity window is the whole image
    assert 0 <= m["accuracy"] <= 1 and 0 <= m["centre_inside"] <= 1


def test_loss_towards_item_is_low_where_the_window_shows_the_item():
    image = torch.zeros(1, 3, 32, 32)
    image[..., 20:28, 20:28] = 1.0

    def classifier(view):                              # label 1 is likely when the view is bright
        return torch.stack([torch.zeros(len(view)), 20 * (view + 0.5).mean(dim=(1, 2, 3))], dim=1)

    box = torch.tensor([[20.0, 20.0, 28.0, 28.0]])
    losses = st.loss_towards_item(classifier, image, torch.tensor([1]), box, 0.3, [0.0, 0.5, 1.0], 8)
    assert losses[0] > losses[1] > losses[2]
    with pytest.raises(ValueError, match="scale"):
        st.loss_towards_item(classifier, image, torch.tensor([1]), box, 0.0, [0.0], 8)
