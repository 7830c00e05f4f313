"""lecturelib.transposed: the three views of transposed convolution against PyTorch, hand examples, bad input."""
import random

import pytest
import torch
import torch.nn.functional as F

from lecturelib import transposed as T
from lecturelib.tasks import UpsamplingTask
from lecturelib.training import fit, train_config

VIEWS = ["scatter", "gather", "gather_skip_zeros", "matrix", "autograd"]


def random_case(rng: random.Random):
    """A random valid (x, weight, bias, stride, padding, output_padding, dilation, groups) in float64."""
    while True:
        groups = rng.choice([1, 1, 2, 3])
        c_in, c_out_g = groups * rng.randint(1, 2), rng.randint(1, 3)
        k = (rng.randint(1, 4), rng.randint(1, 4))
        s = (rng.randint(1, 3), rng.randint(1, 3))
        d = (rng.randint(1, 3), rng.randint(1, 2))
        p = (rng.randint(0, 3), rng.randint(0, 3))
        op = tuple(rng.randint(0, max(s[a], d[a]) - 1) for a in range(2))
        hw = (rng.randint(1, 5), rng.randint(1, 5))
        out = [(hw[a] - 1) * s[a] - 2 * p[a] + d[a] * (k[a] - 1) + op[a] + 1 for a in range(2)]
        if min(out) >= 1:
            break
    x = torch.randn(rng.randint(1, 2), c_in, *hw, dtype=torch.float64)
    w = torch.randn(c_in, c_out_g, *k, dtype=torch.float64)
    b = torch.randn(c_out_g * groups, dtype=torch.float64) if rng.random() < 0.5 else None
    return x, w, b, s, p, op, d, groups


@pytest.mark.parametrize("view", VIEWS)
def test_views_equal_pytorch_on_random_cases(view):
    rng = random.Random(1234)
    torch.manual_seed(0)
    for _ in range(200):
        x, w, b, s, p, op, d, g = random_case(rng)
        want = F.conv_transpose2d(x, w, b, s, p, op, g, d)
        got = T.conv_transpose(x, w, b, s, p, op, d, g, view=view)
        assert got.shape == want.shape, (s, p, op, d, g)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_views_equal_gradient_of_conv2d_with_respect_to_its_input():
    """Same as the backward pass of a normal convolution: autograd's own gradient, not our helper."""
    rng = random.Random(7)
    for _ in range(100):
        x, w, _, s, p, op, d, g = random_case(rng)
        out_hw = [T.conv_transpose_output_size(x.shape[2 + a], w.shape[2 + a], s[a], p[a], op[a], d[a])
                  for a in range(2)]
        z = torch.randn(x.shape[0], w.shape[1] * g, *out_hw, dtype=torch.float64, requires_grad=True)
        y = F.conv2d(z, w, None, s, p, d, g)[:, :, :x.shape[2], :x.shape[3]]
        y.backward(x)
        for view in ("scatter", "gather", "matrix"):
            torch.testing.assert_close(T.conv_transpose(x, w, None, s, p, op, d, g, view=view), z.grad,
                                       rtol=0, atol=1e-10)


def test_conv_matrix_is_the_convolution():
    rng = random.Random(3)
    for _ in range(60):
        g = rng.choice([1, 2])
        w = torch.randn(g * rng.randint(1, 2), rng.randint(1, 2), rng.randint(1, 3), rng.randint(1, 3),
                        dtype=torch.float64)
        s, p, d = rng.randint(1, 3), rng.randint(0, 2), rng.randint(1, 2)
        H, W = rng.randint(d * (w.shape[2] - 1) + 1, 7), rng.randint(d * (w.shape[3] - 1) + 1, 7)
        x = torch.randn(w.shape[1] * g, H, W, dtype=torch.float64)
        want = F.conv2d(x[None], w, None, s, p, d, g)[0]
        C = T.conv_matrix(w, (H, W), s, p, d, g)
        assert C.shape == (want.numel(), x.numel())
        torch.testing.assert_close(C @ x.reshape(-1), want.reshape(-1), rtol=0, atol=1e-10)


