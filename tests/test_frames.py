"""lecturelib.frames (the widget's pure functions) and the thin widget layer, without a browser."""
import io
import itertools
import random
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lecturelib import frames as fr
from lecturelib.widgets import TransposedConvExplorer, transposed_conv_explorer


def reference(st: fr.Settings, x, w) -> np.ndarray:
    return F.conv_transpose2d(torch.from_numpy(x)[None, None], torch.from_numpy(w)[None, None], None, st.stride,
                              st.padding, st.output_padding, 1, st.dilation)[0, 0].numpy()


def random_settings(rng: random.Random, count: int):
    found = 0
    while found < count:
        st = fr.Settings(rng.randint(1, 5), rng.randint(1, 4), rng.randint(1, 3), rng.randint(0, 3),
                         rng.randint(0, 2), rng.randint(1, 3))
        try:
            st.validate()
        except ValueError:
            continue
        found += 1
        yield st


def test_sum_of_all_scatter_writes_is_the_output():
    rng = random.Random(0)
    for st in random_settings(rng, 60):
        x = np.array([[rng.randint(-3, 9) for _ in range(st.in_size)] for _ in range(st.in_size)], float)
        w = np.array([[rng.randint(-2, 5) for _ in range(st.kernel_size)] for _ in range(st.kernel_size)], float)
        total = np.zeros((st.full_size, st.full_size))
        for t in range(st.in_size ** 2):
            rows, cols, vals = fr.scatter_writes(st, t, x, w)
            np.add.at(total, (rows, cols), vals)
        p, out = st.padding, st.out_size
        np.testing.assert_allclose(total[p:p + out, p:p + out], reference(st, x, w), atol=1e-12)
        last = fr.scatter_frame(st, st.in_size ** 2 - 1, x, w)
        np.testing.assert_allclose(last.output, reference(st, x, w), atol=1e-12)
        np.testing.assert_array_equal(last.counts, last.total_counts)


def test_overlap_counts_match_an_independent_count():
    rng = random.Random(1)
    for st in random_settings(rng, 40):
        n, k, s, d = st.in_size, st.kernel_size, st.stride, st.dilation
        step = rng.randrange(n * n)
        f = fr.scatter_frame(st, step)
        # independent: cell (r, c) is written by input (i, j) when r = i*s + a*d, c = j*s + b*d for some taps a, b
        one = [[sum(1 for a in range(k) if 0 <= r - i * s == a * d) for r in range(st.full_size)] for i in range(n)]
        want_total = np.zeros((st.full_size, st.full_size), np.int64)
        want_now = np.zeros_like(want_total)
        for i, j in itertools.product(range(n), range(n)):
            hits = np.outer(one[i], one[j])
            want_total += hits
            if i * n + j <= step:
                want_now += hits
        np.testing.assert_array_equal(f.total_counts, want_total)
        np.testing.assert_array_equal(f.counts, want_now)
        assert f.written.sum() == k * k and f.pixel == divmod(step, n)


def test_slide_example_frame_numbers():
    """3x3 transposed conv, stride 2, pad 1, on a 2x2 input (the slide): step 1 writes x[0,1] * w at columns 2..4."""
    st = fr.Settings(2, 3, 2, 1, 0, 1)
    f = fr.scatter_frame(st, 1)
    assert st.full_size == 5 and st.out_size == 3
    assert f.rows[:, 0].tolist() == [0, 1, 2] and f.cols[0].tolist() == [2, 3, 4]
    np.testing.assert_array_equal(f.values, 2 * fr.example_kernel(3))
    # cell (0, 2) got x[0,0]*w[0,2] + x[0,1]*w[0,0] = 1*3 + 2*1
    assert f.running[0, 2] == 5 and f.counts[0, 2] == 2


def test_gather_and_matrix_frames_equal_pytorch():
    rng = random.Random(2)
    for st in random_settings(rng, 40):
        x, w = fr.example_input(st.in_size), fr.example_kernel(st.kernel_size)
        want = reference(st, x, w)
        g = fr.gather_frame(st, st.out_size ** 2 - 1)
        np.testing.assert_allclose(g.output, want, atol=1e-12)
        assert g.padded.shape[0] == (st.in_size - 1) * st.stride + 1 + 2 * st.gather_pad + st.output_padding
        m = fr.matrix_frame(st, st.in_size ** 2 - 1)
        np.testing.assert_allclose(m.partial.reshape(want.shape), want, atol=1e-12)
        # column t of C.T is input t's scaled-kernel footprint: the scatter frame's writes inside the crop
        t = rng.randrange(st.in_size ** 2)
        ones = np.zeros_like(x)
        ones[divmod(t, st.in_size)] = 1
        np.testing.assert_allclose(m.matrix_t[:, t].reshape(want.shape), reference(st, ones, w), atol=1e-12)
    mid = fr.gather_frame(fr.Settings(), 3)
    assert np.isnan(mid.output).sum() == 9 - 4 and mid.value == mid.output[1, 0]
    assert mid.kind.tolist()[1] == [0, 2, 1, 2, 0]      # padding, input, inserted zero, input, padding


def test_bad_steps_views_and_settings():
    with pytest.raises(ValueError, match=r"step must be an int in 0..3"):
        fr.scatter_frame(fr.Settings(), 4)
    with pytest.raises(ValueError, match="view must be one of"):
        fr.make_frame(fr.Settings(), "fourier", 0)
    with pytest.raises(ValueError, match="output_padding"):
        fr.scatter_frame(fr.Settings(output_padding=2), 0)
    with pytest.raises(ValueError, match="x must have shape"):
        fr.scatter_frame(fr.Settings(), 0, x=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="frame must be"):
        fr.frame_png("not a frame")
    assert fr.n_steps(fr.Settings(), "gather") == 9 and fr.n_steps(fr.Settings(), "matrix") == 4


def test_frames_render_fast_and_differ_between_steps():
    st = fr.Settings(4, 3, 2, 1, 1, 1)
    pictures = set()
    for view in fr.VIEW_NAMES:
        for step in (0, 1):
            frame = fr.make_frame(st, view, step)
            fr.frame_png(frame)
            start = time.perf_counter()
            png = fr.frame_png(frame)
            seconds = time.perf_counter() - start
            assert seconds < 0.5, f"{view} frame took {seconds:.2f} s (goal on an idle machine: well under 0.2 s)"
            img = Image.open(io.BytesIO(png))
            assert img.format == "PNG" and img.size[0] > 200
            pictures.add(png)
    assert len(pictures) == 6
    fig = fr.render_frame(fr.make_frame(st, "gather", 0))
    assert fig.get_size_inches()[0] > 2


def test_widget_layer_updates_label_picture_and_message():
    e = transposed_conv_explorer()
    assert "output size: 3\u00d73" in e.size.value and e.step.max == 3
    first = e.picture.value
    e.sliders["stride"].value = 3
    assert "output size: 4\u00d74" in e.size.value and e.picture.value != first
    e.step.value = 3
    e.sliders["in_size"].value = 1                     # the step must follow the smaller range
    assert e.step.max == 0 and e.step.value == 0
    e.sliders["output_padding"].value = 3              # invalid: output_padding >= stride and dilation
    assert "must be smaller than stride" in e.message.value and e.picture.layout.display == "none"
    assert "invalid" in e.size.value
    e.sliders["output_padding"].value = 0
    assert e.message.layout.display == "none" and e.picture.layout.display is None
    e.view.value = "gather"
    assert e.step.max == e.settings.out_size ** 2 - 1
    with pytest.raises(ValueError, match="view must be one of"):
        TransposedConvExplorer(view="fourier")
