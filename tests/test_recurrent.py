"""Tests of lecturelib.recurrent: the plain network at iteration 1, shared weights, shapes, determinism."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from lecturelib.multiscale import empirical_receptive_field
from lecturelib.recurrent import (
    RecurrentRefiner,
    RefinementConfig,
    evaluate_iterations,
    flops_per_iteration,
    refinement_step,
    unrolled_loss,
)
from lecturelib.tasks import RecurrentTask
from lecturelib.training import fit, train_config

CFG = RefinementConfig(num_classes=4, width=4, hidden=8, train_iterations=3, epochs=1, batch_size=4)


def _model(seed=0):
    torch.manual_seed(seed)
    return RecurrentRefiner(CFG).eval()


def test_one_iteration_is_the_plain_network():
    model = _model()
    x = torch.rand(2, 3, 24, 20)
    uniform = torch.full((2, 4, 24, 20), 0.25)
    plain = model.cnn(torch.cat([x - 0.5, uniform], 1))
    assert torch.allclose(model(x, iterations=1)["out"], plain, atol=1e-6)


@pytest.mark.parametrize("iterations", [1, 2, 3, 5])
def test_shapes_and_determinism(iterations):
    model = _model()
    x = torch.rand(2, 3, 20, 28)
    outs = model.forward_all(x, iterations)
    assert len(outs) == iterations and all(o.shape == (2, 4, 20, 28) for o in outs)
    assert all(torch.isfinite(o).all() for o in outs)
    again = _model().forward_all(x, iterations)
    assert all(torch.equal(a, b) for a, b in zip(outs, again))
    assert torch.equal(model(x, iterations=iterations)["out"], outs[-1])


def test_iterations_are_the_same_step_repeated():
    model = _model()
    x = torch.rand(1, 3, 16, 16)
    logits = model.initial_logits(x)
    for t, out in enumerate(model.forward_all(x, 3)):
        logits = refinement_step(model.cnn, x, logits)
        assert torch.allclose(out, logits, atol=1e-6), f"iteration {t + 1}"


def test_refinement_step_uses_probabilities():
    model = _model()
    x = torch.rand(1, 3, 16, 16)
    prev = torch.randn(1, 4, 16, 16)
    assert torch.allclose(refinement_step(model.cnn, x, prev), refinement_step(model.cnn, x, prev + 7.0), atol=1e-5)


def test_gradients_flow_through_every_iteration():
    torch.manual_seed(0)
    model = RecurrentRefiner(CFG).train()
    x = torch.rand(2, 3, 16, 16)
    target = torch.randint(0, 4, (2, 16, 16))
    outs = model.forward_all(x, 3)
    loss = unrolled_loss(outs, target)
    want = sum(F.cross_entropy(o, target) for o in outs) / 3
    assert torch.allclose(loss, want)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # the last output depends on the first iteration's computation (unrolled, not detached)
    x.requires_grad_(True)
    outs = model.forward_all(x, 2)
    (g,) = torch.autograd.grad(outs[-1].sum(), outs[0])
    assert g.abs().sum() > 0


def test_receptive_field_grows_with_iterations():
    model = _model()
    rfs = [empirical_receptive_field(lambda x, k=k: model(x, iterations=k), size=256) for k in (1, 2, 3)]
    assert rfs[0] < rfs[1] < rfs[2] < 256
    assert rfs[2] >= 2 * rfs[0]


def test_features_have_output_stride_8():
    feats = _model().cnn.features(torch.rand(2, 3 + 4, 40, 24))
    assert feats.shape == (2, 8, 5, 3)


def test_flops_grow_linearly():
    flops = flops_per_iteration(_model(), 32, 3)
    assert flops[0] > 0
    assert flops[1] == 2 * flops[0] and flops[2] == 3 * flops[0]


def test_train_and_evaluate_tiny():
    torch.manual_seed(0)
    x = torch.rand(8, 3, 16, 16)
    y = (x[:, 0] > 0.5).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    model = RecurrentRefiner(CFG)
    hist = fit(model, RecurrentTask(CFG, (x, y), (x, y)), train_config(CFG, progress=False), "cpu")
    assert len(hist.train_loss) == 1 and hist.train_loss[0] > 0
    assert len(hist.final["miou_by_iteration"]) == CFG.train_iterations
    res = evaluate_iterations(model, loader, torch.device("cpu"), 4, 3)
    assert len(res) == 3 and all(0 <= r["miou"] <= 1 for r in res)


def test_bad_inputs():
    with pytest.raises(ValueError, match="iterations"):
        _model()(torch.rand(1, 3, 16, 16), iterations=0)
    with pytest.raises(ValueError, match="train_iterations"):
        RefinementConfig(train_iterations=0)
    with pytest.raises(ValueError, match="must agree"):
        refinement_step(_model().cnn, torch.rand(1, 3, 16, 16), torch.rand(1, 4, 8, 8))
    with pytest.raises(ValueError, match="H, W >= 8"):
        _model()(torch.rand(1, 3, 4, 16))
    with pytest.raises(ValueError, match="empty"):
        unrolled_loss([], torch.zeros(1, 4, 4, dtype=torch.long))
