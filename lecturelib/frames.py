"""The frames of the transposed-convolution widget: pure functions from settings to arrays and pictures.

A frame is what the widget shows at one step (COURSE.md §3.5):

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
from dataclasses import dataclass

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
MAX_NUMBERED = 18   # grids with more rows or columns are drawn without numbers


def _fmt(v: float) -> str:
    if np.isnan(v):
        return ""
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"


def _grid(ax, values: np.ndarray, rgb: np.ndarray, title: str, numbers: np.ndarray | None = None,
          outline=None, box=None, fontsize: float | None = None) -> None:
    """Draw a grid of cells with colours ``rgb`` (float[R, C, 3]), numbers, outlined cells and a dashed box."""
    import matplotlib.patches as mpatches

    R, C = values.shape
    ax.imshow(rgb, interpolation="nearest", extent=(-0.5, C - 0.5, R - 0.5, -0.5))
    ax.set_xticks(np.arange(-0.5, C, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, R, 1), minor=True)
    ax.grid(which="minor", color="#999999", linewidth=0.5)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    if numbers is not None and max(R, C) <= MAX_NUMBERED:
        fs = fontsize or max(5.0, 11 - 0.35 * max(R, C))
        for r in range(R):
            for c in range(C):
                txt = numbers[r, c] if isinstance(numbers[r, c], str) else _fmt(numbers[r, c])
                if txt:
                    ax.text(c, r, txt, ha="center", va="center", fontsize=fs)
    if outline is not None:
        for r, c in zip(*np.nonzero(outline)):
            ax.add_patch(mpatches.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="#d62728", linewidth=2))
    if box is not None:
        r0, c0, h, w = box
        ax.add_patch(mpatches.Rectangle((c0 - 0.5, r0 - 0.5), w, h, fill=False, edgecolor="#1f77b4", linewidth=2,
                                        linestyle="--"))


def _shade(values: np.ndarray, vmax: float | None = None, color=(0.30, 0.55, 0.90)) -> np.ndarray:
    """White -> ``color`` by |value| / vmax: float[R, C, 3]."""
    v = np.nan_to_num(np.abs(values.astype(np.float64)))
    top = vmax if vmax else max(float(v.max()), 1e-9)
    t = np.clip(v / top, 0, 1)[..., None] * 0.6
    return 1 - t * (1 - np.asarray(color))


def _figure(widths: list[int], height: int):
    from matplotlib.figure import Figure

    widths = [max(w, 2) for w in widths]
    unit = min(0.42, 9.5 / sum(widths), 4.2 / max(height, 2))
    fig = Figure(figsize=(max(unit * sum(widths) + 0.4 * len(widths), 6.0), max(unit * height, 1.6) + 1.0))
    axes = fig.subplots(1, len(widths), gridspec_kw={"width_ratios": widths})
    return fig, list(axes)


def _render_scatter(f: ScatterFrame):
    st = f.settings
    n, k, F = st.in_size, st.kernel_size, st.full_size
    fig, (a0, a1, a2, a3) = _figure([n, k, F, F], max(n, k, F))
    i, j = f.pixel
    here = np.zeros((n, n), bool)
    here[i, j] = True
    _grid(a0, f.x, _shade(f.x), f"input x  (step {f.step + 1}/{f.n_steps}: x[{i},{j}])", f.x, outline=here)
    _grid(a1, f.values, _shade(f.values), f"x[{i},{j}] \u00b7 kernel = {_fmt(f.x[i, j])} \u00b7 w", f.values)
    box = (st.padding, st.padding, st.out_size, st.out_size)
    numbers = np.where(f.counts > 0, f.running, np.nan)
    _grid(a2, f.running, _shade(f.running), f"running sums, full {F}\u00d7{F}\n(dashed: output {st.out_size}"
          f"\u00d7{st.out_size} after padding={st.padding} crops)", numbers, outline=f.written, box=box)
    _grid(a3, f.counts, _shade(f.counts, vmax=max(int(f.total_counts.max()), 1), color=(0.95, 0.55, 0.15)),
          f"writes per cell so far\n(total: {int(f.total_counts.min())}..{int(f.total_counts.max())})",
          f.counts.astype(np.float64), outline=f.written, box=box)
    return fig


def _render_gather(f: GatherFrame):
    st = f.settings
    P, k, out = f.padded.shape[0], st.kernel_size, st.out_size
    fig, (a0, a1, a2) = _figure([P, k, out], max(P, k, out))
    colors = np.array([[0.88, 0.88, 0.88], [1.0, 1.0, 1.0], [0.72, 0.84, 1.0]])  # padding, inserted zero, input
    window = np.zeros((P, P), bool)
    window[f.rows, f.cols] = True
    q = st.gather_pad
    pad_txt = (f"padded by d(k\u22121)\u2212p = {st.dilation}\u00b7{k - 1}\u2212{st.padding} = {q}" if q >= 0 else
               f"d(k\u22121)\u2212p = {q} < 0: cropped by {-q}")
    _grid(a0, f.padded, colors[f.kind], f"zero-inserted input (stride {st.stride})\n{pad_txt}", f.padded,
          outline=window)
    _grid(a1, f.flipped, _shade(f.flipped), "flipped kernel", f.flipped)
    oi, oj = f.cell
    here = np.zeros((out, out), bool)
    here[oi, oj] = True
    _grid(a2, np.nan_to_num(f.output), _shade(f.output), f"output (step {f.step + 1}/{f.n_steps})\n"
          f"y[{oi},{oj}] = window \u00b7 flipped = {_fmt(f.value)}", f.output, outline=here)
    return fig


def _render_matrix(f: MatrixFrame):
    st = f.settings
    rows, cols = f.matrix_t.shape
    out = st.out_size
    fig, (a0, a1, a2) = _figure([cols, 1, out], max(rows, out))
    col = np.zeros_like(f.matrix_t, dtype=bool)
    col[:, f.step] = True
    col &= f.matrix_t != 0
    _grid(a0, f.matrix_t, _shade(f.matrix_t), f"C\u1d40  ({rows}\u00d7{cols}); column {f.step} = where x{f.step} writes",
          np.where(f.matrix_t != 0, f.matrix_t, np.nan), outline=col)
    xv = f.x_vec[:, None]
    here = np.zeros_like(xv, dtype=bool)
    here[f.step, 0] = True
    _grid(a1, xv, _shade(xv), "x", xv, outline=here)
    y = f.partial.reshape(out, out)
    _grid(a2, y, _shade(y), f"y = C\u1d40x, columns 0..{f.step}\n(reshaped to {out}\u00d7{out})", y)
    return fig


def render_frame(frame):
    """A matplotlib Figure (not attached to pyplot) showing ``frame`` with its numbers."""
    if isinstance(frame, ScatterFrame):
        fig = _render_scatter(frame)
    elif isinstance(frame, GatherFrame):
        fig = _render_gather(frame)
    elif isinstance(frame, MatrixFrame):
        fig = _render_matrix(frame)
    else:
        raise ValueError(f"frame must be a ScatterFrame, GatherFrame or MatrixFrame, got {type(frame).__name__}")
    fig.tight_layout()
    return fig


def frame_png(frame, dpi: int = 80) -> bytes:
    """PNG bytes of :func:`render_frame` (what the widget displays)."""
    fig = render_frame(frame)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
