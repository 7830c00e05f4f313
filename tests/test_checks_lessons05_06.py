"""The self-checks of lessons 05 and 06: right answers pass, the stub and plausible wrong answers fail, each with a
message that names what is wrong; the ablation checks verify the change and return the measurement."""
import pytest
import torch
import torch.nn.functional as F

from lecturelib import deconvnet
from lecturelib import transposed as T
from lecturelib.checks import FAIL, PASS
from lecturelib.checks import lesson05 as c5
from lecturelib.checks import lesson06 as c6
from lecturelib.frames import phase_counts
from lecturelib.upsampling import bilinear_kernel


def not_written(*args):
    raise NotImplementedError


def outcome(capsys, ok: bool, *needles: str) -> str:
    out = capsys.readouterr().out
    assert (PASS in out) == ok and (FAIL in out) != ok, out
    for needle in needles:
        assert needle in out, out
    return out


# ============================================================================ lesson 05
def test_output_size_prediction(capsys):
    right = [T.conv_transpose_output_size(*case) for case in c5.OUTPUT_SIZE_QUESTIONS]
    assert c5.output_sizes(lambda: list(right))
    outcome(capsys, True)
    no_crop = [(n - 1) * s + k + op for n, k, s, p, op in c5.OUTPUT_SIZE_QUESTIONS]     # forgot that padding crops
    assert not c5.output_sizes(lambda: no_crop)
    out = outcome(capsys, False, "setting 2", "too high")
    assert "expected" not in out                                                         # never prints the answer
    one_side = [r + p for r, (n, k, s, p, op) in zip(right, c5.OUTPUT_SIZE_QUESTIONS)]  # cropped one side only
    assert not c5.output_sizes(lambda: one_side)
    outcome(capsys, False, "too high")
    assert not c5.output_sizes(lambda: right[:-1])
    outcome(capsys, False, "list of 5 ints")
    assert not c5.output_sizes(not_written)
    outcome(capsys, False, "not implemented yet")


def test_uneven_overlap_prediction(capsys):
    uneven = {(k, s) for k, s in c5.OVERLAP_QUESTIONS if len(set(phase_counts(k, s))) > 1}
    assert c5.uneven_overlap(lambda: set(uneven))
    assert c5.uneven_overlap(lambda: sorted(uneven))                                  # any iterable of pairs
    outcome(capsys, True)
    odd_kernels = {(k, s) for k, s in c5.OVERLAP_QUESTIONS if k % 2 == 1}                # "odd kernels are uneven"
    assert not c5.uneven_overlap(lambda: odd_kernels)
    out = outcome(capsys, False, "chose overlap evenly", "that overlap unevenly")
    assert "(k=" not in out and "k=3" not in out                     # counts only: no pair's answer given away
    assert not c5.uneven_overlap(lambda: uneven | {(7, 7)})
    outcome(capsys, False, "not among the pairs")
    assert not c5.uneven_overlap(lambda: 3)
    outcome(capsys, False, "set of (kernel_size, stride) pairs")


def right_scatter(x, w, stride, padding):
    H, W = x.shape
    k = w.shape[0]
    full = torch.zeros((H - 1) * stride + k, (W - 1) * stride + k, dtype=x.dtype)
    for i in range(H):
        for j in range(W):
            full[i * stride:i * stride + k, j * stride:j * stride + k] += x[i, j] * w
    return full[padding:full.shape[0] - padding, padding:full.shape[1] - padding]


def right_autograd(x, w, stride, padding, output_padding):
    k = w.shape[0]
    out = [(n - 1) * stride - 2 * padding + k + output_padding for n in x.shape]
    z = torch.zeros(1, 1, *out, dtype=x.dtype, requires_grad=True)
    y = F.conv2d(z, w[None, None], stride=stride, padding=padding)[0, 0]
    return torch.autograd.grad((y * x).sum(), z)[0][0, 0]


def test_scatter_check(capsys):
    assert c5.scatter(right_scatter)
    outcome(capsys, True)
    assert not c5.scatter(lambda x, w, s, p: right_scatter(x, w.flip(0, 1), s, p))      # the gather view's flip
    outcome(capsys, False, "wrong value at", "expected")
    assert not c5.scatter(lambda x, w, s, p: right_scatter(x, w, s, 0)[: x.shape[0] * s, : x.shape[1] * s])
    outcome(capsys, False, "shape")
    assert not c5.scatter(lambda x, w, s, p: right_scatter(x, w, s, p).detach())          # no gradient
    outcome(capsys, False, "no gradient flows")
    # the course's answer or PyTorch's, under any name, is refused
    assert not c5.scatter(lambda x, w, s, p: T.conv_transpose_scatter(x[None, None], w[None, None], stride=s,
                                                                       padding=p)[0, 0])
    outcome(capsys, False, "conv_transpose_scatter")
    assert not c5.scatter(lambda x, w, s, p: F.conv_transpose2d(x[None, None], w[None, None], stride=s,
                                                                 padding=p)[0, 0])
    outcome(capsys, False, "conv_transpose2d")
    assert not c5.scatter(not_written)
    outcome(capsys, False, "not implemented yet")