def test_hand_computed_ones_example():
    """2x2 ones, 3x3 kernel of ones, stride 2, pad 1: the counts of overlapping writes."""
    x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    w = torch.ones(1, 1, 3, 3, dtype=torch.float64)
    want = torch.tensor([[1., 2, 1], [2, 4, 2], [1, 2, 1]], dtype=torch.float64)
    want_op = torch.tensor([[1., 2, 1, 1], [2, 4, 2, 2], [1, 2, 1, 1], [1, 2, 1, 1]], dtype=torch.float64)
    for view in VIEWS:
        assert torch.equal(T.conv_transpose(x, w, stride=2, padding=1, view=view)[0, 0], want)
        assert torch.equal(T.conv_transpose(x, w, stride=2, padding=1, output_padding=1, view=view)[0, 0], want_op)


def test_hand_computed_scatter_numbers():
    """x = [[1, 2]], w = [[1, 10, 100]], stride 2: 1*w at columns 0..2, 2*w at columns 2..4, overlap summed."""
    x = torch.tensor([[[[1.0, 2.0]]]], dtype=torch.float64)
    w = torch.tensor([[[[1.0, 10.0, 100.0]]]], dtype=torch.float64)
    for view in VIEWS:
        y = T.conv_transpose(x, w, stride=2, view=view)[0, 0, 0]
        assert y.tolist() == [1.0, 10.0, 102.0, 20.0, 200.0]
        assert T.conv_transpose(x, w, stride=(1, 2), padding=(0, 1), view=view)[0, 0, 0].tolist() == [10.0, 102.0, 20.0]


def test_gather_input_shows_zero_insertion_and_padding():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    z = T.gather_input(x, 3, stride=2, padding=1)          # pad d(k-1)-p = 1
    assert z.shape == (1, 1, 5, 5)
    assert z[0, 0].tolist() == [[0, 0, 0, 0, 0], [0, 1, 0, 2, 0], [0, 0, 0, 0, 0], [0, 3, 0, 4, 0], [0, 0, 0, 0, 0]]
    assert T.gather_input(x, 3, stride=2, padding=2).shape == (1, 1, 3, 3)     # pad 0
    assert T.gather_input(x, 3, stride=2, padding=3)[0, 0].tolist() == [[0.0]]  # pad -1: cropped
    assert T.gather_padding(3, 1) == 1 and T.gather_padding(4, 1, dilation=2) == 5
    assert T.zero_insert(x, 3).shape == (1, 1, 4, 4)


def test_output_size_formula_matches_pytorch():
    rng = random.Random(5)
    for _ in range(400):
        n, k, s, p = rng.randint(1, 6), rng.randint(1, 5), rng.randint(1, 4), rng.randint(0, 4)
        op, d = rng.randint(0, 3), rng.randint(1, 3)
        x, w = torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k)
        try:
            want = F.conv_transpose2d(x, w, None, s, p, op, 1, d).shape[-1]
        except RuntimeError:
            want = 0
        if want < 1:  # PyTorch rejects these settings or returns an empty output: we explain why
            with pytest.raises(ValueError):
                T.conv_transpose_output_size(n, k, s, p, op, d)
            continue
        assert T.conv_transpose_output_size(n, k, s, p, op, d) == want
    assert T.conv_transpose_output_size(2, 3, 2, 1) == 3
    assert T.conv_transpose_output_size(2, 3, 2, 1, 1) == 4
    assert T.conv_output_size(4, 3, 1, 1) == 4 and T.conv_output_size(4, 3, 2, 1) == 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=0, kernel_size=3), "input size n must be >= 1"),
    (dict(n=2, kernel_size=3, stride=0), "stride must be >= 1"),
    (dict(n=2, kernel_size=3, padding=-1), "padding must be >= 0"),
    (dict(n=2, kernel_size=3, stride=2, output_padding=2), "output_padding .2. must be smaller than stride"),
    (dict(n=1, kernel_size=1, padding=1), "use padding <= 0"),
    # the full output counts output_padding, so its size minus the crop is the output it reports: 6 - 6 = 0
    (dict(n=2, kernel_size=3, stride=2, padding=3, output_padding=1),
     "crops 6 cells from a 6-cell full output, leaving an output of 0 cells; use padding <= 2"),
    (dict(n=2.0, kernel_size=3), "must be an int"),
])
def test_output_size_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        T.conv_transpose_output_size(**kwargs)


