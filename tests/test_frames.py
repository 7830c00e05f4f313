"""lecturelib.frames (the explorer's pure functions), its pictures and the thin widget layer, without a browser."""
import base64
import io
import itertools
import random
import time

import ipywidgets as W
import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lecturelib import frame_pictures as fp
from lecturelib import frames as fr
from lecturelib import widgets as wd
from lecturelib.widgets import CSS, TransposedConvExplorer, strip_live_widgets, transposed_conv_explorer

# every slider at its largest value: the biggest frames the explorer can be asked for
LARGEST = fr.Settings(6, 5, 4, 4, 3, 3)


def reference(st: fr.Settings, x, w) -> np.ndarray:
    return F.conv_transpose2d(torch.from_numpy(x)[None, None], torch.from_numpy(w)[None, None], None, st.stride,
                              st.padding, st.output_padding, 1, st.dilation)[0, 0].numpy()


def random_settings(rng: random.Random, count: int):
    found = 0
    while found < count:
        st = fr.Settings(rng.randint(1, 5), rng.randint(1, 4), rng.randint(1, 3), rng.randint(0, 3),
                         rng.randint(0, 2), rng.randint(1, 3))
        if st.offending() is None:
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
        # output_padding's cells are never written
        assert not last.total_counts[fr.unwritten_mask(st)].any()
        assert fr.unwritten_mask(st).sum() == st.full_size ** 2 - st.written_size ** 2


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
    # with output_padding=1 (the slide's 4x4): one more row and column that nothing writes, one more kept
    st4 = fr.Settings(2, 3, 2, 1, 1, 1)
    assert (st4.written_size, st4.full_size, st4.out_size) == (5, 6, 4)


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


def test_pair_frame_window_of_the_convolution_is_where_the_transpose_writes():
    rng = random.Random(3)
    for st in random_settings(rng, 40):
        n, out = st.in_size, st.out_size
        w = fr.example_kernel(st.kernel_size)
        z = np.array([[rng.randint(-4, 9) for _ in range(out)] for _ in range(out)], float)
        conv = F.conv2d(torch.from_numpy(z)[None, None], torch.from_numpy(w)[None, None], None, st.stride,
                        st.padding, st.dilation)[0, 0, :n, :n].numpy()   # the convolution that st transposes
        m = fr.matrix_frame(st, 0)
        for t in range(n * n):
            f = fr.pair_frame(st, t)
            i, j = f.pixel
            # the forward view: y[i, j] is the window (taps inside the crop) times z
            np.testing.assert_allclose(np.nansum(f.taps[f.crop, f.crop] * z), conv[i, j], atol=1e-9)
            np.testing.assert_allclose(f.row.reshape(-1) @ z.reshape(-1), conv[i, j], atol=1e-9)
            # the same cells and weights: row t of C = column t of C.T = the scatter view's copy of x[i, j]
            np.testing.assert_array_equal(f.row, m.matrix_t[:, t].reshape(out, out))
            np.testing.assert_array_equal(np.nan_to_num(f.taps[f.crop, f.crop]), f.row)
            np.testing.assert_array_equal(f.window, fr.scatter_frame(st, t).written)
            # and the picture outlines the same cells in the convolution's input and the transpose's output
            panels, _ = fp.panels_of(f)
            np.testing.assert_array_equal(panels[0].outline, f.window)
            np.testing.assert_array_equal(panels[-1].outline, f.window)
            assert panels[2].band == (1, t)


