"""The frames of the transposed-convolution widget: pure functions from settings to arrays and pictures.

A frame is what the widget shows at one step:

* :func:`scatter_frame` -- step *t* takes the *t*-th input value (row-major), scales the kernel with it and
  writes the result into the *full* output (before ``padding`` crops it): which cells it writes, the
  values written, the running sums and how many writes each cell has received so far.
* :func:`gather_frame` -- step *t* computes the *t*-th output cell as a dot product between the flipped
  kernel and a window of the zero-inserted, padded input.
* :func:`matrix_frame` -- step *t* adds ``x_t`` times column *t* of ``C.T`` to the output vector.

:func:`render_frame` draws any frame with matplotlib (the numbers included); :func:`frame_png` gives PNG bytes.
Everything here is single-channel and square, in float64 NumPy.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .transposed import conv_matrix, conv_transpose_output_size, gather_padding

VIEW_NAMES = ("scatter", "gather", "matrix")


@dataclass(frozen=True)
class Settings:
    """One square, single-channel transposed convolution: what the widget's sliders choose."""

    in_size: int = 2
    kernel_size: int = 3
    stride: int = 2
    padding: int = 1
    output_padding: int = 0
    dilation: int = 1

    @property
    def span(self) -> int:
        """Cells covered by one (dilated) kernel: ``d(k - 1) + 1``."""
        return self.dilation * (self.kernel_size - 1) + 1

    @property
    def full_size(self) -> int:
        """Side of the full output, before ``padding`` crops it: ``(n-1)s + d(k-1) + 1 + output_padding``."""
        return (self.in_size - 1) * self.stride + self.span + self.output_padding

    @property
    def out_size(self) -> int:
        """Side of the output (ValueError for impossible settings)."""
        return conv_transpose_output_size(self.in_size, self.kernel_size, self.stride, self.padding,
                                          self.output_padding, self.dilation)

    @property
    def gather_pad(self) -> int:
        """Padding of the gather view, ``d(k - 1) - p`` (negative: crop)."""
        return gather_padding(self.kernel_size, self.padding, self.dilation)

    def validate(self) -> int:
        """Raise ValueError naming the setting to change; return the output size."""
        return self.out_size

    def formula(self) -> str:
        """The output-size formula with this setting's numbers, e.g. ``(2−1)·2 − 2·1 + 1·(3−1) + 0 + 1 = 3``."""
        n, k, s, p, op, d = (self.in_size, self.kernel_size, self.stride, self.padding, self.output_padding,
                             self.dilation)
        value = (n - 1) * s - 2 * p + d * (k - 1) + op + 1
        return f"({n}\u22121)\u00b7{s} \u2212 2\u00b7{p} + {d}\u00b7({k}\u22121) + {op} + 1 = {value}"


def example_input(n: int) -> np.ndarray:
    """Small distinct integers 1..9 (row-major, repeating): float64[n, n]."""
    return (1 + np.arange(n * n) % 9).reshape(n, n).astype(np.float64)


def example_kernel(k: int) -> np.ndarray:
    """Small integers 1..5 without symmetry, so that flipping is visible: float64[k, k]."""
    return (1 + np.arange(k * k) % 5).reshape(k, k).astype(np.float64)


def _values(settings: Settings, x, kernel) -> tuple[np.ndarray, np.ndarray]:
    settings.validate()
    n, k = settings.in_size, settings.kernel_size
    x = example_input(n) if x is None else np.asarray(x, dtype=np.float64)
    w = example_kernel(k) if kernel is None else np.asarray(kernel, dtype=np.float64)
    if x.shape != (n, n):
        raise ValueError(f"x must have shape ({n}, {n}) for in_size={n}, got {x.shape}")
    if w.shape != (k, k):
        raise ValueError(f"kernel must have shape ({k}, {k}) for kernel_size={k}, got {w.shape}")
    return x, w


def _check_step(step: int, n_steps: int) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 0 <= step < n_steps:
        raise ValueError(f"step must be an int in 0..{n_steps - 1}, got {step!r}")
    return int(step)


