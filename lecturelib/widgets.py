"""The transposed-convolution explorer: a thin ipywidgets layer over :mod:`lecturelib.frames`.

    from lecturelib.widgets import transposed_conv_explorer
    transposed_conv_explorer()          # in a notebook cell

Sliders choose the input size, kernel size, stride, padding, output_padding and dilation; a step
slider with a Play button walks through the steps; a toggle picks the scatter, gather or matrix view.
The picture is an ``ipywidgets.Image`` holding the PNG of :func:`lecturelib.frames.frame_png`.
Invalid settings show their message inside the widget (never a traceback).
"""
from __future__ import annotations

import html

import ipywidgets as W

from .frames import VIEW_NAMES, Settings, frame_png, make_frame, n_steps

# CSS classes: the browser test finds the parts of the widget by them
CSS = {"root": "tc-explorer", "size": "tc-size", "message": "tc-message", "picture": "tc-picture",
       "step": "tc-step", "play": "tc-play", "view": "tc-view"}

SLIDERS = (  # (settings field, label, min, max)
    ("in_size", "input size", 1, 6),
    ("kernel_size", "kernel size", 1, 5),
    ("stride", "stride", 1, 4),
    ("padding", "padding", 0, 4),
    ("output_padding", "output_padding", 0, 3),
    ("dilation", "dilation", 1, 3),
)


class TransposedConvExplorer:
    """The widget. ``.ui`` is the ipywidgets box; displaying the object displays it."""

    def __init__(self, settings: Settings | None = None, view: str = "scatter", step: int = 0, width: int = 900):
        settings = settings or Settings()
        if view not in VIEW_NAMES:
            raise ValueError(f"view must be one of {VIEW_NAMES}, got {view!r}")
        self.width = width
        style = {"description_width": "110px"}
        layout = W.Layout(width="330px")
        self.sliders = {}
        for field, label, lo, hi in SLIDERS:
            value = getattr(settings, field)
            if not lo <= value <= hi:
                raise ValueError(f"{field}={value} is outside the slider range {lo}..{hi}")
            s = W.IntSlider(value=value, min=lo, max=hi, description=label, style=style, layout=layout,
                            continuous_update=False)
            s.add_class(f"tc-{field.replace('_', '-')}")
            self.sliders[field] = s
        self.view = W.ToggleButtons(options=list(VIEW_NAMES), value=view, description="view", style=style)
        self.view.add_class(CSS["view"])
        self.step = W.IntSlider(value=step, min=0, max=max(step, 0), description="step", style=style,
                                layout=W.Layout(width="420px"), continuous_update=True)
        self.step.add_class(CSS["step"])
        self.play = W.Play(value=step, min=0, max=max(step, 0), interval=900, description="play")
        self.play.add_class(CSS["play"])
        W.jslink((self.play, "value"), (self.step, "value"))
        self.size = W.HTML()
        self.size.add_class(CSS["size"])
        self.message = W.HTML(layout=W.Layout(display="none"))
        self.message.add_class(CSS["message"])
        self.picture = W.Image(format="png", layout=W.Layout(max_width="100%"))
        self.picture.add_class(CSS["picture"])
        controls = W.HBox([W.VBox(list(self.sliders.values())[:3]), W.VBox(list(self.sliders.values())[3:])])
        self.ui = W.VBox([controls, self.view, W.HBox([self.play, self.step]), self.size, self.message,
                          self.picture])
        self.ui.add_class(CSS["root"])
        for s in self.sliders.values():
            s.observe(self._on_settings, names="value")
        self.view.observe(self._on_settings, names="value")
        self.step.observe(self._on_step, names="value")
        self._refresh_steps()
        self._draw()

    # ------------------------------------------------------------------ state
    @property
    def settings(self) -> Settings:
        return Settings(**{field: s.value for field, s in self.sliders.items()})

    def _valid(self) -> tuple[Settings, int | None, str]:
        """(settings, output size or None, error message)."""
        st = self.settings
        try:
            return st, st.validate(), ""
        except ValueError as exc:
            return st, None, str(exc)

    def _refresh_steps(self) -> None:
        st, out, _ = self._valid()
        last = n_steps(st, self.view.value) - 1 if out is not None else 0
        # lower the value before the max, so the slider never holds a value outside its range
        if self.step.value > last:
            self.step.value = last
        self.step.max = max(last, 0)
        self.play.max = max(last, 0)

    # ------------------------------------------------------------------ callbacks
    def _on_settings(self, _change=None) -> None:
        self._refresh_steps()
        self._draw()

    def _on_step(self, _change=None) -> None:
        self._draw()

    def _show_message(self, text: str) -> None:
        self.message.value = (f"<div style='color:#b00020;font-weight:bold'>\u26a0 {html.escape(text)}</div>")
        self.message.layout.display = None
        self.picture.layout.display = "none"

    def _draw(self) -> None:
        st, out, error = self._valid()
        formula = (f"output size = (n\u22121)\u00b7s \u2212 2p + d\u00b7(k\u22121) + output_padding + 1 = "
                   f"{st.formula().split(' = ')[0]}")
        if out is None:
            self.size.value = f"<b>{html.escape(formula)} = invalid</b>"
            self._show_message(error)
            return
        self.size.value = (f"<b>output size: {out}\u00d7{out}</b> &nbsp; ({html.escape(formula)} = {out}; "
                           f"input {st.in_size}\u00d7{st.in_size})")
        try:
            png = frame_png(make_frame(st, self.view.value, self.step.value), width=self.width)
        except ValueError as exc:     # e.g. a matrix too large to draw
            self._show_message(str(exc))
            return
        self.message.value = ""
        self.message.layout.display = "none"
        self.picture.layout.display = None
        self.picture.value = png

    def _repr_mimebundle_(self, **kwargs):
        return self.ui._repr_mimebundle_(**kwargs)


def transposed_conv_explorer(in_size: int = 2, kernel_size: int = 3, stride: int = 2, padding: int = 1,
                             output_padding: int = 0, dilation: int = 1,
                             view: str = "scatter") -> TransposedConvExplorer:
    """The lesson's explorer, starting at the slide's 3x3 transposed convolution, stride 2, pad 1, on 2x2."""
    return TransposedConvExplorer(Settings(in_size, kernel_size, stride, padding, output_padding, dilation), view)
