"""Lesson 09's θ explorer without a browser (its pure frames, picture and thin widget) and its self-checks."""
import time

import pytest
import torch
import torch.nn.functional as F

from lecturelib import stn_frames as sf
from lecturelib.checks import lesson09 as checks
from lecturelib.clutter import cluttered_item
from lecturelib.scenes import to_tensor_image

IMAGE = to_tensor_image(cluttered_item("test", 1).image)


def test_identity_frame_is_the_half_size_average_and_the_window_the_image():
    f = sf.theta_frame(IMAGE)
    assert torch.allclose(f.output, F.avg_pool2d(IMAGE[None], 2)[0], atol=1e-6)
    assert torch.allclose(f.corners, torch.tensor([[0.0, 0.0], [64.0, 0.0], [64.0, 64.0], [0.0, 64.0]]))


def test_zoom_shows_the_window():
    f = sf.theta_frame(IMAGE, sf.ThetaSettings(scale=0.5, tx=-0.5, ty=-0.5))
    assert torch.allclose(f.output, IMAGE[:, :32, :32], atol=1e-6)       # 32x32 output of a 32x32 window


@pytest.mark.parametrize("settings,words", [(sf.ThetaSettings(scale=0.0), "scale must be positive"),
                                            (sf.ThetaSettings(scale=0.3, tx=1.5), "misses the image"),
                                            (sf.ThetaSettings(rotation=200), "outside")])
def test_invalid_settings_are_refused(settings, words):
    with pytest.raises(ValueError, match=words):
        sf.theta_frame(IMAGE, settings)


def test_frames_are_fast_and_differ():
    settings = [sf.ThetaSettings(s, r, x, y)
                for s, r, x, y in [(1, 0, 0, 0), (0.4, 30, 0.3, -0.2), (2, -180, 1.5, 1.5)]]
    pictures = []
    for st in settings:
        start = time.perf_counter()
        pictures.append(sf.frame_png(sf.theta_frame(IMAGE, st)))
        assert time.perf_counter() - start < 0.2
        assert pictures[-1][:8] == b"\x89PNG\r\n\x1a\n"
    assert len(set(pictures)) == 3


def test_widget_redraws_and_refuses_with_a_message():
    from lecturelib.stn_widget import theta_explorer

    e = theta_explorer(IMAGE, scale=0.5)
    first = e.picture.value
    assert first == sf.frame_png(sf.theta_frame(IMAGE, sf.ThetaSettings(0.5))) and "s = 0.50" in e.theta.value
    e.sliders["rotation"].value = 45
    assert e.picture.value != first and e.message.layout.display == "none"
    e.sliders["scale"].value = 0.0
    assert "scale must be positive" in e.message.value and "stn-stale" in e.picture._dom_classes
    e.sliders["scale"].value = 0.5
    assert e.message.layout.display == "none" and "stn-stale" not in e.picture._dom_classes
    assert "image/png" in e._repr_mimebundle_()
    with pytest.raises(ValueError, match="scale"):
        theta_explorer(IMAGE, scale=0)


def _grid(theta, h, w):
    ys = (2 * torch.arange(h, dtype=theta.dtype) + 1) / h - 1
    xs = (2 * torch.arange(w, dtype=theta.dtype) + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy, torch.ones_like(gx)], dim=-1) @ theta.T


def _attend(a, h, W_a, W_h, w):
    alpha = torch.softmax(torch.tanh(a @ W_a.T + W_h @ h) @ w, 0)
    return alpha @ a, alpha


def test_implement_checks_pass_an_own_solution_and_fail_wrong_ones_and_the_course_code(capsys):
    from lecturelib import spatial_transformer as st
    from lecturelib.captioning import AdditiveAttention

    assert checks.affine_grid(_grid) and checks.attention_step(_attend)
    assert not checks.affine_grid(lambda t, h, w: _grid(t, w, h).transpose(0, 1))          # rows and columns swapped
    assert not checks.affine_grid(lambda t, h, w: _grid(t, h, w)[..., [1, 0]])              # (y, x) instead of (x, y)
    assert not checks.affine_grid(lambda t, h, w: _grid(t.detach(), h, w))                 # no gradient to theta
    assert not checks.affine_grid(lambda t, h, w: F.affine_grid(t[None], (1, 1, h, w), align_corners=False)[0])
    assert not checks.affine_grid(lambda t, h, w: st.affine_grid(t[None], (1, 1, h, w))[0])
    assert not checks.attention_step(lambda a, h, W_a, W_h, w: _attend(a, h, W_a, W_h, -w))
    assert not checks.attention_step(lambda a, h, W_a, W_h, w: (a.mean(0), torch.full((len(a),), 1 / len(a))))
    assert not checks.attention_step(AdditiveAttention)
    out = capsys.readouterr().out
    assert "course's own" in out or "calls" in out
    assert "expected" in out and "\u274c" in out


def test_predict_check_names_the_wrong_part_without_the_answer(capsys):
    truth = checks.sampler_truth()
    right = tuple(t.tolist() for t in truth.values())
    assert checks.sampler_prediction(lambda: right)
    wrong_zoom = (right[0], [[0.0, 1.0], [4.0, 5.0]])                     # zero padding forgotten
    assert not checks.sampler_prediction(lambda: wrong_zoom)
    out = capsys.readouterr().out
    assert "zoomed out" in out and ("too high" in out or "too low" in out)
    assert "3.75" not in out                                              # the answer is not printed
    top_left = ([[0.0, 1.0], [4.0, 5.0]], right[1])                      # y taken as pointing up
    assert not checks.sampler_prediction(lambda: top_left)
    assert not checks.sampler_prediction(lambda: right[0])                # one grid only


def test_interpret_checks_measure_the_change_and_verify_the_answer(capsys):
    from lecturelib import spatial_transformer as st
    from lecturelib.clutter import cluttered_set

    cfg = st.STNConfig(width=4, loc_width=4)
    torch.manual_seed(0)
    model = st.stn_classifier(cfg)
    images, labels, boxes = cluttered_set("test", 16, 64)

    def centred(theta):
        theta[:, :, 2] = 0
        return theta

    def moved(theta):
        theta[:, :, 2] = 0.5
        return theta

    assert checks.window_ablation(centred, model, images, labels, boxes) is None      # a fresh net is centred
    measured = checks.window_ablation(moved, model, images, labels, boxes)
    assert set(measured) == {"learned", "changed"}
    drop = measured["learned"][0] - measured["changed"][0]
    truth = drop >= checks.MIN_AIM_DROP
    assert checks.aim_answer(lambda m: truth, measured)
    assert not checks.aim_answer(lambda m: not truth, measured)
    out = capsys.readouterr().out
    assert f"your answer ({not truth}) does not match your measured table" in out
    assert "the windows' aim ablation" in out
    assert not checks.aim_answer(lambda m: "yes", measured)
    assert not checks.aim_answer(lambda m: truth, None)
    assert not checks.window_ablation(lambda t: t[:, :1], model, images, labels, boxes)
    assert "run the ablation above first" in capsys.readouterr().out