# ----------------------------------------------------------------------------- scatter
def scatter_writes(settings: Settings, step: int, x=None, kernel=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where and what step ``step`` writes in the full output.

    Returns rows (int[k, k]), cols (int[k, k]) in full-output coordinates and values (float64[k, k]):
    input pixel (i, j) = divmod(step, n) writes ``x[i, j] * kernel[a, b]`` at ``(i*s + a*d, j*s + b*d)``.
    """
    x, w = _values(settings, x, kernel)
    n, k, s, d = settings.in_size, settings.kernel_size, settings.stride, settings.dilation
    i, j = divmod(_check_step(step, n * n), n)
    a = np.arange(k)
    rows = np.repeat((i * s + a * d)[:, None], k, axis=1)
    cols = np.repeat((j * s + a * d)[None, :], k, axis=0)
    return rows, cols, x[i, j] * w


@dataclass(frozen=True)
class ScatterFrame:
    """Step ``step`` of the scatter view. Arrays on the full output grid are float64/int64[F, F]."""

    settings: Settings
    step: int
    n_steps: int
    pixel: tuple[int, int]        # the input pixel (i, j) of this step
    x: np.ndarray                 # float64[n, n]
    kernel: np.ndarray            # float64[k, k]
    rows: np.ndarray              # int[k, k]: full-output row of each kernel tap
    cols: np.ndarray              # int[k, k]
    values: np.ndarray            # float64[k, k]: x[i, j] * kernel, what this step writes
    running: np.ndarray           # float64[F, F]: sum of the writes of steps 0..step
    counts: np.ndarray            # int64[F, F]: writes received so far
    total_counts: np.ndarray      # int64[F, F]: writes received after the last step

    @property
    def crop(self) -> slice:
        """Rows (and columns) of the full output that the output keeps: ``padding .. padding + out - 1``."""
        p = self.settings.padding
        return slice(p, p + self.settings.out_size)

    @property
    def output(self) -> np.ndarray:
        """The running sums inside the crop: after the last step, the transposed convolution's output."""
        return self.running[self.crop, self.crop]

    @property
    def written(self) -> np.ndarray:
        """bool[F, F]: cells written at this step."""
        mask = np.zeros_like(self.counts, dtype=bool)
        mask[self.rows, self.cols] = True
        return mask


def scatter_frame(settings: Settings, step: int, x=None, kernel=None) -> ScatterFrame:
    """The scatter view after steps 0..``step`` (one step per input pixel, row-major)."""
    x, w = _values(settings, x, kernel)
    n, F = settings.in_size, settings.full_size
    step = _check_step(step, n * n)
    running = np.zeros((F, F))
    counts = np.zeros((F, F), np.int64)
    total = np.zeros((F, F), np.int64)
    for t in range(n * n):
        rows, cols, vals = scatter_writes(settings, t, x, w)
        np.add.at(total, (rows, cols), 1)
        if t <= step:
            np.add.at(running, (rows, cols), vals)
            np.add.at(counts, (rows, cols), 1)
    rows, cols, vals = scatter_writes(settings, step, x, w)
    return ScatterFrame(settings, step, n * n, divmod(step, n), x, w, rows, cols, vals, running, counts, total)


# ----------------------------------------------------------------------------- gather
@dataclass(frozen=True)
class GatherFrame:
    """Step ``step`` of the gather view: output cell ``cell`` = window of ``padded`` · flipped kernel."""

    settings: Settings
    step: int
    n_steps: int
    cell: tuple[int, int]         # output cell (oi, oj) of this step
    padded: np.ndarray            # float64[P, P]: zero-inserted input, padded by d(k-1)-p (cropped if negative)
    kind: np.ndarray              # int8[P, P]: 2 = input value, 1 = inserted zero, 0 = padding
    flipped: np.ndarray           # float64[k, k]: the kernel flipped in both directions
    rows: np.ndarray              # int[k, k]: rows of ``padded`` under the kernel taps
    cols: np.ndarray              # int[k, k]
    products: np.ndarray          # float64[k, k]: padded[rows, cols] * flipped
    value: float                  # products.sum(): output[oi, oj]
    output: np.ndarray            # float64[out, out]: cells 0..step computed, NaN after


def _zero_insert_pad(a: np.ndarray, s: int, q: int, op: int, fill: float) -> np.ndarray:
    """Zero-insert (fill value ``fill`` between pixels), then pad by ``q`` (crop if negative) plus ``op``."""
    n = a.shape[0]
    z = np.full(((n - 1) * s + 1,) * 2, fill, dtype=a.dtype)
    z[::s, ::s] = a
    return _pad(z, q, q + op)


def _pad(z: np.ndarray, before: int, after: int) -> np.ndarray:
    """Pad with zeros (negative: crop) ``before`` cells at the top/left, ``after`` at the bottom/right."""
    z = z[max(-before, 0):, max(-before, 0):]
    if after < 0:
        z = z[:after, :after]
    return np.pad(z, ((max(before, 0), max(after, 0)),) * 2)


def gather_frame(settings: Settings, step: int, x=None, kernel=None) -> GatherFrame:
    """The gather view after output cells 0..``step`` (row-major) have been computed."""
    x, w = _values(settings, x, kernel)
    s, d, op, k = settings.stride, settings.dilation, settings.output_padding, settings.kernel_size
    out = settings.out_size
    step = _check_step(step, out * out)
    q = settings.gather_pad
    padded = _zero_insert_pad(x, s, q, op, 0.0)
    kind = _zero_insert_pad(np.full(x.shape, 2, np.int8), s, q, op, 1)
    flipped = w[::-1, ::-1].copy()
    a = np.arange(k) * d
    output = np.full((out, out), np.nan)
    for t in range(step + 1):
        oi, oj = divmod(t, out)
        output[oi, oj] = float((padded[oi + a[:, None], oj + a[None, :]] * flipped).sum())
    oi, oj = divmod(step, out)
    rows = np.repeat((oi + a)[:, None], k, axis=1)
    cols = np.repeat((oj + a)[None, :], k, axis=0)
    products = padded[rows, cols] * flipped
    return GatherFrame(settings, step, out * out, (oi, oj), padded, kind, flipped, rows, cols, products,
                       float(products.sum()), output)


# ----------------------------------------------------------------------------- matrix
@dataclass(frozen=True)
class MatrixFrame:
    """Step ``step`` of the matrix view: y = sum over t' <= step of x[t'] * C.T[:, t']."""

    settings: Settings
    step: int
    n_steps: int
    matrix_t: np.ndarray          # float64[out*out, n*n]: C.T, C being the matrix of the strided convolution
    x_vec: np.ndarray             # float64[n*n]: the input, flattened row-major
    partial: np.ndarray           # float64[out*out]: C.T[:, :step+1] @ x_vec[:step+1]

    @property
    def column(self) -> np.ndarray:
        """Column ``step`` of C.T: where input value ``step`` writes (its scaled kernel, flattened)."""
        return self.matrix_t[:, self.step]


def matrix_frame(settings: Settings, step: int, x=None, kernel=None) -> MatrixFrame:
    """The matrix view after input values 0..``step`` have been multiplied by their column of C.T."""
    x, w = _values(settings, x, kernel)
    n, out = settings.in_size, settings.out_size
    step = _check_step(step, n * n)
    weight = torch.from_numpy(w.copy())[None, None]
    C = conv_matrix(weight, out, settings.stride, settings.padding, settings.dilation, out_size=n).numpy()
    ct = C.T.copy()                                   # (out*out, n*n)
    xv = x.reshape(-1)
    partial = ct[:, :step + 1] @ xv[:step + 1]
    return MatrixFrame(settings, step, n * n, ct, xv, partial)


def make_frame(settings: Settings, view: str, step: int, x=None, kernel=None):
    """The frame of ``view`` ('scatter', 'gather' or 'matrix') at ``step``."""
    makers = {"scatter": scatter_frame, "gather": gather_frame, "matrix": matrix_frame}
    if view not in makers:
        raise ValueError(f"view must be one of {VIEW_NAMES}, got {view!r}")
    return makers[view](settings, step, x, kernel)


def n_steps(settings: Settings, view: str) -> int:
    """Steps of a view: input pixels (scatter, matrix) or output cells (gather)."""
    if view not in VIEW_NAMES:
        raise ValueError(f"view must be one of {VIEW_NAMES}, got {view!r}")
    return settings.out_size ** 2 if view == "gather" else settings.in_size ** 2


# ----------------------------------------------------------------------------- rendering
# Frames are drawn with PIL (cells, numbers, outlines) because a frame may hold several hundred numbers:
# a raster with PIL's text takes milliseconds where one matplotlib text artist per number takes ~100x longer.
MAX_PIXELS = 2400          # the largest picture side a frame may need
MIN_NUMBER_CELL = 16       # cells smaller than this (pixels) are drawn without their numbers
_RED, _BLUE, _GRID = (214, 39, 40), (31, 119, 180), (160, 160, 160)


@dataclass
class _Panel:
    rgb: np.ndarray                         # float[R, C, 3] in [0, 1]
    numbers: np.ndarray | None              # float[R, C] (NaN: no number) or None
    title: str
    outline: np.ndarray | None = None       # bool[R, C]: cells framed in red
    box: tuple | None = None                # (row, col, height, width): a dashed blue rectangle


@lru_cache(maxsize=32)
def _font(size: int):
    import matplotlib
    from PIL import ImageFont

    return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf"), size)


def _fmt(v: float) -> str:
    if np.isnan(v):
        return ""
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"


def _shade(values: np.ndarray, vmax: float | None = None, color=(0.30, 0.55, 0.90)) -> np.ndarray:
    """White -> ``color`` by |value| / vmax: float[R, C, 3]."""
    v = np.nan_to_num(np.abs(values.astype(np.float64)))
    top = vmax if vmax else max(float(v.max()), 1e-9)
    t = np.clip(v / top, 0, 1)[..., None] * 0.6
    return 1 - t * (1 - np.asarray(color))


def _dashed_rect(draw, x0: int, y0: int, x1: int, y1: int, color, width: int = 2, dash: int = 6) -> None:
    for a, b in ((x0, x1),):
        for x in range(a, b, 2 * dash):
            draw.line([(x, y0), (min(x + dash, b), y0)], fill=color, width=width)
            draw.line([(x, y1), (min(x + dash, b), y1)], fill=color, width=width)
    for y in range(y0, y1, 2 * dash):
        draw.line([(x0, y), (x0, min(y + dash, y1))], fill=color, width=width)
        draw.line([(x1, y), (x1, min(y + dash, y1))], fill=color, width=width)


def _draw_panels(panels: list[_Panel], caption: str, width: int = 900) -> np.ndarray:
    """Lay out ``panels`` side by side under ``caption``; returns uint8[H, W, 3]."""
    from PIL import Image, ImageDraw

    title_font, caption_font = _font(13), _font(14)
    cols = sum(p.rgb.shape[1] for p in panels)
    rows = max(p.rgb.shape[0] for p in panels)
    gap = 24
    cell = int(np.clip((width - gap * (len(panels) + 1)) // max(cols, 1), 4, 40))
    cell = min(cell, max(4, (MAX_PIXELS - 120) // rows))
    if rows * cell > MAX_PIXELS - 120:
        raise ValueError(f"this frame has {rows} rows of cells: too many to draw; make the sizes smaller")
    title_lines = max(p.title.count("\n") + 1 for p in panels)
    top = 30 + 17 * title_lines + 6
    slots = [max(p.rgb.shape[1] * cell, int(max(title_font.getlength(t) for t in p.title.split("\n"))) + 4)
             for p in panels]
    W = max(gap + sum(s + gap for s in slots), int(caption_font.getlength(caption)) + 2 * gap)
    H = top + rows * cell + 12
    img = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.text((gap, 8), caption, fill=(0, 0, 0), font=caption_font)
    x = gap
    for p, slot in zip(panels, slots):
        R, C = p.rgb.shape[:2]
        x0 = x + (slot - C * cell) // 2
        draw.multiline_text((x + slot // 2, 32), p.title, fill=(0, 0, 0), font=title_font, anchor="ma",
                            align="center", spacing=4)
        y0 = top
        colours = np.round(np.clip(p.rgb, 0, 1) * 255).astype(np.uint8)
        block = np.repeat(np.repeat(colours, cell, axis=0), cell, axis=1)
        img.paste(Image.fromarray(block), (x0, y0))
        for r in range(R + 1):
            draw.line([(x0, y0 + r * cell), (x0 + C * cell, y0 + r * cell)], fill=_GRID, width=1)
        for c in range(C + 1):
            draw.line([(x0 + c * cell, y0), (x0 + c * cell, y0 + R * cell)], fill=_GRID, width=1)
        if p.numbers is not None and cell >= MIN_NUMBER_CELL:
            for r in range(R):
                for c in range(C):
                    txt = _fmt(p.numbers[r, c])
                    if not txt:
                        continue
                    size = int(cell * 0.45)
                    while size > 7 and _font(size).getlength(txt) > cell - 3:
                        size -= 1
                    draw.text((x0 + c * cell + cell / 2, y0 + r * cell + cell / 2), txt, fill=(0, 0, 0),
                              font=_font(size), anchor="mm")
        if p.outline is not None:
            for r, c in zip(*np.nonzero(p.outline)):
                draw.rectangle([x0 + c * cell, y0 + r * cell, x0 + (c + 1) * cell, y0 + (r + 1) * cell],
                               outline=_RED, width=2 if cell >= 8 else 1)
        if p.box is not None:
            br, bc, bh, bw = p.box
            _dashed_rect(draw, x0 + bc * cell, y0 + br * cell, x0 + (bc + bw) * cell, y0 + (br + bh) * cell, _BLUE)
        x += slot + gap
    return np.asarray(img)


def _scatter_panels(f: ScatterFrame):
    st = f.settings
    F = st.full_size
    i, j = f.pixel
    here = np.zeros(f.x.shape, bool)
    here[i, j] = True
    box = (st.padding, st.padding, st.out_size, st.out_size)
    numbers = np.where(f.counts > 0, f.running, np.nan)
    panels = [
        _Panel(_shade(f.x), f.x, "input x", here),
        _Panel(_shade(f.values), f.values, f"x[{i},{j}] \u00b7 w"),
        _Panel(_shade(f.running), numbers, f"running sums\n(full {F}\u00d7{F})", f.written, box),
        _Panel(_shade(f.counts, vmax=max(int(f.total_counts.max()), 1), color=(0.95, 0.55, 0.15)),
               f.counts.astype(np.float64), "writes per cell\nso far", f.written, box),
    ]
    caption = (f"scatter, step {f.step + 1}/{f.n_steps}: x[{i},{j}] = {_fmt(f.x[i, j])} scales the kernel, added at "
               f"rows {f.rows[0, 0]}..{f.rows[-1, 0]}, columns {f.cols[0, 0]}..{f.cols[0, -1]}. "
               f"Dashed: the {st.out_size}\u00d7{st.out_size} output left after padding={st.padding} crops.")
    return panels, caption


def _gather_panels(f: GatherFrame):
    st = f.settings
    k, out = st.kernel_size, st.out_size
    colors = np.array([[0.88, 0.88, 0.88], [1.0, 1.0, 1.0], [0.72, 0.84, 1.0]])  # padding, inserted zero, input
    window = np.zeros(f.padded.shape, bool)
    window[f.rows, f.cols] = True
    q = st.gather_pad
    pad_txt = (f"padded by d(k\u22121)\u2212p = {q}" if q >= 0 else f"d(k\u22121)\u2212p = {q}: cropped by {-q}")
    oi, oj = f.cell
    here = np.zeros((out, out), bool)
    here[oi, oj] = True
    panels = [
        _Panel(colors[f.kind], f.padded, f"zero-inserted input\n{pad_txt}", window),
        _Panel(_shade(f.flipped), f.flipped, "flipped\nkernel"),
        _Panel(_shade(f.output), f.output, f"output\n{out}\u00d7{out}", here),
    ]
    caption = (f"gather, step {f.step + 1}/{f.n_steps}: y[{oi},{oj}] = sum(window \u00b7 flipped kernel) = "
               f"{_fmt(f.value)}  (grey: padding, white: inserted zeros, blue: input; k={k}, s={st.stride})")
    return panels, caption


def _matrix_panels(f: MatrixFrame):
    st = f.settings
    rows, cols = f.matrix_t.shape
    out = st.out_size
    col = np.zeros_like(f.matrix_t, dtype=bool)
    col[:, f.step] = f.matrix_t[:, f.step] != 0
    xv = f.x_vec[:, None]
    here = np.zeros_like(xv, dtype=bool)
    here[f.step, 0] = True
    y = f.partial.reshape(out, out)
    panels = [
        _Panel(_shade(f.matrix_t), np.where(f.matrix_t != 0, f.matrix_t, np.nan), f"C\u1d40  ({rows}\u00d7{cols})",
               col),
        _Panel(_shade(xv), xv, "x", here),
        _Panel(_shade(y), y, f"y = C\u1d40x\n({out}\u00d7{out})"),
    ]
    caption = (f"matrix, step {f.step + 1}/{f.n_steps}: y += x{f.step} \u00b7 column {f.step} of C\u1d40 "
               f"(C: the stride-{st.stride} convolution {out}\u00d7{out} \u2192 {st.in_size}\u00d7{st.in_size})")
    return panels, caption


def frame_image(frame, width: int = 900) -> np.ndarray:
    """The picture of ``frame`` with its numbers: uint8[H, W, 3] (about ``width`` pixels wide)."""
    builders = {ScatterFrame: _scatter_panels, GatherFrame: _gather_panels, MatrixFrame: _matrix_panels}
    if type(frame) not in builders:
        raise ValueError(f"frame must be a ScatterFrame, GatherFrame or MatrixFrame, got {type(frame).__name__}")
    panels, caption = builders[type(frame)](frame)
    return _draw_panels(panels, caption, width)


def frame_png(frame, width: int = 900) -> bytes:
    """PNG bytes of :func:`frame_image` (what the widget displays)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame_image(frame, width)).save(buf, format="png", optimize=False)
    return buf.getvalue()


def render_frame(frame, width: int = 900):
    """A matplotlib Figure showing :func:`frame_image` at one figure pixel per image pixel."""
    from matplotlib.figure import Figure

    img = frame_image(frame, width)
    dpi = 100
    fig = Figure(figsize=(img.shape[1] / dpi, img.shape[0] / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(img, interpolation="nearest")
    ax.set_axis_off()
    return fig
