"""The self-checks of lessons 03 and 04: the solution passes; the stub and plausible wrong answers fail, saying why."""
import importlib
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lecturelib import multiscale as ms
from lecturelib import recurrent as rc
from lecturelib.checks import lesson03, lesson04
from lecturelib.scenes import CourseScenes

ROOT = Path(__file__).resolve().parents[1]


def stub(*args, **kwargs):
    raise NotImplementedError()


def run(check, *args, capsys=None):
    ok = check(*args)
    out = capsys.readouterr().out if capsys is not None else ""
    return ok, out


# ----------------------------------------------------------------------------- lesson 03


def test_03_receptive_field(capsys):
    assert lesson03.cnn_window() == 14          # conv3 -> pool -> conv3 -> conv3 -> pool, computed by hand
    assert run(lesson03.receptive_field, lambda: 14, capsys=capsys)[0]
    ok, out = run(lesson03.receptive_field, lambda: 12, capsys=capsys)   # forgot that pooling widens the window
    assert not ok and "too small" in out and "14" not in out
    ok, out = run(lesson03.receptive_field, lambda: 18, capsys=capsys)   # the network's window incl. interpolation
    assert not ok and "too large" in out
    ok, out = run(lesson03.receptive_field, lambda: "14", capsys=capsys)
    assert not ok and "int" in out
    ok, out = run(lesson03.receptive_field, stub, capsys=capsys)
    assert not ok and "not implemented yet" in out


