"""Pictures of the explorer's frames (:mod:`lecturelib.frames`), drawn with PIL.

A picture is a caption (wrapped to the width) above panels side by side; a panel is a grid of cells with
numbers, red outlines, a dashed blue box and hatching. Pictures are meant to be shown at their natural size
(one image pixel per screen pixel): the fonts have fixed sizes, the cells are as large as fit in ``width`` and
``MAX_HEIGHT``. Matrices too tall for that become thumbnails; numbers are left out of cells smaller than
``MIN_NUMBER_CELL`` pixels, and the caption says so.

Frames are drawn with PIL because a frame may hold several hundred numbers: PIL writes them straight into a
raster, where matplotlib would make one text artist per number, which is far slower.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .frames import GatherFrame, MatrixFrame, OverlapFrame, PairFrame, ScatterFrame, unwritten_mask

CELL = 34                  # the largest cell side (px)
MIN_NUMBER_CELL = 16       # cells smaller than this (px) are drawn without their numbers
MAX_HEIGHT = 560           # the tallest picture (px): it fits one laptop screen below the explorer's controls
MARGIN, GAP = 16, 24       # picture margin; space between panels (px)
CAPTION_LINES = 3          # room kept for the caption, so that most steps of a view have the same height
_RED, _BLUE, _GRID, _HATCH = (214, 39, 40), (31, 119, 180), (160, 160, 160), (150, 150, 150)
_GREY, _PALE = (0.88, 0.88, 0.88), (0.94, 0.97, 1.0)


@dataclass
class Panel:
    """One grid of the picture. Arrays are [R, C]; rgb floats in [0, 1]."""

    rgb: np.ndarray
    numbers: np.ndarray | None          # float[R, C] (NaN: no number) or None
    title: str
    outline: np.ndarray | None = None   # bool[R, C]: cells framed in red
    box: tuple | None = None            # (row, col, height, width): a dashed blue rectangle
    hatch: np.ndarray | None = None     # bool[R, C]: cells that nothing writes (hatched)
    band: tuple | None = None           # (axis, index): a red frame around a whole row (0) or column (1)
    matrix: bool = False                # may shrink below the other panels' cells, down to a thumbnail
    row_labels: tuple | None = None     # text left of each row

    @property
    def shape(self) -> tuple[int, int]:
        return self.rgb.shape[0], self.rgb.shape[1]


@lru_cache(maxsize=32)
def _font(size: int):
    import matplotlib
    from PIL import ImageFont

    return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf"), size)


@lru_cache(maxsize=4096)
def _length(size: int, text: str) -> float:
    """Width in px of ``text`` in the course font at ``size`` (cached: captions repeat from frame to frame)."""
    return _font(size).getlength(text)


def _fmt(v: float) -> str:
    if np.isnan(v):
        return ""
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"


def _shade(values: np.ndarray, vmax: float | None = None, color=(0.30, 0.55, 0.90),
           strength: float = 0.6) -> np.ndarray:
    """White -> ``color`` by |value| / vmax (at most ``strength`` of the way): float[R, C, 3]."""
    v = np.nan_to_num(np.abs(values.astype(np.float64)))
    top = vmax if vmax else max(float(v.max()), 1e-9)
    t = np.clip(v / top, 0, 1)[..., None] * strength
    return 1 - t * (1 - np.asarray(color))


def _wrap(text: str, size: int, max_width: int) -> list[str]:
    """Greedy word wrap of ``text`` to lines at most ``max_width`` px wide in the font of ``size`` px."""
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            trial = f"{line} {word}" if line else word
            if line and _length(size, trial) > max_width:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return lines


# ----------------------------------------------------------------------------- layout
@dataclass
class _Placed:
    panel: Panel
    cell_x: float      # px per column
    cell_y: float      # px per row
    slot: int          # width of the panel's column in the picture, title and row labels included
    label_w: int       # width of the row labels

    @property
    def thumbnail(self) -> bool:
        return self.cell_y < 2

    @property
    def numbers_shown(self) -> bool:
        return self.panel.numbers is not None and min(self.cell_x, self.cell_y) >= MIN_NUMBER_CELL


def _place(panels: list[Panel], cell: int, budget: int) -> list[_Placed]:
    placed = []
    for p in panels:
        R, C = p.shape
        if p.matrix:
            cy = min(float(cell), budget / R)
            cy = float(int(cy)) if cy >= 2 else cy
            cx = cy if cy >= 2 else 3.0
        else:
            cx = cy = float(cell)
        label_w = int(max(_length(12, t) for t in p.row_labels)) + 8 if p.row_labels else 0
        title_w = int(max(_length(13, t) for t in p.title.split("\n"))) + 4
        placed.append(_Placed(p, cx, cy, max(label_w + int(round(C * cx)), title_w), label_w))
    return placed


def _layout(panels: list[Panel], caption: str, width: int) -> tuple[list[_Placed], list[str], int]:
    """Choose the cell size: the largest (up to CELL) that fits ``width`` and MAX_HEIGHT. Returns the placed
    panels, the caption lines (with a note when numbers are hidden) and the top of the grids."""
    title_lines = max(p.title.count("\n") + 1 for p in panels)
    note = ""
    for _ in range(3):                        # the note may add a caption line, which shrinks the budget
        lines = _wrap(caption + note, 14, width - 2 * MARGIN)
        top = 8 + 18 * max(len(lines), CAPTION_LINES) + 8 + 17 * title_lines + 6
        budget = MAX_HEIGHT - top - MARGIN
        for cell in range(CELL, 1, -1):
            placed = _place(panels, cell, budget)
            fits_w = sum(q.slot for q in placed) + GAP * (len(placed) - 1) <= width - 2 * MARGIN
            fits_h = all(q.panel.shape[0] * q.cell_y <= budget for q in placed)
            if fits_w and fits_h:
                break
        hidden = [q for q in placed if q.panel.numbers is not None and not q.numbers_shown]
        new_note = ""
        if hidden:
            names = "; ".join(q.panel.title.replace("\n", " ") for q in hidden)
            new_note = (f" Numbers hidden in {names}: the cells are smaller than {MIN_NUMBER_CELL} px "
                        f"(smaller sizes show them).")
        if new_note == note:
            break
        note = new_note
    return placed, _wrap(caption + note, 14, width - 2 * MARGIN), top


# ----------------------------------------------------------------------------- drawing
def _dashed_rect(draw, x0: int, y0: int, x1: int, y1: int, color, width: int = 2, dash: int = 6) -> None:
    for x in range(x0, x1, 2 * dash):
        draw.line([(x, y0), (min(x + dash, x1), y0)], fill=color, width=width)
        draw.line([(x, y1), (min(x + dash, x1), y1)], fill=color, width=width)
    for y in range(y0, y1, 2 * dash):
        draw.line([(x0, y), (x0, min(y + dash, y1))], fill=color, width=width)
        draw.line([(x1, y), (x1, min(y + dash, y1))], fill=color, width=width)


def _draw_grid(img, draw, q: _Placed, x0: int, y0: int) -> None:
    from PIL import Image

    p = q.panel
    R, C = p.shape
    colours = np.round(np.clip(p.rgb, 0, 1) * 255).astype(np.uint8)
    if q.thumbnail:                       # a reduced picture of the matrix: no grid, numbers or cell outlines
        w, h = int(round(C * q.cell_x)), max(int(round(R * q.cell_y)), 1)
        img.paste(Image.fromarray(colours).resize((w, h), Image.BOX), (x0, y0))
        draw.rectangle([x0, y0, x0 + w, y0 + h], outline=_GRID, width=1)
    else:
        c = int(q.cell_x)
        img.paste(Image.fromarray(np.repeat(np.repeat(colours, c, axis=0), c, axis=1)), (x0, y0))
        if c >= 6:
            for r in range(R + 1):
                draw.line([(x0, y0 + r * c), (x0 + C * c, y0 + r * c)], fill=_GRID, width=1)
            for k in range(C + 1):
                draw.line([(x0 + k * c, y0), (x0 + k * c, y0 + R * c)], fill=_GRID, width=1)
        else:
            draw.rectangle([x0, y0, x0 + C * c, y0 + R * c], outline=_GRID, width=1)
        if p.hatch is not None:
            for r, k in zip(*np.nonzero(p.hatch)):
                for f in (0.25, 0.6):
                    draw.line([(x0 + k * c, y0 + r * c + f * c), (x0 + k * c + f * c, y0 + r * c)], fill=_HATCH)
                    draw.line([(x0 + k * c + f * c, y0 + (r + 1) * c), (x0 + (k + 1) * c, y0 + r * c + f * c)],
                              fill=_HATCH)
        if q.numbers_shown:
            for r in range(R):
                for k in range(C):
                    txt = _fmt(p.numbers[r, k])
                    if not txt:
                        continue
                    size = min(15, int(c * 0.45))
                    while size > 7 and _length(size, txt) > c - 3:
                        size -= 1
                    draw.text((x0 + k * c + c / 2, y0 + r * c + c / 2), txt, fill=(0, 0, 0), font=_font(size),
                              anchor="mm")
        if p.outline is not None:
            for r, k in zip(*np.nonzero(p.outline)):
                draw.rectangle([x0 + k * c, y0 + r * c, x0 + (k + 1) * c, y0 + (r + 1) * c], outline=_RED,
                               width=2 if c >= 8 else 1)
    sx, sy = q.cell_x, q.cell_y
    if p.band is not None:
        axis, index = p.band
        if axis == 0:
            box = [x0 - 1, y0 + index * sy - 1, x0 + C * sx + 1, y0 + (index + 1) * sy + 1]
        else:
            box = [x0 + index * sx - 1, y0 - 1, x0 + (index + 1) * sx + 1, y0 + R * sy + 1]
        draw.rectangle([int(round(v)) for v in box], outline=_RED, width=2)
    if p.box is not None:
        br, bc, bh, bw = p.box
        _dashed_rect(draw, int(x0 + bc * sx), int(y0 + br * sy), int(x0 + (bc + bw) * sx), int(y0 + (br + bh) * sy),
                     _BLUE)


def draw_panels(panels: list[Panel], caption: str, width: int = 900) -> np.ndarray:
    """Lay out ``panels`` side by side under ``caption``: uint8[H, width, 3] with H <= MAX_HEIGHT."""
    from PIL import Image, ImageDraw

    placed, lines, top = _layout(panels, caption, width)
    caption_font, title_font, label_font = _font(14), _font(13), _font(12)
    W = width
    H = top + int(max(q.panel.shape[0] * q.cell_y for q in placed)) + MARGIN
    img = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((MARGIN, 8 + 18 * i), line, fill=(0, 0, 0), font=caption_font)
    x = MARGIN
    for q in placed:
        p = q.panel
        draw.multiline_text((x + q.slot // 2, top - 17 * (p.title.count("\n") + 1) - 6), p.title, fill=(0, 0, 0),
                            font=title_font, anchor="ma", align="center", spacing=4)
        grid_w = int(round(p.shape[1] * q.cell_x))
        x0 = x + q.label_w + (q.slot - q.label_w - grid_w) // 2
        if p.row_labels:
            for r, label in enumerate(p.row_labels):
                draw.text((x0 - 6, top + (r + 0.5) * q.cell_y), label, fill=(0, 0, 0), font=label_font, anchor="rm")
        _draw_grid(img, draw, q, x0, top)
        x += q.slot + GAP
    return np.asarray(img)


def png_bytes(img: np.ndarray) -> bytes:
    """PNG bytes of a uint8[H, W, 3] picture."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="png", compress_level=1)     # fast: a frame is sent, not stored
    return buf.getvalue()


