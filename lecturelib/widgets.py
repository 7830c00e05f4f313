"""The transposed-convolution explorer: a thin ipywidgets layer over :mod:`lecturelib.frames`.

    from lecturelib.widgets import transposed_conv_explorer
    transposed_conv_explorer()          # in a notebook cell

Sliders choose the input size, kernel size, stride, padding, output_padding and dilation; a step slider
(numbered from 1) with a Play button walks through the steps; a toggle picks the view: scatter, gather,
matrix, conv ↔ transpose, 1-D overlap. The picture is an ``ipywidgets.Image`` holding the PNG of
:func:`lecturelib.frames.frame_png`, shown at its natural size.

* Invalid settings keep the last picture, greyed out, show the message, and mark the offending value in the
  formula line (never a traceback).
* When the step count changes, the step slider and Play button are built anew: raising the ``max`` of a live
  slider leaves its Home/End keys on the old range in the browser.
* A kernel restart marks the explorer as disconnected: a note asks to run the cell again (pure CSS on the
  class ipywidgets gives disconnected views).
* Displayed, the explorer also offers a static PNG of its picture, which is what a notebook shows where the
  widget cannot run; :func:`strip_live_widgets` removes its widget state from an executed notebook, so that a
  committed notebook shows that picture instead of a widget that cannot work.
"""
from __future__ import annotations

import base64
import html
import io
import re

import ipywidgets as W

from .frames import VIEW_LABELS, VIEW_NAMES, Settings, frame_png, make_frame, n_steps

# CSS classes: the browser test finds the parts of the widget by them
CSS = {"root": "tc-explorer", "size": "tc-size", "message": "tc-message", "hint": "tc-hint", "picture": "tc-picture",
       "step": "tc-step", "play": "tc-play", "view": "tc-view", "steps_note": "tc-steps-note",
       "stale": "tc-stale", "offending": "tc-offending", "disconnected": "tc-disconnected-note"}
LIVE_ONLY = "lecturelib-live-only"   # root class of widgets whose stored state cannot work without their kernel

SLIDERS = (  # (settings field, label, min, max, tooltip)
    ("in_size", "input size", 1, 6, "n: the input is n\u00d7n"),
    ("kernel_size", "kernel size", 1, 5, "k: the kernel is k\u00d7k"),
    ("stride", "stride", 1, 4, "s: one step in the input moves the kernel's copy s cells in the output"),
    ("padding", "padding", 0, 4, "p: cells cropped from every side of the full output"),
    ("output_padding", "output_padding", 0, 3, "cells added at the bottom/right of the full output; nothing writes "
                                               "them; must be smaller than the stride or the dilation"),
    ("dilation", "dilation", 1, 3, "d: the kernel's taps are d cells apart"),
)
HINTS = {
    "scatter": "Scatter: each step takes one input pixel, scales the kernel w by it and adds the copy into the full "
               "output; padding then crops it to the dashed box.",
    "gather": "Gather: each step computes one output cell, the dot product of the flipped kernel with a window of "
              "the zero-inserted, padded input (a stride-1 convolution).",
    "matrix": "Matrix: the transposed convolution is y = C\u1d40x; each step adds one input value times its column "
              "of C\u1d40.",
    "pair": "Conv \u2194 transpose: the window that the strided convolution reads for y[t] (row t of C) is where the "
            "transposed convolution writes x[t] (column t of C\u1d40): the backward pass of the convolution.",
    "1d": "1-D overlap: constant input and kernel. Where copies overlap unevenly the output is striped: the cause "
          "of the checkerboard artifacts of \u00a7 9.",
}
STEP_WARNING = 100          # more steps than this: say how long Play takes
PLAY_SECONDS = 60           # Play speeds up (down to MIN_INTERVAL_MS a step) to show every step in about this time
MIN_INTERVAL_MS, MAX_INTERVAL_MS = 250, 900
STATIC_TEXT = ("Transposed-convolution explorer (interactive: run this cell with a live kernel to use it; "
               "the picture is its first frame)")