def pyramid_solution(x, num_scales):
    H, W = x.shape[-2:]
    return [x] + [F.interpolate(x, size=(max(1, H // 2 ** k), max(1, W // 2 ** k)), mode="bilinear",
                                align_corners=False, antialias=True) for k in range(1, num_scales)]


def pyramid_cascaded(x, num_scales):          # each level shrunk from the previous one
    levels = [x]
    for _ in range(1, num_scales):
        h, w = levels[-1].shape[-2:]
        levels.append(F.interpolate(levels[-1], size=(max(1, h // 2), max(1, w // 2)), mode="bilinear",
                                    align_corners=False, antialias=True))
    return levels


def pyramid_no_antialias(x, num_scales):
    H, W = x.shape[-2:]
    return [x] + [F.interpolate(x, size=(max(1, H // 2 ** k), max(1, W // 2 ** k)), mode="bilinear",
                                align_corners=False) for k in range(1, num_scales)]


def pyramid_rounded(x, num_scales):           # sizes rounded instead of floored, no 1-pixel floor
    H, W = x.shape[-2:]
    return [x] + [F.interpolate(x, size=(round(H / 2 ** k), round(W / 2 ** k)), mode="bilinear",
                                align_corners=False, antialias=True) for k in range(1, num_scales)]


def pyramid_numpy(x, num_scales):             # right values, but the gradient is lost
    return [torch.from_numpy(level.detach().numpy()) for level in pyramid_solution(x, num_scales)]


def pyramid_reference(x, num_scales):
    return ms.image_pyramid(x, num_scales)


def test_03_pyramid(capsys):
    assert run(lesson03.pyramid, pyramid_solution, capsys=capsys)[0]
    for wrong, words in [(pyramid_cascaded, "level"), (pyramid_no_antialias, "level 1"),
                         (pyramid_rounded, ""), (pyramid_numpy, "gradient"), (stub, "not implemented yet")]:
        ok, out = run(lesson03.pyramid, wrong, capsys=capsys)
        assert not ok and words in out, (wrong.__name__, out)


def test_03_pyramid_refuses_the_reference(capsys):
    assert not run(lesson03.pyramid, ms.image_pyramid, capsys=capsys)[0]
    assert not run(lesson03.pyramid, pyramid_reference, capsys=capsys)[0]


def vote_solution(labels, segments):
    out = np.empty_like(labels)
    for s in np.unique(segments):
        inside = segments == s
        out[inside] = np.bincount(labels[inside]).argmax()
    return out


def vote_larger_on_ties(labels, segments):
    out = np.empty_like(labels)
    for s in np.unique(segments):
        inside = segments == s
        counts = np.bincount(labels[inside])
        out[inside] = len(counts) - 1 - counts[::-1].argmax()
    return out


def vote_consecutive_ids(labels, segments):   # assumes ids 0 .. S-1
    out = np.empty_like(labels)
    for s in range(segments.max()):
        inside = segments == s
        out[inside] = np.bincount(labels[inside]).argmax()
    return out


def test_03_majority_vote(capsys):
    assert run(lesson03.majority_vote, vote_solution, capsys=capsys)[0]
    for wrong, words in [(vote_larger_on_ties, "tie"), (vote_consecutive_ids, ""), (stub, "not implemented yet")]:
        ok, out = run(lesson03.majority_vote, wrong, capsys=capsys)
        assert not ok and words in out, (wrong.__name__, out)


@pytest.fixture(scope="module")
def small_multiscale():
    torch.manual_seed(0)
    model = ms.MultiScaleNet(ms.MultiScaleConfig(num_scales=3, width=4, hidden=8)).eval()
    return model, CourseScenes("test", n=6, size=32)


def test_03_scale_ablation(small_multiscale, capsys):
    model, scenes = small_multiscale
    measured = lesson03.scale_ablation(lambda f: [*f[:-1], torch.zeros_like(f[-1])], model, scenes, n=4)
    out = capsys.readouterr().out
    assert measured is not None and "without coarsest scale" in out, out
    assert set(measured["drop"]) == {"all", "small", "medium", "large"}
    for b, d in measured["drop"].items():
        assert d == pytest.approx(measured["intact"][b] - measured["ablated"][b])
    assert len(measured["class_drop"]) == 11
    for wrong, words in [(lambda f: f[:-1], "number of feature maps"),                       # dropped, not zeroed
                         (lambda f: [torch.zeros_like(f[0]), *f[1:]], "scale 0"),            # the finest zeroed
                         (lambda f: f, "still carries features"),
                         (stub, "not implemented yet")]:
        assert lesson03.scale_ablation(wrong, model, scenes, n=4) is None
        assert words in capsys.readouterr().out


def test_03_most_hurt_bucket(capsys):
    measured = {"drop": {"all": 0.05, "small": 0.002, "medium": 0.01, "large": 0.08}}
    assert run(lesson03.most_hurt_bucket, lambda m: "large", measured, capsys=capsys)[0]
    for answer in ["small", "all", "Large"]:
        ok, out = run(lesson03.most_hurt_bucket, lambda m, a=answer: a, measured, capsys=capsys)
        assert not ok, answer
    ok, out = run(lesson03.most_hurt_bucket, lambda m: "large", None, capsys=capsys)
    assert not ok and "run the ablation above first" in out
    assert not run(lesson03.most_hurt_bucket, stub, measured, capsys=capsys)[0]


# ----------------------------------------------------------------------------- lesson 04


def test_04_receptive_field(capsys):
    truth = lesson04.window_after(3)
    assert truth > 2 * lesson04.window_after(1)
    assert run(lesson04.receptive_field, lambda: truth, capsys=capsys)[0]
    assert run(lesson04.receptive_field, lambda: 3 * 42 - 2, capsys=capsys)[0]   # windows add up: within 15 %
    ok, out = run(lesson04.receptive_field, lambda: 42, capsys=capsys)           # the window does not grow
    assert not ok and "too small" in out and str(truth) not in out
    ok, out = run(lesson04.receptive_field, lambda: 42 * 4, capsys=capsys)       # the window doubles per iteration
    assert not ok and "too large" in out
    assert not run(lesson04.receptive_field, stub, capsys=capsys)[0]


def step_solution(cnn, image, prev_logits):
    return cnn(torch.cat([image - 0.5, prev_logits.softmax(dim=1)], dim=1))


def step_logits(cnn, image, prev_logits):                 # feeds logits, not probabilities
    return cnn(torch.cat([image - 0.5, prev_logits], dim=1))


def step_uncentred(cnn, image, prev_logits):
    return cnn(torch.cat([image, prev_logits.softmax(dim=1)], dim=1))


def step_swapped(cnn, image, prev_logits):                # probabilities before the image
    return cnn(torch.cat([prev_logits.softmax(dim=1), image - 0.5], dim=1))


def step_detached(cnn, image, prev_logits):               # no gradient through the iterations
    return cnn(torch.cat([image - 0.5, prev_logits.detach().softmax(dim=1)], dim=1))


def step_reference(cnn, image, prev_logits):
    return rc.refinement_step(cnn, image, prev_logits)


def test_04_refinement_step(capsys):
    assert run(lesson04.refinement_step, step_solution, capsys=capsys)[0]
    for wrong, words in [(step_logits, "logits"), (step_uncentred, "logits"), (step_swapped, "logits"),
                         (step_detached, "prev_logits"), (stub, "not implemented yet")]:
        ok, out = run(lesson04.refinement_step, wrong, capsys=capsys)
        assert not ok and words in out, (wrong.__name__, out)
    assert not run(lesson04.refinement_step, rc.refinement_step, capsys=capsys)[0]
    assert not run(lesson04.refinement_step, step_reference, capsys=capsys)[0]


def loss_solution(logits_per_iteration, target):
    return torch.stack([F.cross_entropy(lg, target, ignore_index=255) for lg in logits_per_iteration]).mean()


def loss_sum(logits_per_iteration, target):
    return torch.stack([F.cross_entropy(lg, target, ignore_index=255) for lg in logits_per_iteration]).sum()


def loss_last(logits_per_iteration, target):
    return F.cross_entropy(logits_per_iteration[-1], target, ignore_index=255)


def loss_no_ignore(logits_per_iteration, target):
    return torch.stack([F.cross_entropy(lg, target.clamp(max=lg.shape[1] - 1)) for lg in logits_per_iteration]).mean()


def test_04_unrolled_loss(capsys):
    assert run(lesson04.unrolled_loss, loss_solution, capsys=capsys)[0]
    for wrong in [loss_sum, loss_last, loss_no_ignore, stub]:
        ok, out = run(lesson04.unrolled_loss, wrong, capsys=capsys)
        assert not ok, wrong.__name__
    assert not run(lesson04.unrolled_loss, rc.unrolled_loss, capsys=capsys)[0]


@pytest.fixture(scope="module")
def small_recurrent():
    torch.manual_seed(0)
    model = rc.RecurrentRefiner(rc.RefinementConfig(width=4, hidden=8)).eval()
    x, y = CourseScenes("test", n=4, size=32).tensors()
    return model, x, y


def iterate_solution(model, images, iterations):
    logits, outs = model.initial_logits(images), []
    for _ in range(iterations):
        logits = rc.refinement_step(model.cnn, images, logits)
        outs.append(logits)
    return outs


def iterate_no_feedback(model, images, iterations):      # every iteration from uniform probabilities
    return [rc.refinement_step(model.cnn, images, model.initial_logits(images)) for _ in range(iterations)]


def test_04_iterations_ablation(small_recurrent, capsys):
    model, x, y = small_recurrent
    measured = lesson04.iterations_ablation(iterate_solution, model, x, y, max_iterations=5)
    out = capsys.readouterr().out
    assert measured is not None and len(measured["miou"]) == 5 and "boundary acc" in out
    for wrong, words in [(iterate_no_feedback, "iteration 2"), (lambda m, x, k: iterate_solution(m, x, k)[-1:],
                                                                "number of logit maps"),
                         (stub, "not implemented yet")]:
        assert lesson04.iterations_ablation(wrong, model, x, y, max_iterations=5) is None
        assert words in capsys.readouterr().out


def test_04_where_the_gain_is(capsys):
    measured = {"miou": [0.30, 0.33, 0.335, 0.34, 0.338], "boundary_acc": [0.5] * 5}
    assert run(lesson04.where_the_gain_is, lambda m: {"best": 4, "largest_gain_at": 2}, measured, capsys=capsys)[0]
    for answer, words in [({"best": 3, "largest_gain_at": 2}, "'best'"),         # the trained number, not the best
                          ({"best": 4, "largest_gain_at": 4}, "'largest_gain_at'"),
                          ({"best": 4}, "keys"), (4, "keys")]:
        ok, out = run(lesson04.where_the_gain_is, lambda m, a=answer: a, measured, capsys=capsys)
        assert not ok and words in out, (answer, out)
    ok, out = run(lesson04.where_the_gain_is, lambda m: {"best": 4, "largest_gain_at": 2}, None, capsys=capsys)
    assert not ok and "first" in out
    assert not run(lesson04.where_the_gain_is, stub, measured, capsys=capsys)[0]


# ----------------------------------------------------------------------------- both


@pytest.mark.parametrize("module, notebook", [(lesson03, "03_multiscale.ipynb"),
                                              (lesson04, "04_recurrent_refinement.ipynb")])
def test_references_are_the_exercises(module, notebook):
    """Every implement exercise of the notebook names its reference, and every reference exists in lecturelib."""
    nb = nbformat.read(ROOT / "notebooks" / notebook, as_version=4)
    solved = {line.split("(")[0][4:] for c in nb.cells if "solution" in c.metadata.get("tags", [])
              for line in c.source.splitlines() if line.startswith("def ")}
    assert set(module.REFERENCES) <= solved
    for path in module.REFERENCES.values():
        mod, name = path.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(mod), name))