def test_bad_inputs_have_clear_messages():
    x, w = torch.zeros(1, 2, 3, 3), torch.zeros(2, 1, 3, 3)
    with pytest.raises(ValueError, match="add a batch dimension"):
        T.conv_transpose_gather(x[0], w)
    with pytest.raises(ValueError, match="weight expects 2"):
        T.conv_transpose_scatter(torch.zeros(1, 3, 3, 3), w)
    with pytest.raises(ValueError, match="groups=4 must divide"):
        T.conv_transpose_matrix(torch.zeros(1, 2, 3, 3), w, groups=4)
    with pytest.raises(ValueError, match="stride must be an int or a pair"):
        T.conv_transpose_gather(x, w, stride=(1, 2, 3))
    with pytest.raises(ValueError, match="bias must have shape"):
        T.conv_transpose_gather(x, w, bias=torch.zeros(3))
    with pytest.raises(KeyError, match="unknown view"):
        T.conv_transpose(x, w, view="fourier")
    with pytest.raises(ValueError, match="kernel .* does not fit"):
        T.conv_output_size(2, 5)


def test_gather_gradcheck_and_float32_autograd():
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: T.conv_transpose_gather(a, b, stride=2, padding=1), (x, w))
    xf, wf = x.detach().float().requires_grad_(), w.detach().float().requires_grad_()
    y = T.conv_transpose_scatter(xf, wf, stride=2, padding=1, output_padding=1)
    y.square().mean().backward()
    assert y.shape == (1, 2, 6, 6) and torch.isfinite(xf.grad).all() and torch.isfinite(wf.grad).all()


def test_overlap_counts_against_independent_count():
    for n, k, s, p, op, d in [(4, 3, 2, 1, 1, 1), (3, 4, 2, 1, 0, 1), (5, 3, 3, 0, 2, 1), (3, 2, 1, 0, 0, 2)]:
        counts = T.overlap_counts(n, k, s, p, op, d)
        out = T.conv_transpose_output_size(n, k, s, p, op, d)
        c1 = [sum(1 for i in range(n) for a in range(k) if i * s + a * d - p == o) for o in range(out)]
        assert counts.tolist() == [[u * v for v in c1] for u in c1]
    interior = T.overlap_counts(6, 3, 2, 1, 1)[1:-1, 1:-1]
    assert set(interior.unique().tolist()) == {1, 2, 4}          # k=3, s=2: uneven -> checkerboard
    assert T.overlap_counts(6, 4, 2, 1)[1:-1, 1:-1].unique().tolist() == [4]   # k=4, s=2: even


def test_checkerboard_energy():
    i = torch.arange(8)
    board = ((i[:, None] + i[None, :]) % 2).double()[None, None]
    assert T.checkerboard_energy(board) == pytest.approx(1.0)
    smooth = (i[:, None] * 1.0 + i[None, :]).double()[None, None]
    assert T.checkerboard_energy(smooth) < 0.1
    with pytest.raises(ValueError, match="divisible by period"):
        T.checkerboard_energy(torch.zeros(1, 1, 5, 6))


def test_upsamplers_shapes_and_training_step():
    torch.manual_seed(0)
    low, high = torch.rand(8, 3, 8, 8), torch.rand(8, 3, 16, 16)
    for model in (T.DeconvUpsampler(4), T.DeconvUpsampler(4, kernel_size=4), T.ResizeConvUpsampler(4)):
        y = model(low)
        assert y.shape == (8, 3, 16, 16) and torch.isfinite(y).all()
        recipe = T.UpsamplerConfig(width=4, crop=None, epochs=3, batch_size=4)
        hist = fit(model, UpsamplingTask(recipe, high, high), train_config(recipe, progress=False), "cpu")
        assert hist.steps == 3 * 2 and all(map(lambda v: v == v, hist.train_loss)) and hist.final["psnr"] > 0
        assert T.predict(model, low, torch.device("cpu"), batch_size=3).shape == (8, 3, 16, 16)
    assert T.psnr(high, high) > 100
    with pytest.raises(ValueError, match="must be even"):
        UpsamplingTask(T.UpsamplerConfig(crop=None), torch.rand(2, 3, 7, 8))
    with pytest.raises(ValueError, match="crop"):
        T.UpsamplerConfig(crop=3)