# shown only when ipywidgets marks the views disconnected (the kernel restarted): grey the picture, freeze the controls
DISCONNECTED_HTML = f"""<style>
.{CSS['root']} .{CSS['disconnected']}-text {{display: none}}
.{CSS['root']}.jupyter-widgets-disconnected .{CSS['disconnected']}-text {{display: block; color: #b00020;
  font-weight: bold; padding: 4px 0}}
.{CSS['root']}.jupyter-widgets-disconnected .{CSS['picture']} {{opacity: 0.35; filter: grayscale(1)}}
.{CSS['root']}.jupyter-widgets-disconnected .widget-slider,
.{CSS['root']}.jupyter-widgets-disconnected .widget-toggle-buttons,
.{CSS['root']}.jupyter-widgets-disconnected .widget-play {{pointer-events: none; opacity: 0.5}}
.{CSS['root']}.jupyter-widgets-disconnected::before,
.{CSS['root']} .jupyter-widgets-disconnected::before {{display: none}}
</style><div class="{CSS['disconnected']}-text">\u26a0 The kernel behind this explorer has restarted or stopped: it no
longer redraws. Run this cell again (it imports what it needs).</div>"""


def _greyed(png: bytes) -> bytes:
    """The picture in light grey: what an invalid setting leaves on screen."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("L").point(lambda v: int(165 + 0.35 * v))
    buf = io.BytesIO()
    img.save(buf, format="png")
    return buf.getvalue()


def play_interval_ms(count: int) -> int:
    """Milliseconds between Play's steps: 900 ms, faster for many steps (whole run about PLAY_SECONDS), >= 250."""
    return int(min(MAX_INTERVAL_MS, max(MIN_INTERVAL_MS, 1000 * PLAY_SECONDS // max(count, 1))))


def steps_note(count: int) -> str:
    """The warning shown beside the step slider when a view has many steps ('' otherwise)."""
    if count <= STEP_WARNING:
        return ""
    interval = play_interval_ms(count)
    return (f"{count:,} steps: \u25b6 shows one every {interval / 1000:.2g} s ({count * interval / 60000:.1f} min in "
            f"all); drag the slider instead, or choose smaller sizes")


def formula_html(st: Settings) -> str:
    """The output-size line: the formula with the setting's numbers; an impossible value is marked (class
    ``tc-offending``) and the size reads 'invalid'."""
    n, k, s, p, op, d = (st.in_size, st.kernel_size, st.stride, st.padding, st.output_padding, st.dilation)
    bad = st.offending()

    def mark(field: str, value: int) -> str:
        if field != bad:
            return str(value)
        return f"<span class='{CSS['offending']}' style='color:#b00020;font-weight:bold'>{value}</span>"

    full = st.full_size
    out = full - 2 * p
    result = "invalid" if bad else str(out)       # a refused setting has no output size, not a number
    size = "<b>output size: invalid</b>" if bad else f"<b>output size: {out}\u00d7{out}</b>"
    return (f"{size} (input {n}\u00d7{n}) = full {full} \u2212 2\u00b7padding {mark('padding', p)} = {result}<br>"
            f"full = (n\u22121)\u00b7s + d\u00b7(k\u22121) + 1 + output_padding = ({n}\u22121)\u00b7{s} + "
            f"{d}\u00b7({k}\u22121) + 1 + {mark('output_padding', op)} = {full}"
            + (" (the output_padding cells are never written)" if op else ""))



def bundle_with_still(ui, png: bytes, text: str, **kwargs) -> dict:
    """The MIME bundle of a widget box ``ui`` with its current frame ``png`` added as a static image/png and ``text``
    as its text/plain, so a stored notebook, GitHub or the course site shows the picture where no kernel runs it."""
    bundle = ui._repr_mimebundle_(**kwargs)
    bundle["text/plain"] = text
    if png:
        bundle["image/png"] = base64.b64encode(png).decode("ascii")
    return bundle

class TransposedConvExplorer:
    """The widget. ``.ui`` is the ipywidgets box; displaying the object displays it.

    Args:
        settings: the starting sizes (every value inside its slider's range, else ValueError).
        view: one of :data:`lecturelib.frames.VIEW_NAMES`.
        step: the starting step, counted from 1 (ValueError outside 1..steps of the view).
        width: the picture's width in pixels.
    """

    def __init__(self, settings: Settings | None = None, view: str = "scatter", step: int = 1, width: int = 900):
        settings = settings or Settings()
        if view not in VIEW_NAMES:
            raise ValueError(f"view must be one of {VIEW_NAMES}, got {view!r}")
        self.width = width
        style = {"description_width": "110px"}
        self.sliders = {}
        for field, label, lo, hi, tip in SLIDERS:
            value = getattr(settings, field)
            if not lo <= value <= hi:
                raise ValueError(f"{field}={value} is outside the slider range {lo}..{hi}")
            s = W.IntSlider(value=value, min=lo, max=hi, description=label, style=style, tooltip=tip,
                            layout=W.Layout(width="330px"), continuous_update=False)
            s.add_class(f"tc-{field.replace('_', '-')}")
            self.sliders[field] = s
        self.view = W.ToggleButtons(options=[(VIEW_LABELS[v], v) for v in VIEW_NAMES], value=view,
                                    tooltips=[HINTS[v].split(":")[0] for v in VIEW_NAMES],
                                    style={"button_width": "auto"})
        self.view.add_class(CSS["view"])
        self.step = self.play = self._link = None
        self.steps_note = W.HTML()
        self.steps_note.add_class(CSS["steps_note"])
        self.step_row = W.HBox([self.steps_note])
        self.size = W.HTML()
        self.size.add_class(CSS["size"])
        self.hint = W.HTML()
        self.hint.add_class(CSS["hint"])
        self.message = W.HTML(layout=W.Layout(display="none"))
        self.message.add_class(CSS["message"])
        self.picture = W.Image(format="png", layout=W.Layout(align_self="flex-start", max_width="100%",
                                                             height="auto"))
        self.picture.add_class(CSS["picture"])
        self._png = self._stale_png = b""
        disconnected = W.HTML(DISCONNECTED_HTML)
        disconnected.add_class(CSS["disconnected"])
        controls = W.HBox([W.VBox(list(self.sliders.values())[:3]), W.VBox(list(self.sliders.values())[3:])])
        # a fixed height for the hint or the message, so that the picture does not move when a setting is invalid
        status = W.VBox([self.hint, self.message], layout=W.Layout(height="48px", overflow="auto"))
        self.ui = W.VBox([controls, W.HBox([W.Label("view", layout=W.Layout(width="110px")), self.view]),
                          self.step_row, self.size, status, disconnected, self.picture])
        self.ui.add_class(CSS["root"])
        self.ui.add_class(LIVE_ONLY)
        for s in self.sliders.values():
            s.observe(self._on_settings, names="value")
        self.view.observe(self._on_settings, names="value")
        count = self._count()
        if not 1 <= step <= max(count, 1):
            raise ValueError(f"step must be in 1..{count} for the {view} view, got {step}")
        self._build_stepper(max(count, 1), step)
        self._draw()

    # ------------------------------------------------------------------ state
    @property
    def settings(self) -> Settings:
        return Settings(**{field: s.value for field, s in self.sliders.items()})

    def _count(self) -> int:
        """Steps of the current view, 0 for impossible settings."""
        st = self.settings
        return 0 if st.offending() else n_steps(st, self.view.value)

    def _build_stepper(self, count: int, value: int) -> None:
        """A new step slider and Play button for 1..count (a live slider keeps Home/End on its first range)."""
        old = (self._link, self.play, self.step)
        tip = "walk through the steps, counted from 1"
        self.step = W.IntSlider(value=value, min=1, max=count, description="step", tooltip=tip,
                                style={"description_width": "40px"}, layout=W.Layout(width="420px"),
                                continuous_update=True)
        self.step.add_class(CSS["step"])
        self.play = W.Play(value=value, min=1, max=count, interval=play_interval_ms(count), show_repeat=False,
                           tooltip="\u25b6 play / \u23f8 pause: one step every "
                                   f"{play_interval_ms(count) / 1000:.2g} s; \u25a0 stop: back to step 1")
        self.play.add_class(CSS["play"])
        self._link = W.jslink((self.play, "value"), (self.step, "value"))
        self.step.observe(self._on_step, names="value")
        self.steps_note.value = html.escape(steps_note(count))
        self.step_row.children = (self.play, self.step, self.steps_note)
        for widget in old:
            if widget is not None:
                widget.close()

    # ------------------------------------------------------------------ callbacks
    def _on_settings(self, _change=None) -> None:
        count = self._count()
        if count and count != self.step.max:
            self._build_stepper(count, min(self.step.value, count))
        self._draw()

    def _on_step(self, _change=None) -> None:
        self._draw()

    def _draw(self) -> None:
        st = self.settings
        self.size.value = formula_html(st)
        try:
            st.validate()
            error = ""
        except ValueError as exc:
            error = str(exc)
        if error:
            self.message.value = f"<div style='color:#b00020;line-height:1.3'><b>\u26a0</b> {html.escape(error)}</div>"
            self.message.layout.display = None
            self.hint.layout.display = "none"
            if self._png and not self._stale_png:
                self._stale_png = _greyed(self._png)
                self.picture.value = self._stale_png
            self.picture.add_class(CSS["stale"])
            return
        self.message.layout.display = "none"
        self.hint.value = f"<div style='color:#555;line-height:1.3'>{html.escape(HINTS[self.view.value])}</div>"
        self.hint.layout.display = None
        png = frame_png(make_frame(st, self.view.value, self.step.value - 1), width=self.width)
        self._png, self._stale_png = png, b""
        self.picture.width = str(int.from_bytes(png[16:20], "big"))      # the PNG header's width: natural size
        self.picture.value = png
        self.picture.remove_class(CSS["stale"])

    def _repr_mimebundle_(self, **kwargs):
        return bundle_with_still(self.ui, self._png, STATIC_TEXT, **kwargs)


def transposed_conv_explorer(in_size: int = 2, kernel_size: int = 3, stride: int = 2, padding: int = 1,
                             output_padding: int = 1, dilation: int = 1,
                             view: str = "scatter") -> TransposedConvExplorer:
    """The lesson's explorer, starting at the slide's 3×3 transposed convolution, stride 2, pad 1: 2×2 → 4×4."""
    return TransposedConvExplorer(Settings(in_size, kernel_size, stride, padding, output_padding, dilation), view)


# ----------------------------------------------------------------------------- committed notebooks
_REF = re.compile(r"IPY_MODEL_([0-9a-f]+)")
_VIEW = "application/vnd.jupyter.widget-view+json"
_STATE = "application/vnd.jupyter.widget-state+json"


def _references(value) -> set[str]:
    return set(_REF.findall(repr(value)))


def strip_live_widgets(nb) -> int:
    """Remove from an executed notebook (nbformat node, changed in place) the stored state of every widget whose
    root has the class :data:`LIVE_ONLY`, its parts and the widgets linked to them, and those widgets' views from
    the outputs (their static PNG and text stay). Returns the number of widget models removed."""
    state = nb.metadata.get("widgets", {}).get(_STATE, {}).get("state", {})
    drop = {mid for mid, m in state.items() if LIVE_ONLY in m.get("state", {}).get("_dom_classes", [])}
    changed = True
    while changed:
        before = len(drop)
        for mid, m in state.items():
            refs = _references(m.get("state", {}))
            if mid in drop:
                drop |= refs & set(state)
            elif refs & drop:
                drop.add(mid)
        changed = len(drop) != before
    for mid in drop:
        del state[mid]
    if "widgets" in nb.metadata and not state:
        del nb.metadata["widgets"]
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(_VIEW)
            if view is not None and (view.get("model_id") in drop or view.get("model_id") not in state):
                del output["data"][_VIEW]
    return len(drop)