def test_overlap_frame_is_the_1d_transposed_convolution_and_finds_uneven_overlap():
    rng = random.Random(4)
    for st in random_settings(rng, 40):
        n = st.in_size
        x = np.array([rng.randint(-3, 9) for _ in range(n)], float)
        w = np.array([rng.randint(-2, 5) for _ in range(st.kernel_size)], float)
        f = fr.overlap_frame(st, n - 1, x, w)
        want = F.conv_transpose1d(torch.from_numpy(x)[None, None], torch.from_numpy(w)[None, None], None,
                                  st.stride, st.padding, st.output_padding, 1, st.dilation)[0, 0].numpy()
        np.testing.assert_allclose(f.running[f.crop], want, atol=1e-12)
        ones = fr.overlap_frame(st, rng.randrange(n))
        assert ones.counts.sum() == st.kernel_size * (ones.step + 1)
        np.testing.assert_array_equal(fr.overlap_frame(st, n - 1).running, ones.total_counts)
    # long inputs: away from the borders, the counts repeat the per-phase counts
    for k, s, d in itertools.product(range(1, 6), range(1, 5), range(1, 4)):
        st = fr.Settings(6, k, s, 0, 0, d)
        f = fr.overlap_frame(st, 0)
        inner = range(st.span - 1, 5 * s + 1)
        assert [int(f.total_counts[r]) for r in inner] == [f.phase_counts[r % s] for r in inner]
        if d == 1:
            assert f.even == (k % s == 0)
    assert fr.phase_counts(3, 2) == (2, 1) and fr.phase_counts(4, 2) == (2, 2) and fr.phase_counts(3, 2, 2) == (3, 0)


def test_steps_are_numbered_from_one_in_every_caption():
    st = fr.Settings(2, 3, 2, 1, 1, 1)
    for view in fr.VIEW_NAMES:
        count = fr.n_steps(st, view)
        assert f"step 1/{count}:" in fr.frame_caption(fr.make_frame(st, view, 0))
        assert f"step {count}/{count}:" in fr.frame_caption(fr.make_frame(st, view, count - 1))
    assert [fr.n_steps(st, v) for v in fr.VIEW_NAMES] == [4, 16, 4, 4, 2]
    with pytest.raises(ValueError, match=r"step must be an int in 0..3 \(shown as 1..4\)"):
        fr.scatter_frame(st, 4)


def test_output_padding_is_explained_in_the_picture():
    kept = " ".join(fp.caption_lines(fr.scatter_frame(fr.Settings(2, 3, 2, 0, 1, 1), 0)))
    assert "output_padding=1 adds a row and a column at the bottom/right that nothing writes" in kept
    assert "the output keeps 1 of them, as zeros" in kept
    cropped = " ".join(fp.caption_lines(fr.scatter_frame(fr.Settings(2, 3, 2, 1, 1, 1), 0)))
    assert "padding crops them, so the output keeps 1 more written row and column" in cropped
    panels, _ = fp.panels_of(fr.scatter_frame(fr.Settings(2, 3, 2, 1, 1, 1), 0))
    assert [p.title for p in panels][:2] == ["input x", "kernel w"]       # the kernel itself is shown
    np.testing.assert_array_equal(panels[1].numbers, fr.example_kernel(3))
    np.testing.assert_array_equal(panels[3].hatch, fr.unwritten_mask(fr.Settings(2, 3, 2, 1, 1, 1)))
    counts = panels[4].numbers                                             # writes per cell: blank, not 0
    assert np.isnan(counts).sum() == 36 - 9 and np.nanmin(counts) == 1
    assert "output_padding" not in " ".join(fp.caption_lines(fr.scatter_frame(fr.Settings(), 0)))