# ----------------------------------------------------------------------------- the views
def _one(shape, index) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[index] = True
    return mask


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _output_padding_text(st) -> str:
    op, p = st.output_padding, st.padding
    if op == 0:
        return ""
    kept = max(op - p, 0)
    lines = "a row and a column" if op == 1 else f"{op} rows and {op} columns"
    if kept:
        fate = f"the output keeps {kept} of them, as zeros"
    else:
        more = "row and column" if op == 1 else "rows and columns"
        fate = f"padding crops them, so the output keeps {op} more written {more}"
    return f" Hatched: output_padding={op} adds {lines} at the bottom/right that nothing writes; {fate}."


def _scatter_panels(f: ScatterFrame):
    st = f.settings
    F = st.full_size
    i, j = f.pixel
    box = (st.padding, st.padding, st.out_size, st.out_size)
    hatch = unwritten_mask(st)
    panels = [
        Panel(_shade(f.x), f.x, "input x", _one(f.x.shape, (i, j))),
        Panel(_shade(f.kernel), f.kernel, "kernel w"),
        Panel(_shade(f.values), f.values, f"x[{i},{j}] \u00b7 w"),
        Panel(_shade(f.running), np.where(f.counts > 0, f.running, np.nan), f"running sums\n(full {F}\u00d7{F})",
              f.written, box, hatch),
        Panel(_shade(f.counts, vmax=max(int(f.total_counts.max()), 1), color=(0.95, 0.55, 0.15)),
              np.where(f.counts > 0, f.counts, np.nan), "writes per cell\nso far", f.written, box, hatch),
    ]
    caption = (f"scatter, step {f.step + 1}/{f.n_steps}: x[{i},{j}] = {_fmt(f.x[i, j])} scales the kernel w; the copy "
               f"is added at rows {f.rows[0, 0]}..{f.rows[-1, 0]}, columns {f.cols[0, 0]}..{f.cols[0, -1]} of the "
               f"full output. Dashed: the {st.out_size}\u00d7{st.out_size} output left when padding={st.padding} crops "
               f"{_plural(st.padding, 'cell')} from every side." + _output_padding_text(st))
    return panels, caption