def test_backward_pass_check(capsys):
    assert c5.backward_pass(right_autograd)
    outcome(capsys, True)
    assert not c5.backward_pass(lambda x, w, s, p, op: right_autograd(x, w, s, p, 0))   # ignores output_padding
    outcome(capsys, False, "output_padding", "shape")
    assert not c5.backward_pass(lambda x, w, s, p, op: right_autograd(x, w.flip(0, 1), s, p, op))
    outcome(capsys, False, "wrong value at")
    assert not c5.backward_pass(lambda x, w, s, p, op: T.conv_transpose_autograd(
        x[None, None], w[None, None], stride=s, padding=p, output_padding=op)[0, 0])
    outcome(capsys, False, "conv_transpose_autograd")
    assert not c5.backward_pass(not_written)
    outcome(capsys, False, "not implemented yet")


# ============================================================================ lesson 06
def test_map_size_prediction(capsys):
    truth = c6.true_map_sizes()
    assert truth["fc7 x2"] == tuple(2 * v for v in truth["fc7"])
    assert c6.map_sizes(lambda: dict(truth))
    outcome(capsys, True)
    floor = {k: (c6.MAP_SIZE_INPUT[0] // s, c6.MAP_SIZE_INPUT[1] // s)                 # pools rounding down
             for k, s in (("pool3", 8), ("pool4", 16), ("fc7", 32))}
    floor["fc7 x2"] = tuple(2 * v for v in floor["fc7"])
    assert not c6.map_sizes(lambda: floor)
    outcome(capsys, False, "pool3 rows", "too low", "ceil_mode")
    cropped = {**truth, "fc7 x2": truth["pool4"]}                                      # the crop done too early
    assert not c6.map_sizes(lambda: cropped)
    out = outcome(capsys, False, "fc7 x2 rows", "too low")
    assert "pool3" not in out.split("Hint")[0]
    assert not c6.map_sizes(lambda: [truth[k] for k in c6.MAP_KEYS])
    outcome(capsys, False, "dict with the keys")
    assert not c6.map_sizes(not_written)
    outcome(capsys, False, "not implemented yet")


def remove_pool3(model):
    with torch.no_grad():
        model.head.score_pool3.weight.zero_()
        model.head.score_pool3.bias.zero_()


def bilinear_ups(model):
    with torch.no_grad():
        for up in (model.head.up2_fr.up, model.head.up2_pool4.up):
            up.weight.copy_(bilinear_kernel(up.weight.shape[0], up.weight.shape[1], up.weight.shape[-1]))


@pytest.fixture(scope="module")
def skip_measured():
    return c6.skip_ablation(remove_pool3)


def test_skip_ablation_measures_the_change_and_refuses_other_changes(capsys, skip_measured):
    capsys.readouterr()
    m = c6.skip_ablation(remove_pool3)
    outcome(capsys, True, "FCN-8s without pool3", "FCN-16s", "IoU per class", "boundary acc")
    assert set(m) == {"FCN-8s", c6.ABLATED_SKIP, "FCN-16s"}
    assert m == skip_measured                                             # deterministic
    assert m["FCN-8s"]["miou"] != m[c6.ABLATED_SKIP]["miou"]
    assert set(m["FCN-8s"]["iou"]) == set(c6.CLASS_NAMES)

    def weight_only(model):                                               # the bias still adds the skip's prior
        with torch.no_grad():
            model.head.score_pool3.weight.zero_()

    def wrong_layer(model):
        with torch.no_grad():
            model.head.score_pool4.weight.zero_()
            model.head.score_pool4.bias.zero_()

    def and_more(model):
        remove_pool3(model)
        with torch.no_grad():
            model.head.score_fr.bias.add_(1.0)

    for change, needle in [(weight_only, "score_pool3.bias"), (wrong_layer, "score_pool3.weight"),
                           (and_more, "you also changed head.score_fr.bias"), (not_written, "not implemented")]:
        assert c6.skip_ablation(change) is None
        outcome(capsys, False, needle)


def test_skip_answer(capsys, skip_measured):
    truth = max(c6.SKIP_LABELS, key=lambda n: skip_measured[n]["miou"])
    wrong = next(label for label in c6.SKIP_LABELS if label != truth)
    assert c6.skip_answer(lambda m: truth, skip_measured)
    outcome(capsys, True)
    assert not c6.skip_answer(lambda m: wrong, skip_measured)
    outcome(capsys, False, "not what the measurement above says")
    assert not c6.skip_answer(lambda m: "FCN-8s", skip_measured)
    outcome(capsys, False, "answer with one of")
    assert not c6.skip_answer(lambda m: truth, None)
    outcome(capsys, False, "run the ablation above first")
    # the truth follows the measurement, not a stored answer
    flipped = {k: dict(v) for k, v in skip_measured.items()}
    flipped[truth]["miou"], flipped[wrong]["miou"] = skip_measured[wrong]["miou"], skip_measured[truth]["miou"]
    assert c6.skip_answer(lambda m: wrong, flipped)
    outcome(capsys, True)


def test_upsampler_ablation_and_answer(capsys):
    m = c6.upsampler_ablation(bilinear_ups)
    outcome(capsys, True, c6.BILINEAR)
    assert set(m) == {"FCN-8s", c6.BILINEAR}
    boundary = m["FCN-8s"]["boundary_acc"] - m[c6.BILINEAR]["boundary_acc"]
    miou = m["FCN-8s"]["miou"] - m[c6.BILINEAR]["miou"]
    truth = "boundary" if boundary > miou else "classes"
    assert c6.upsampler_answer(lambda measured: truth, m)
    outcome(capsys, True)
    assert not c6.upsampler_answer(lambda measured: ({"boundary", "classes"} - {truth}).pop(), m)
    outcome(capsys, False, "not what the measurement above says")
    assert not c6.upsampler_answer(not_written, m)
    outcome(capsys, False, "not implemented yet")

    def one_only(model):                                                  # only the first x2 layer reset
        with torch.no_grad():
            up = model.head.up2_fr.up
            up.weight.copy_(bilinear_kernel(up.weight.shape[0], up.weight.shape[1], up.weight.shape[-1]))

    def identity_kernel(model):                                           # "bilinear" without the tent
        with torch.no_grad():
            for up in (model.head.up2_fr.up, model.head.up2_pool4.up):
                up.weight.zero_()
                for c in range(up.weight.shape[0]):
                    up.weight[c, c, 1:3, 1:3] = 1.0

    for change, needle in [(one_only, "up2_pool4"), (identity_kernel, "up2_fr.up.weight")]:
        assert c6.upsampler_ablation(change) is None
        outcome(capsys, False, needle)


def right_unpool(values, indices, size):
    N, C = values.shape[:2]
    H, W = size
    out = values.new_zeros(N, C, H * W).scatter(2, indices.reshape(N, C, -1), values.reshape(N, C, -1))
    return out.reshape(N, C, H, W)


def test_unpool_check(capsys):
    assert c6.unpool(right_unpool)
    outcome(capsys, True)

    def even_width(values, indices, size):            # reads the switch with the pooled width doubled: wrong for odd W
        N, C, h, w = values.shape
        H, W = size
        r, c = indices // (2 * w), indices % (2 * w)
        return right_unpool(values, (r * W + c).clamp(max=H * W - 1), size)

    def top_left(values, indices, size):              # ignores the switches: every value at its window's corner
        N, C, h, w = values.shape
        H, W = size
        r = torch.arange(h).repeat_interleave(w) * 2
        c = torch.arange(w).repeat(h) * 2
        return right_unpool(values, (r * W + c).expand(N, C, -1).reshape(N, C, h, w), size)

    for student, needle in [(even_width, "unpooling of a (2, 3, 7, 5) map"), (top_left, "wrong value at"),
                            (lambda v, i, s: right_unpool(v, i, s).detach(), "no gradient"),
                            (lambda v, i, s: F.max_unpool2d(v, i, 2, 2, output_size=s), "max_unpool2d"),
                            (lambda v, i, s: deconvnet.max_unpool(v, i, s), "max_unpool"),
                            (not_written, "not implemented yet")]:
        assert not c6.unpool(student)
        outcome(capsys, False, needle)


def test_checks_leave_the_global_rng_alone():
    state = torch.random.get_rng_state()
    c6.map_sizes(lambda: c6.true_map_sizes())
    c6.upsampler_ablation(bilinear_ups)
    c5.scatter(right_scatter)
    assert torch.equal(state, torch.random.get_rng_state())


def test_references_name_the_course_functions():
    import importlib

    for module in (c5, c6):
        for name, dotted in module.REFERENCES.items():
            assert name.startswith("my_")
            mod, attr = dotted.rsplit(".", 1)
            assert callable(getattr(importlib.import_module(mod), attr))