def test_pictures_fit_one_screen_and_say_when_numbers_are_hidden():
    for st in (fr.Settings(), fr.Settings(4, 3, 2, 1, 0, 2), LARGEST, fr.Settings(6, 4, 2, 0, 0, 1)):
        for view in fr.VIEW_NAMES:
            count = fr.n_steps(st, view)
            frame = fr.make_frame(st, view, count - 1)
            img = fr.frame_image(frame)
            assert img.shape[1] == 900 and img.shape[0] <= fp.MAX_HEIGHT, (st, view, img.shape)
    assert "running sums (full 36\u00d736); writes per cell so far: the cells are smaller than 16 px" in \
        " ".join(fp.caption_lines(fr.scatter_frame(LARGEST, 0)))
    assert "Numbers hidden" not in " ".join(fp.caption_lines(fr.overlap_frame(LARGEST, 0)))  # 36 cells fit a row
    assert "Numbers hidden" not in " ".join(fp.caption_lines(fr.scatter_frame(fr.Settings(), 0)))
    # the matrix view of input 4, dilation 2: C.T is 81x16, drawn as a thumbnail beside its column on the grid
    frame = fr.matrix_frame(fr.Settings(4, 3, 2, 1, 0, 2), 0)
    panels, _ = fp.panels_of(frame)
    assert panels[0].shape == (81, 16) and panels[2].shape == (9, 9)
    assert "Numbers hidden in C\u1d40 (81\u00d716)" in " ".join(fp.caption_lines(frame))
    assert "Numbers hidden" not in " ".join(fp.caption_lines(fr.matrix_frame(fr.Settings(), 0)))


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
            assert seconds < 0.5, f"{view} frame took {seconds:.2f} s (goal on an idle machine: well under 0.1 s)"
            img = Image.open(io.BytesIO(png))
            assert img.format == "PNG" and img.size[0] == 900
            pictures.add(png)
    assert len(pictures) == 10


def test_bad_steps_views_and_settings():
    with pytest.raises(ValueError, match=r"step must be an int in 0..3"):
        fr.scatter_frame(fr.Settings(), 4)
    with pytest.raises(ValueError, match="view must be one of"):
        fr.make_frame(fr.Settings(), "fourier", 0)
    with pytest.raises(ValueError, match="output_padding"):
        fr.scatter_frame(fr.Settings(output_padding=2), 0)
    with pytest.raises(ValueError, match="output_padding"):
        fr.overlap_frame(fr.Settings(output_padding=2), 0)
    with pytest.raises(ValueError, match="x must have shape"):
        fr.scatter_frame(fr.Settings(), 0, x=np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"x must have shape \(2,\)"):
        fr.overlap_frame(fr.Settings(), 0, x=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="frame must be"):
        fr.frame_png("not a frame")
    assert fr.Settings(output_padding=2).offending() == "output_padding"
    assert fr.Settings(padding=3).offending() == "padding" and fr.Settings().offending() is None


# ----------------------------------------------------------------------------- the widget layer
def test_widget_layer_updates_label_picture_and_message():
    e = transposed_conv_explorer()
    assert "output size: 4\u00d74" in e.size.value and (e.step.min, e.step.value, e.step.max) == (1, 1, 4)
    first = e.picture.value
    assert first == fr.frame_png(fr.scatter_frame(fr.Settings(2, 3, 2, 1, 1, 1), 0))
    assert e.picture.width == "900"                       # shown at its natural width
    e.sliders["stride"].value = 3
    assert "output size: 5\u00d75" in e.size.value and e.picture.value != first
    e.step.value = 4                                      # slider 4 = the frame of the 4th step
    assert e.picture.value == fr.frame_png(fr.scatter_frame(e.settings, 3))
    e.sliders["in_size"].value = 1                        # the step must follow the smaller range
    assert e.step.max == 1 and e.step.value == 1
    shown = e.picture.value
    e.sliders["output_padding"].value = 3                 # invalid: output_padding >= stride and dilation
    assert "must be smaller than stride" in e.message.value and e.message.layout.display is None
    assert "invalid" in e.size.value and f"{CSS['offending']}' style='color:#b00020;font-weight:bold'>3<" in \
        e.size.value
    assert "padding 1 = invalid<br>" in e.size.value      # no output size printed for a refused setting
    assert e.picture.value and e.picture.value != shown and CSS["stale"] in e.picture._dom_classes
    assert e.hint.layout.display == "none"
    e.sliders["output_padding"].value = 0
    assert e.message.layout.display == "none" and CSS["stale"] not in e.picture._dom_classes
    assert e.picture.value == fr.frame_png(fr.scatter_frame(e.settings, 0))
    e.sliders["padding"].value = 4                        # invalid padding: the padding is marked
    assert ">4</span> = invalid<br>" in e.size.value and "use padding &lt;= 1" in e.message.value
    with pytest.raises(ValueError, match="view must be one of"):
        TransposedConvExplorer(view="fourier")
    with pytest.raises(ValueError, match=r"step must be in 1..4"):
        TransposedConvExplorer(fr.Settings(), step=5)