def _gather_panels(f: GatherFrame):
    st = f.settings
    k, out, op = st.kernel_size, st.out_size, st.output_padding
    colors = np.array([_GREY, [1.0, 1.0, 1.0], [0.72, 0.84, 1.0]])  # padding, inserted zero, input
    window = np.zeros(f.padded.shape, bool)
    window[f.rows, f.cols] = True
    q = st.gather_pad
    pad_txt = (f"padded by d(k\u22121)\u2212p = {q}" if q >= 0 else f"d(k\u22121)\u2212p = {q}: cropped by {-q}")
    if op:
        pad_txt += f", +{op} bottom/right"
    oi, oj = f.cell
    panels = [
        Panel(colors[f.kind], f.padded, f"zero-inserted input\n{pad_txt}", window),
        Panel(_shade(f.flipped), f.flipped, "flipped\nkernel"),
        Panel(_shade(f.output), f.output, f"output\n{out}\u00d7{out}", _one((out, out), (oi, oj))),
    ]
    caption = (f"gather, step {f.step + 1}/{f.n_steps}: y[{oi},{oj}] = sum(window \u00b7 flipped kernel) = "
               f"{_fmt(f.value)}  (grey: padding, white: inserted zeros, blue: input; k={k}, s={st.stride}"
               + (f"; output_padding={op} pads {op} more at the bottom/right" if op else "") + ")")
    return panels, caption


