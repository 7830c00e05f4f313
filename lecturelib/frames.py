"""The frames of the transposed-convolution explorer: pure functions from settings to arrays.

A frame is what the explorer shows at one step. Steps are numbered from 0 here (``step``) and shown
from 1 to the student ("step 1/4" at ``step == 0``).

* :func:`scatter_frame` -- step *t* takes the *t*-th input value (row-major), scales the kernel with it and
  writes the result into the *full* output (before ``padding`` crops it): which cells it writes, the
  values written, the running sums and how many writes each cell has received so far.
* :func:`gather_frame` -- step *t* computes the *t*-th output cell as a dot product between the flipped
  kernel and a window of the zero-inserted, padded input.
* :func:`matrix_frame` -- step *t* adds ``x_t`` times column *t* of ``C.T`` to the output vector.
* :func:`pair_frame` -- the convolution and its transpose side by side: the window that output *t* of the
  strided convolution reads (row *t* of ``C``) is where input *t* of the transposed convolution writes
  (column *t* of ``C.T``).
* :func:`overlap_frame` -- the 1-D transposed convolution, one copy of the kernel per input cell, with the
  number of writes each output cell receives: uneven counts are the cause of checkerboard artifacts.

:func:`frame_image` and :func:`frame_png` draw any frame (:mod:`lecturelib.frame_pictures`).
Everything here is single-channel and square, in float64 NumPy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .transposed import conv_matrix, conv_transpose_output_size, gather_padding

VIEW_NAMES = ("scatter", "gather", "matrix", "pair", "1d")
VIEW_LABELS = {"scatter": "scatter", "gather": "gather", "matrix": "matrix", "pair": "conv \u2194 transpose",
               "1d": "1-D overlap"}


def output_crop(settings) -> slice:
    """Rows (and columns) of the full output grid that the output keeps: ``padding .. padding + out_size - 1``."""
    return slice(settings.padding, settings.padding + settings.out_size)


@dataclass(frozen=True)
class Settings:
    """One square, single-channel transposed convolution: what the explorer's sliders choose (ints, in cells)."""

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
    def written_size(self) -> int:
        """Cells the scattered kernels reach: ``(n-1)s + d(k-1) + 1``."""
        return (self.in_size - 1) * self.stride + self.span

    @property
    def full_size(self) -> int:
        """Side of the full output, before ``padding`` crops it: ``(n-1)s + d(k-1) + 1 + output_padding``.

        The last ``output_padding`` rows and columns are never written: they hold zeros.
        """
        return self.written_size + self.output_padding

    @property
    def out_size(self) -> int:
        """Side of the output, ``full_size - 2 * padding`` (ValueError for impossible settings)."""
        return conv_transpose_output_size(self.in_size, self.kernel_size, self.stride, self.padding,
                                          self.output_padding, self.dilation)

    @property
    def gather_pad(self) -> int:
        """Padding of the gather view, ``d(k - 1) - p`` (negative: crop)."""
        return gather_padding(self.kernel_size, self.padding, self.dilation)

    def validate(self) -> int:
        """Raise ValueError naming the setting to change; return the output size."""
        return self.out_size

    def offending(self) -> str | None:
        """The field that makes these settings impossible (``'output_padding'`` or ``'padding'``), or None."""
        try:
            self.validate()
        except ValueError:
            if self.output_padding >= max(self.stride, self.dilation):
                return "output_padding"
            return "padding"
        return None

    def formula(self) -> str:
        """The output-size formula with this setting's numbers, e.g. ``(2−1)·2 − 2·1 + 1·(3−1) + 0 + 1 = 3``.

        The value is computed even for impossible settings (it may then be < 1).
        """
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
        raise ValueError(f"step must be an int in 0..{n_steps - 1} (shown as 1..{n_steps}), got {step!r}")
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
        return output_crop(self.settings)

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


