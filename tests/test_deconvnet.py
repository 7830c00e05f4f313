"""DeconvNet: sizes, gradients, max-unpooling at the pooling switches, errors."""
import pytest
import torch
import torch.nn.functional as F

from lecturelib.deconvnet import DeconvNet, deconvnet, max_unpool
from lecturelib.fcn import VGGConfig, fcn32s


@pytest.mark.parametrize("size", [(32, 32), (64, 64), (33, 33), (47, 61), (96, 40)])
def test_output_size_equals_input_size(size):
    model = deconvnet(num_classes=5, width=4).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *size))
    assert set(out) == {"out"}
    assert out["out"].shape == (2, 5, *size)


def test_forward_backward_finite():
    torch.manual_seed(0)
    model = deconvnet(num_classes=4, width=4)
    x = torch.rand(2, 3, 35, 50)
    loss = F.cross_entropy(model(x)["out"], torch.randint(0, 4, (2, 35, 50)))
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.encoder[0][0][0].weight.grad.abs().sum() > 0


def test_unpooling_places_values_at_the_switches_hand_example():
    x = torch.tensor([[1., 5., 2., 0.],
                      [3., 4., 8., 1.],
                      [0., 2., 6., 7.],
                      [9., 1., 3., 5.]])[None, None]
    v, idx = F.max_pool2d(x, 2, 2, return_indices=True)
    assert v.flatten().tolist() == [5., 8., 9., 7.]
    assert idx.flatten().tolist() == [1, 6, 12, 11]           # row * 4 + col of each maximum
    out = max_unpool(v * 10, idx, (4, 4))
    want = torch.zeros(4, 4)
    want[0, 1], want[1, 2], want[3, 0], want[2, 3] = 50., 80., 90., 70.
    assert torch.equal(out[0, 0], want)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 7, 9), (3, 1, 5, 4), (1, 1, 1, 3)])
def test_max_unpool_matches_torch(shape):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=gen)
    v, idx = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)
    g = torch.randn(v.shape, generator=gen)
    want = F.max_unpool2d(g, idx, 2, 2, output_size=shape[-2:])
    assert torch.equal(max_unpool(g, idx, shape[-2:]), want)
    # unpooling the pooled values puts each maximum back where it was, zeros elsewhere
    back = max_unpool(v, idx, shape[-2:])
    nz = back != 0
    assert torch.equal(back[nz], x[nz])
    assert int(nz.sum()) == v.numel()


def test_max_unpool_gradcheck():
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64)
    v, idx = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)
    v = v.detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: max_unpool(t, idx, (6, 5)), (v,))


def test_decoder_mirrors_the_fcn_encoder():
    cfg = VGGConfig(width=4, convs=(1, 1, 2, 2, 2))
    dn, f32 = DeconvNet(3, cfg), fcn32s(3, config=cfg)
    enc = [p.shape for p in dn.encoder.parameters()]
    assert enc == [p.shape for p in f32.backbone.blocks.parameters()]
    # decoder block b holds as many transposed convolutions as encoder block b holds convolutions
    for b in range(5):
        n_t = sum(isinstance(m, torch.nn.ConvTranspose2d) for m in dn.decoder[b].modules())
        assert n_t == cfg.convs[b]


def test_bad_inputs():
    model = deconvnet(11, width=4)
    with pytest.raises(ValueError, match="smaller than 32x32"):
        model(torch.rand(1, 3, 20, 64))
    with pytest.raises(ValueError, match="same shape"):
        max_unpool(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3, dtype=torch.long), (4, 4))
    with pytest.raises(ValueError, match="indices must lie"):
        max_unpool(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 20, dtype=torch.long), (4, 4))
    with pytest.raises(ValueError, match="num_classes"):
        deconvnet(num_classes=0)
