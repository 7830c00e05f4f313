"""Tests of lecturelib.multiscale: pyramid shapes, shared weights, equal parameter counts, size buckets."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lecturelib.multiscale import (
    MultiScaleConfig,
    MultiScaleNet,
    empirical_receptive_field,
    image_pyramid,
    multiscale_net,
    single_scale_baseline,
    size_bucket_targets,
    upsample_and_concat,
)
from lecturelib.profiles import PROFILES

SMALL = MultiScaleConfig(num_classes=5, num_scales=3, width=4, hidden=8)


@pytest.mark.parametrize("hw", [(32, 32), (33, 47), (17, 64), (5, 3)])
def test_pyramid_shapes_odd_and_non_square(hw):
    H, W = hw
    levels = image_pyramid(torch.rand(2, 3, H, W), 4)
    assert [tuple(l.shape[-2:]) for l in levels] == [(max(1, H // 2 ** k), max(1, W // 2 ** k)) for k in range(4)]
    assert all(l.shape[:2] == (2, 3) for l in levels)


def test_pyramid_keeps_constant_images_and_level0_is_the_input():
    x = torch.full((1, 3, 20, 28), 0.25)
    levels = image_pyramid(x, 3)
    assert levels[0] is x
    for l in levels[1:]:
        assert torch.allclose(l, torch.full_like(l, 0.25), atol=1e-6)


def test_pyramid_level_samples_pixel_centres():
    """A linear ramp stays a ramp: level k pixel j is centred on input position 2**k * (j + 0.5) - 0.5."""
    ramp = torch.arange(32, dtype=torch.float32).expand(1, 1, 8, 32)
    levels = image_pyramid(ramp, 3)
    for k in (1, 2):
        j = torch.arange(levels[k].shape[-1], dtype=torch.float32)
        want = 2 ** k * (j + 0.5) - 0.5
        inner = slice(1, -1)      # the border is averaged with a clamped edge
        assert torch.allclose(levels[k][0, 0, 0, inner], want[inner], atol=1e-4)


def test_upsample_and_concat_shapes_and_identity_level():
    a, b = torch.rand(2, 4, 9, 13), torch.rand(2, 6, 4, 6)
    out = upsample_and_concat([a, b], (9, 13))
    assert out.shape == (2, 10, 9, 13)
    assert torch.equal(out[:, :4], a)
    assert torch.allclose(out[:, 4:], F.interpolate(b, size=(9, 13), mode="bilinear", align_corners=False))


@pytest.mark.parametrize("hw", [(32, 32), (37, 45), (16, 40)])
def test_forward_backward_shapes_no_nan(hw):
    torch.manual_seed(0)
    for model in (multiscale_net(SMALL), single_scale_baseline(SMALL)):
        x = torch.rand(2, 3, *hw)
        out = model(x)["out"]
        assert out.shape == (2, 5, *hw)
        out.square().mean().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_one_parameter_set_and_every_scale_reaches_it():
    torch.manual_seed(0)
    model = multiscale_net(SMALL)
    ids = {id(p) for p in model.features.parameters()}
    assert len(ids) == len(list(model.features.parameters()))     # one CNN, no per-scale copies
    first = model.features[0].weight
    x = torch.rand(2, 3, 32, 32)
    feats = model.scale_features(x)
    assert len(feats) == 3
    for k, f in enumerate(feats):
        (g,) = torch.autograd.grad(f.square().sum(), first, retain_graph=True)
        assert g.abs().sum() > 0, f"no gradient from scale {k} to the shared weights"
    # the shared weight's gradient is the sum of the per-scale contributions
    model.zero_grad()
    sum(f.sum() for f in model.scale_features(x)).backward()
    total = first.grad.clone()
    parts = [torch.autograd.grad(f.sum(), first)[0] for f in model.scale_features(x)]
    assert torch.allclose(total, sum(parts), atol=1e-5)


def test_equal_parameter_counts():
    quick, full = (MultiScaleConfig.from_profile(PROFILES[name]) for name in ("quick", "full"))
    for cfg in (SMALL, quick, full):
        m, s = multiscale_net(cfg), single_scale_baseline(cfg)
        nm, ns = sum(p.numel() for p in m.parameters()), sum(p.numel() for p in s.parameters())
        assert s.config.num_scales == 1 and m.config.num_scales == cfg.num_scales
        assert abs(nm - ns) / nm < 0.01, (nm, ns)


def test_scales_follow_the_profile():
    assert MultiScaleConfig.from_profile(PROFILES["quick"]).num_scales == 3
    assert MultiScaleConfig.from_profile(PROFILES["full"]).num_scales == 4


def test_receptive_field_grows_with_scales():
    torch.manual_seed(0)
    cfg = MultiScaleConfig(num_classes=3, num_scales=3, width=4, hidden=4)
    single = MultiScaleNet(MultiScaleConfig(num_classes=3, num_scales=1, width=4, hidden=4))
    rf1, rf3 = empirical_receptive_field(single, size=64), empirical_receptive_field(multiscale_net(cfg), size=64)
    assert 14 <= rf1 <= 20      # 14 px for the CNN, a little more from the final bilinear upsampling
    assert rf3 >= 3 * rf1


def test_size_bucket_targets_hand_made():
    sem = np.zeros((10, 10), np.uint8)
    inst = np.zeros((10, 10), np.uint8)
    sem[0:1, 0:1], inst[0:1, 0:1] = 3, 1        # 1 px: sqrt(1)/10 = 0.1 -> small
    sem[5:10, 5:10], inst[5:10, 5:10] = 4, 2    # 25 px: 0.5 -> large
    out = size_bucket_targets(sem, inst, np.array([1, 25]))
    assert out["small"][0, 0] == 3 and (out["small"][5:, 5:] == 255).all()
    assert out["large"][0, 0] == 255 and (out["large"][5:, 5:] == 4).all()
    assert (out["medium"][0, 0] == 255) and (out["medium"][5:, 5:] == 255).all()
    assert out["medium"][2, 2] == 0              # background kept everywhere


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="num_scales"):
        image_pyramid(torch.rand(1, 3, 8, 8), 0)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        image_pyramid(torch.rand(3, 8, 8), 2)
    with pytest.raises(ValueError, match="features is empty"):
        upsample_and_concat([], (4, 4))
    with pytest.raises(ValueError, match="num_scales"):
        MultiScaleConfig(num_scales=0)
    with pytest.raises(ValueError, match="H, W >= 4"):
        multiscale_net(SMALL)(torch.rand(1, 3, 2, 2))


def test_class_weights_hand_computed():
    from lecturelib.multiscale import class_weights

    masks = torch.tensor([[[0, 0, 0, 1], [255, 0, 0, 1]]])     # 5 background, 2 class-1 pixels, class 2 absent
    w = class_weights(masks, 3, power=1.0)
    freq = torch.tensor([5 / 7, 2 / 7])
    raw = 1 / freq
    want = raw / (raw * freq).sum()
    assert torch.allclose(w[:2], want.float()) and torch.isclose(w[2], w[:2].max())
    assert torch.isclose((w[:2] * freq).sum(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="no labelled pixel"):
        class_weights(torch.full((1, 2, 2), 255), 3)


def test_recipe_trains_as_a_task_and_lowers_the_loss():
    from lecturelib.tasks import SemanticTask
    from lecturelib.training import fit, train_config

    torch.manual_seed(0)
    x = torch.rand(16, 3, 16, 16)
    y = (x[:, 0] > 0.5).long()
    cfg = MultiScaleConfig(num_classes=2, num_scales=2, width=4, hidden=8, epochs=4, lr=1e-2, batch_size=8)
    model = multiscale_net(cfg)
    hist = fit(model, SemanticTask(cfg, (x, y)), train_config(cfg, progress=False), "cpu")
    assert len(hist.train_loss) == 4 and hist.train_loss[-1] < hist.train_loss[0] and hist.seconds > 0
    with pytest.raises(ValueError, match="masks"):
        SemanticTask(cfg, (x, y[:3]))