def unwritten_mask(settings: Settings) -> np.ndarray:
    """bool[F, F]: the cells of the full output that output_padding adds (its last rows/columns); none is written."""
    F, W = settings.full_size, settings.written_size
    mask = np.zeros((F, F), bool)
    mask[W:, :] = True
    mask[:, W:] = True
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
def forward_matrix(settings: Settings, kernel=None) -> np.ndarray:
    """C: the strided convolution (same kernel, stride, padding, dilation) from out×out to n×n.

    float64[n*n, out*out], row-major on both sides; the transposed convolution is ``C.T``.
    """
    _, w = _values(settings, None, kernel)
    weight = torch.from_numpy(w.copy())[None, None]
    return conv_matrix(weight, settings.out_size, settings.stride, settings.padding, settings.dilation,
                       out_size=settings.in_size).numpy()


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
    step = _check_step(step, settings.in_size ** 2)
    ct = forward_matrix(settings, w).T.copy()            # (out*out, n*n)
    xv = x.reshape(-1)
    partial = ct[:, :step + 1] @ xv[:step + 1]
    return MatrixFrame(settings, step, settings.in_size ** 2, ct, xv, partial)


# ----------------------------------------------------------------------------- convolution and its transpose
@dataclass(frozen=True)
class PairFrame:
    """Step ``step`` of the conv ↔ transpose view, on the full grid F×F (F = out + 2·padding).

    The full grid is both the padded input of the strided convolution (out×out plus ``padding`` on every
    side) and the full output of the transposed convolution (before ``padding`` crops it).
    """

    settings: Settings
    step: int
    n_steps: int
    pixel: tuple[int, int]        # (i, j): output y[i, j] of the convolution = input x[i, j] of the transpose
    taps: np.ndarray              # float64[F, F]: kernel[a, b] at (i*s + a*d, j*s + b*d), NaN elsewhere
    matrix: np.ndarray            # float64[n*n, out*out]: C

    @property
    def crop(self) -> slice:
        """Rows (and columns) of the full grid inside the convolution's input / the transpose's output."""
        return output_crop(self.settings)

    @property
    def window(self) -> np.ndarray:
        """bool[F, F]: the cells under the kernel at this step (padding cells included)."""
        return ~np.isnan(self.taps)

    @property
    def row(self) -> np.ndarray:
        """float64[out, out]: row ``step`` of C (= column ``step`` of C.T) on the output grid."""
        out = self.settings.out_size
        return self.matrix[self.step].reshape(out, out)


def pair_frame(settings: Settings, step: int, x=None, kernel=None) -> PairFrame:
    """The convolution's window of output ``step`` and the transpose's writes of input ``step`` (the same cells)."""
    x, w = _values(settings, x, kernel)
    n, F = settings.in_size, settings.full_size
    step = _check_step(step, n * n)
    rows, cols, _ = scatter_writes(settings, step, x, w)
    taps = np.full((F, F), np.nan)
    taps[rows, cols] = w
    return PairFrame(settings, step, n * n, divmod(step, n), taps, forward_matrix(settings, w))


# ----------------------------------------------------------------------------- 1-D overlap
@dataclass(frozen=True)
class OverlapFrame:
    """Step ``step`` of the 1-D view: copy ``step`` of the kernel lands at cells ``step*s + a*d`` of the full grid."""

    settings: Settings
    step: int
    n_steps: int
    x: np.ndarray                 # float64[n]
    kernel: np.ndarray            # float64[k]
    copies: np.ndarray            # float64[n, F]: x[i] * kernel[a] at i*s + a*d in row i, NaN elsewhere (all copies)
    running: np.ndarray           # float64[F]: sum of copies 0..step
    counts: np.ndarray            # int64[F]: writes received from copies 0..step
    total_counts: np.ndarray      # int64[F]: writes received from all copies
    phase_counts: tuple           # writes per cell by position mod s, away from the borders (long inputs)

    @property
    def crop(self) -> slice:
        """Cells of the full grid that the output keeps."""
        p = self.settings.padding
        return slice(p, p + self.settings.out_size)

    @property
    def even(self) -> bool:
        """True when every cell away from the borders receives the same number of writes."""
        return len(set(self.phase_counts)) == 1