def test_step_slider_is_rebuilt_when_the_step_count_changes():
    e = transposed_conv_explorer()
    old_step, old_play = e.step, e.play
    e.step.value = 3
    e.sliders["stride"].value = 2                        # unchanged value: nothing is rebuilt
    assert e.step is old_step
    e.view.value = "gather"                              # 4 -> 16 steps
    assert e.step is not old_step and e.play is not old_play and old_step.comm is None and old_play.comm is None
    assert (e.step.min, e.step.max, e.step.value) == (1, 16, 3) and (e.play.min, e.play.max) == (1, 16)
    assert e.step_row.children[:2] == (e.play, e.step)
    assert e._link.source == (e.play, "value") and e._link.target == (e.step, "value")
    e.step.value = 16
    assert e.picture.value == fr.frame_png(fr.gather_frame(e.settings, 15))
    e.view.value = "1d"                                  # 16 -> 2 steps: the value follows
    assert (e.step.max, e.step.value) == (2, 2)


def test_many_steps_speed_play_up_and_warn():
    e = TransposedConvExplorer(fr.Settings(6, 5, 4, 0, 0, 1), view="gather")
    count = e.settings.out_size ** 2
    assert e.step.max == count == 625 and e.play.interval == wd.play_interval_ms(count) == 250
    assert "625 steps" in e.steps_note.value and "min in all" in e.steps_note.value
    e.view.value = "scatter"
    assert e.steps_note.value == "" and e.play.interval == 900 and "tooltip" in e.play.keys and e.play.tooltip


def test_every_view_draws_at_the_largest_settings():
    e = TransposedConvExplorer(LARGEST)
    for view in fr.VIEW_NAMES:
        e.view.value = view
        e.step.value = e.step.max
        img = Image.open(io.BytesIO(e.picture.value))
        assert img.size[1] <= fp.MAX_HEIGHT and e.message.layout.display == "none"


def test_displayed_explorer_carries_a_static_picture_and_its_state_is_stripped():
    e = transposed_conv_explorer(view="pair")
    bundle = e._repr_mimebundle_()
    assert bundle["text/plain"] == wd.STATIC_TEXT
    assert base64.b64decode(bundle["image/png"]) == e.picture.value
    keep = W.IntSlider(value=3)
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("explorer", outputs=[nbformat.v4.new_output("display_data", data=bundle)]),
        nbformat.v4.new_code_cell("slider", outputs=[nbformat.v4.new_output("display_data",
                                                                            data=keep._repr_mimebundle_())])])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": W.Widget.get_manager_state()}
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    ours = {w.model_id for w in (e.ui, e.picture, e.step, e.play, e._link, *e.sliders.values())}
    assert ours <= set(state) and keep.model_id in state
    removed = strip_live_widgets(nb)
    assert removed >= len(ours) and not ours & set(state)
    assert keep.model_id in state and keep.layout.model_id in state and keep.style.model_id in state
    assert not any(wd.LIVE_ONLY in m["state"].get("_dom_classes", []) for m in state.values())
    explorer_out, slider_out = nb.cells[0].outputs[0], nb.cells[1].outputs[0]
    assert set(explorer_out.data) == {"text/plain", "image/png"}
    assert "application/vnd.jupyter.widget-view+json" in slider_out.data