def _matrix_panels(f: MatrixFrame):
    st = f.settings
    rows, cols = f.matrix_t.shape
    n, out, t = st.in_size, st.out_size, f.step
    i, j = divmod(t, n)
    col = np.zeros_like(f.matrix_t, dtype=bool)
    col[:, t] = f.matrix_t[:, t] != 0
    xv = f.x_vec[:, None]
    column = f.column.reshape(out, out)
    touched = (f.matrix_t[:, :t + 1] != 0).any(axis=1).reshape(out, out)
    y = f.partial.reshape(out, out)
    panels = [
        Panel(_shade(f.matrix_t, strength=0.85), np.where(f.matrix_t != 0, f.matrix_t, np.nan),
              f"C\u1d40 ({rows}\u00d7{cols})",
              col, band=(1, t), matrix=True),
        Panel(_shade(xv), xv, "x", _one(xv.shape, (t, 0)), matrix=True),
        Panel(_shade(column), np.where(column != 0, column, np.nan), f"column {t + 1} of C\u1d40\nas {out}\u00d7{out}",
              column != 0),
        Panel(_shade(y), np.where(touched, y, np.nan), f"y = C\u1d40x so far\n({out}\u00d7{out})"),
    ]
    caption = (f"matrix, step {t + 1}/{f.n_steps}: y += x[{i},{j}] \u00b7 column {t + 1} of C\u1d40. That column is "
               f"where x[{i},{j}] writes: the kernel, placed and cropped. C is the stride-{st.stride} convolution "
               f"{out}\u00d7{out} \u2192 {n}\u00d7{n}; C\u1d40 maps {n}\u00d7{n} \u2192 {out}\u00d7{out}.")
    return panels, caption


def _kernel_max(f: PairFrame) -> float:
    return max(float(np.nanmax(np.abs(f.taps))), 1e-9)