def phase_counts(kernel_size: int, stride: int, dilation: int = 1) -> tuple[int, ...]:
    """Writes per output cell of a long 1-D transposed convolution, by the cell's position mod ``stride``.

    Tap ``a`` of input ``i`` writes cell ``i*s + a*d``, so a cell of phase ``r`` receives one write per tap with
    ``a*d ≡ r (mod s)``. Equal counts for every phase (e.g. k divisible by s when d = 1) mean even overlap.
    """
    return tuple(sum(1 for a in range(kernel_size) if (a * dilation) % stride == r) for r in range(stride))


def overlap_frame(settings: Settings, step: int, x=None, kernel=None) -> OverlapFrame:
    """The 1-D transposed convolution after copies 0..``step``; x float[n] and kernel float[k] default to ones.

    With ones, each output cell's sum is its number of writes: a constant input gives a constant output only
    when the overlap is even.
    """
    settings.validate()
    n, k, s, d, F = (settings.in_size, settings.kernel_size, settings.stride, settings.dilation,
                     settings.full_size)
    x = np.ones(n) if x is None else np.asarray(x, dtype=np.float64)
    w = np.ones(k) if kernel is None else np.asarray(kernel, dtype=np.float64)
    if x.shape != (n,):
        raise ValueError(f"x must have shape ({n},) for in_size={n}, got {x.shape}")
    if w.shape != (k,):
        raise ValueError(f"kernel must have shape ({k},) for kernel_size={k}, got {w.shape}")
    step = _check_step(step, n)
    copies = np.full((n, F), np.nan)
    for i in range(n):
        copies[i, i * s + np.arange(k) * d] = x[i] * w
    written = ~np.isnan(copies)
    running = np.nansum(copies[:step + 1], axis=0)
    return OverlapFrame(settings, step, n, x, w, copies, running, written[:step + 1].sum(0).astype(np.int64),
                        written.sum(0).astype(np.int64), phase_counts(k, s, d))


# ----------------------------------------------------------------------------- any view
def make_frame(settings: Settings, view: str, step: int, x=None, kernel=None):
    """The frame of ``view`` (one of :data:`VIEW_NAMES`) at ``step`` (0-based)."""
    makers = {"scatter": scatter_frame, "gather": gather_frame, "matrix": matrix_frame, "pair": pair_frame,
              "1d": overlap_frame}
    if view not in makers:
        raise ValueError(f"view must be one of {VIEW_NAMES}, got {view!r}")
    return makers[view](settings, step, x, kernel)


def n_steps(settings: Settings, view: str) -> int:
    """Steps of a view: output cells (gather), input cells (1-D) or input pixels (the others)."""
    if view not in VIEW_NAMES:
        raise ValueError(f"view must be one of {VIEW_NAMES}, got {view!r}")
    if view == "gather":
        return settings.out_size ** 2
    return settings.in_size if view == "1d" else settings.in_size ** 2


def frame_image(frame, width: int = 900):
    """The picture of ``frame``: uint8[H, W, 3], at most ``width`` px wide and ``MAX_HEIGHT`` px tall."""
    from .frame_pictures import draw_frame

    return draw_frame(frame, width)


def frame_png(frame, width: int = 900) -> bytes:
    """PNG bytes of :func:`frame_image` (what the explorer displays, one image pixel per screen pixel)."""
    from .frame_pictures import png_bytes

    return png_bytes(frame_image(frame, width))


def frame_caption(frame) -> str:
    """The caption printed above the picture of ``frame`` (steps counted from 1)."""
    from .frame_pictures import panels_of

    return panels_of(frame)[1]
