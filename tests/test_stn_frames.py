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


def test_checks_pass_the_reference_and_fail_wrong_answers(capsys):
    from lecturelib.captioning import AdditiveAttention  # noqa: F401  (the library's own step is tested there)

    def grid(theta, h, w):
        return F.affine_grid(theta[None], (1, 1, h, w), align_corners=False)[0]

    def sample(image, theta, oh, ow):
        g = F.affine_grid(theta[None], (1, 1, oh, ow), align_corners=False)
        return F.grid_sample(image[None, None], g, align_corners=False)[0, 0]

    def attend(a, h, W_a, W_h, w):
        alpha = torch.softmax(torch.tanh(a @ W_a.T + W_h @ h) @ w, 0)
        return alpha @ a, alpha

    assert checks.affine_grid(grid) and checks.sampler(sample) and checks.attention_step(attend)
    assert not checks.affine_grid(lambda t, h, w: F.affine_grid(t[None], (1, 1, h, w), align_corners=True)[0])
    assert not checks.sampler(lambda im, t, oh, ow: sample(im, t, oh, ow) * 0.5)
    assert not checks.attention_step(lambda a, h, W_a, W_h, w: attend(a, h, W_a, W_h, -w))
    assert "\u274c" in capsys.readouterr().out