def _pair_panels(f: PairFrame):
    st = f.settings
    n, out, p, t = st.in_size, st.out_size, st.padding, f.step
    i, j = f.pixel
    inside = np.zeros(f.taps.shape, bool)
    inside[f.crop, f.crop] = True
    grid = np.where(inside[..., None], _PALE, _GREY)
    grid = np.where((f.window & inside)[..., None], _shade(np.nan_to_num(f.taps), vmax=_kernel_max(f)), grid)
    box = (p, p, out, out)
    here = _one((n, n), (i, j))
    ct = f.matrix.T
    panels = [
        Panel(grid, f.taps, f"convolution C: input\n{out}\u00d7{out}, padding {p}", f.window, box),
        Panel(np.where(here[..., None], (1.0, 0.85, 0.85), (1.0, 1.0, 1.0)), None, f"its output y\n{n}\u00d7{n}",
              here),
        Panel(_shade(ct, strength=0.85), np.where(ct != 0, ct, np.nan),
              f"column {t + 1} of C\u1d40\n= row {t + 1} of C",
              band=(1, t), matrix=True),
        Panel(np.where(here[..., None], (1.0, 0.85, 0.85), (1.0, 1.0, 1.0)), None, f"transpose C\u1d40:\ninput x "
              f"{n}\u00d7{n}", here),
        Panel(grid, f.taps, f"full output of C\u1d40x\ncrop {p} \u2192 {out}\u00d7{out}", f.window, box,
              unwritten_mask(st)),
    ]
    caption = (f"conv \u2194 transpose, step {t + 1}/{f.n_steps}: the window that y[{i},{j}] reads in the "
               f"stride-{st.stride} convolution (row {t + 1} of C) is exactly where x[{i},{j}] writes in the "
               f"transposed convolution (column {t + 1} of C\u1d40): same cells, same weights. Grey: the "
               f"convolution's padding = the cells the transposed convolution crops.")
    return panels, caption


def _overlap_panels(f: OverlapFrame):
    st = f.settings
    n, k, s, d, F = st.in_size, st.kernel_size, st.stride, st.dilation, st.full_size
    future = (np.arange(n) > f.step)[:, None] & ~np.isnan(f.copies)
    copies_rgb = np.where(future[..., None], _GREY, _shade(f.copies, vmax=float(np.nanmax(np.abs(f.copies)))))
    counts_rgb = _shade(f.total_counts, vmax=max(int(f.total_counts.max()), 1), color=(0.95, 0.55, 0.15))
    rgb = np.concatenate([copies_rgb, _shade(f.running[None]), counts_rgb[None]])
    numbers = np.concatenate([np.where(future, np.nan, f.copies), np.where(f.counts > 0, f.running, np.nan)[None],
                              np.where(f.total_counts > 0, f.total_counts, np.nan)[None]])
    outline = np.zeros(rgb.shape[:2], bool)
    outline[f.step] = ~np.isnan(f.copies[f.step])
    hatch = np.zeros(rgb.shape[:2], bool)
    hatch[:, st.written_size:] = True
    labels = tuple(f"x[{i}]={_fmt(f.x[i])} \u00b7 w" for i in range(n)) + ("sum so far", "writes, all copies")
    panel = Panel(rgb, numbers, f"1-D: {n} inputs \u2192 full output of {F} cells", outline,
                  (0, st.padding, n + 2, st.out_size), hatch, row_labels=labels)
    cells = np.nonzero(outline[f.step])[0]
    if f.even:
        verdict = (f"Even overlap: every cell away from the borders gets {_plural(f.phase_counts[0], 'write')}, so a "
                   f"constant input gives a constant output there.")
    else:
        counts = ", ".join(str(c) for c in f.phase_counts)
        verdict = (f"Uneven overlap: away from the borders, a cell gets {counts} writes by its position mod {s}, so "
                   f"a constant input gives a striped output: the checkerboard artifacts of \u00a7 9.")
    caption = (f"1-D overlap, step {f.step + 1}/{f.n_steps}: copy {f.step + 1} of the kernel ({_plural(k, 'tap')}, "
               f"dilation {d}) lands at cells {cells[0]}..{cells[-1]}; each input moves it {_plural(s, 'cell')}. "
               + verdict + " Dashed: the output.")
    return [panel], caption


def panels_of(frame) -> tuple[list[Panel], str]:
    """The panels and caption of any frame of :mod:`lecturelib.frames` (ValueError for anything else)."""
    builders = {ScatterFrame: _scatter_panels, GatherFrame: _gather_panels, MatrixFrame: _matrix_panels,
                PairFrame: _pair_panels, OverlapFrame: _overlap_panels}
    if type(frame) not in builders:
        raise ValueError("frame must be a ScatterFrame, GatherFrame, MatrixFrame, PairFrame or OverlapFrame, got "
                         f"{type(frame).__name__}")
    return builders[type(frame)](frame)


def caption_lines(frame, width: int = 900) -> list[str]:
    """The caption of ``frame``'s picture as drawn: wrapped to ``width``, with the note when numbers are hidden."""
    panels, caption = panels_of(frame)
    return _layout(panels, caption, width)[1]


def draw_frame(frame, width: int = 900) -> np.ndarray:
    """The picture of ``frame``: uint8[H, W, 3] with W <= ``width`` and H <= MAX_HEIGHT."""
    panels, caption = panels_of(frame)
    return draw_panels(panels, caption, width)
