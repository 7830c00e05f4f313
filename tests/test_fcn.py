"""FCN-32s/16s/8s: sizes, gradients, the bilinear upsampler, zero-initialised score layers, crops, errors."""
import math

import pytest
import torch
import torch.nn.functional as F

from lecturelib.fcn import FCN, Upsample, VGGConfig, crop_to, fcn, fcn8s, fcn16s, fcn32s, fuse_skip, transfer_weights
from lecturelib.upsampling import bilinear_upsampler

BUILDERS = {"32s": fcn32s, "16s": fcn16s, "8s": fcn8s}


def _randomise_scores(model: FCN, seed: int = 0) -> None:
    """Give the zero-initialised score layers random weights (as after some training)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.head.named_parameters():
            if name.startswith("score"):
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("name", BUILDERS)
@pytest.mark.parametrize("size", [(32, 32), (64, 64), (33, 33), (47, 61), (96, 40), (65, 100)])
def test_output_size_equals_input_size(name, size):
    model = BUILDERS[name](num_classes=5, width=4).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *size))
    assert set(out) == {"out"}
    assert out["out"].shape == (2, 5, *size)


@pytest.mark.parametrize("name", BUILDERS)
def test_forward_backward_finite(name):
    torch.manual_seed(0)
    model = BUILDERS[name](num_classes=4, width=4)
    _randomise_scores(model)
    x = torch.rand(2, 3, 37, 45)
    y = torch.randint(0, 4, (2, 37, 45))
    loss = F.cross_entropy(model(x)["out"], y)
    loss.backward()
    assert torch.isfinite(loss)
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, pname
            assert torch.isfinite(p.grad).all(), pname
    # the first convolution receives gradient through every head
    assert model.backbone.blocks[0][0][0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("factor", [2, 3, 4, 8, 16, 32])
def test_upsample_equals_bilinear_interpolation_everywhere(factor):
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    up = Upsample(3, factor).double()
    want = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    got = up(x)
    assert got.shape == want.shape == (2, 3, 5 * factor, 4 * factor)
    assert torch.allclose(got, want, atol=1e-10)


def test_fixed_upsampler_is_grouped_and_matches_the_full_one():
    fixed = Upsample(6, 8, learnable=False)
    full = bilinear_upsampler(6, 8)
    assert not fixed.up.weight.requires_grad and fixed.up.groups == 6
    x = torch.randn(1, 6, 3, 5)
    assert torch.allclose(fixed.up(x), full(x), atol=1e-5)
    assert Upsample(6, 2, learnable=True).up.weight.requires_grad


def test_bilinear_init_upsamples_a_smooth_image_like_interpolate_in_the_interior():
    # the plain transposed convolution (no border padding) of lecturelib.upsampling, as FCN initialises it
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 12), torch.linspace(0, 1, 10), indexing="ij")
    img = torch.stack([torch.sin(3 * xx) * torch.cos(2 * yy), xx * yy, xx + yy])[None]  # (1, 3, 12, 10)
    up = bilinear_upsampler(3, 2)
    got = up(img)
    want = F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False)
    assert got.shape == want.shape
    assert torch.allclose(got[..., 1:-1, 1:-1], want[..., 1:-1, 1:-1], atol=1e-5)
    assert not torch.allclose(got[..., 0, :], want[..., 0, :], atol=1e-3)  # zero padding darkens the border ...
    assert torch.allclose(Upsample(3, 2)(img), want, atol=1e-5)              # ... which Upsample's padding fixes


def test_score_layers_start_at_zero_and_share_the_backbone_initialisation():
    models = {}
    for name, builder in BUILDERS.items():
        torch.manual_seed(0)
        models[name] = builder(num_classes=3, width=4)
    for name, m in models.items():
        for lname, p in m.head.named_parameters():
            if lname.startswith("score"):
                assert p.abs().sum() == 0, (name, lname)
        sd, ref = m.backbone.state_dict(), models["32s"].backbone.state_dict()
        assert all(torch.equal(sd[k], ref[k]) for k in ref), name
    x = torch.rand(1, 3, 40, 52)
    for m in models.values():
        m.eval()
        assert torch.count_nonzero(m(x)["out"]) == 0


def test_transfer_weights_staged_training_keeps_the_coarse_prediction():
    torch.manual_seed(1)
    m32 = fcn32s(num_classes=3, width=4)
    _randomise_scores(m32)
    m16 = transfer_weights(m32, fcn16s(num_classes=3, width=4))
    m8 = transfer_weights(m16, fcn8s(num_classes=3, width=4))
    for m in (m32, m16, m8):
        m.eval()
    x = torch.rand(2, 3, 45, 70)
    with torch.no_grad():
        feats = m32.backbone(x)
        assert all(torch.equal(feats[k], m8.backbone(x)[k]) for k in feats)
        score = m32.head.score_fr(feats["fc7"])
        # the new skip scores are zero: FCN-16s adds nothing to its 2x-upsampled fc7 scores, FCN-8s neither
        h16 = m16.head
        want16 = h16.up_final(crop_to(h16.up2_fr(score), feats["pool4"].shape[-2:]))
        assert torch.allclose(m16(x)["out"], crop_to(want16, x.shape[-2:]), atol=1e-6)
        o32, o16, o8 = (m(x)["out"] for m in (m32, m16, m8))
    # x2 then x16 bilinear is not exactly x32 bilinear, but nearly: the predictions agree almost everywhere
    scale = o32.abs().max()
    assert scale > 0
    assert (o16 - o32).abs().max() < 0.5 * scale and (o8 - o32).abs().max() < 0.5 * scale
    assert (o16.argmax(1) == o32.argmax(1)).float().mean() > 0.95
    assert (o8.argmax(1) == o32.argmax(1)).float().mean() > 0.95
    # once a skip score is non-zero the outputs differ
    with torch.no_grad():
        m8.head.score_pool3.weight.fill_(1.0)
        assert not torch.allclose(m8(x)["out"], o8, atol=1e-3)


def test_transfer_weights_rejects_unrelated_models():
    with pytest.raises(ValueError, match="share no backbone"):
        transfer_weights(fcn32s(11, width=4), fcn16s(11, width=8))


def test_fuse_skip_hand_example():
    # coarse 1x2 map of ones and twos, upsampled 2x -> 2x4, cropped to the 2x3 skip, plus the skip
    coarse = torch.tensor([[[[1.0, 2.0]]]])
    skip = torch.arange(6.0).reshape(1, 1, 2, 3)
    up = Upsample(1, 2)
    out = fuse_skip(coarse, skip, up)
    interp = F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=False)  # [1, 1.25, 1.75, 2]
    assert out.shape == (1, 1, 2, 3)
    assert torch.allclose(out, interp[..., :3] + skip, atol=1e-6)
    assert torch.allclose(out[0, 0, 0], torch.tensor([1.0, 2.25, 3.75]), atol=1e-6)


def test_crop_to_and_its_error():
    x = torch.arange(30.0).reshape(1, 1, 5, 6)
    assert torch.equal(crop_to(x, (2, 3), (1, 2)), x[..., 1:3, 2:5])
    with pytest.raises(ValueError, match="cannot crop"):
        crop_to(x, (5, 6), (1, 0))


def test_output_stride_grids():
    model = fcn8s(11, width=4)
    feats = model.backbone(torch.rand(1, 3, 64, 64))
    assert feats["pool3"].shape[-2:] == (8, 8)
    assert feats["pool4"].shape[-2:] == (4, 4)
    assert feats["fc7"].shape[-2:] == (2, 2)
    feats = model.backbone(torch.rand(1, 3, 33, 100))
    assert feats["fc7"].shape[-2:] == (math.ceil(33 / 32), math.ceil(100 / 32))


@pytest.mark.parametrize("bad, match", [
    (torch.rand(1, 3, 31, 64), "smaller than 32x32"),
    (torch.rand(3, 64, 64), r"Tensor\[N, C, H, W\]"),
    (torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8), "float images"),
])
def test_bad_inputs_give_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        fcn32s(11, width=4)(bad)


def test_bad_arguments():
    with pytest.raises(ValueError, match="stride must be 32, 16 or 8"):
        fcn(4, 11, width=4)
    with pytest.raises(ValueError, match="width must be a positive int"):
        fcn8s(11, width=0)
    with pytest.raises(ValueError, match="num_classes"):
        fcn8s(num_classes=0)
    with pytest.raises(ValueError, match="five blocks"):
        VGGConfig(convs=(1, 1))


def test_only_the_heads_differ():
    names = {n: {k.split(".")[0] for k, p in BUILDERS[n](11, width=4).head.named_parameters() if p.requires_grad}
             for n in BUILDERS}
    assert names["32s"] == {"score_fr"}
    assert names["16s"] == {"score_fr", "score_pool4", "up2_fr"}
    assert names["8s"] == {"score_fr", "score_pool4", "up2_fr", "score_pool3", "up2_pool4"}
    shapes = {n: [p.shape for p in BUILDERS[n](11, width=4).backbone.parameters()] for n in BUILDERS}
    assert shapes["32s"] == shapes["16s"] == shapes["8s"]
