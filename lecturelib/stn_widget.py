"""The θ explorer: a thin ipywidgets layer over :mod:`lecturelib.stn_frames`.

    from lecturelib.stn_widget import theta_explorer
    theta_explorer(image)          # image float[3, S, S]

Four sliders (scale, rotation, tx, ty) set θ; the picture (:func:`lecturelib.stn_frames.frame_png`) shows the
window and the sampling grid on the input and the sampled output; θ is written above it. An invalid setting keeps
the last picture, greyed, and shows the reason (never a traceback). Displayed, the explorer also offers a static
PNG of its picture (what a notebook shows where the widget cannot run); its root has the class
:data:`lecturelib.widgets.LIVE_ONLY`, so :func:`lecturelib.widgets.strip_live_widgets` drops its stored state.
"""
from __future__ import annotations

import html

import ipywidgets as W
import torch

from .stn_frames import LIMITS, ThetaSettings, frame_png, theta_frame
from .widgets import LIVE_ONLY, _greyed, bundle_with_still

CSS = {"root": "stn-explorer", "picture": "stn-picture", "message": "stn-message", "theta": "stn-theta",
       "stale": "stn-stale"}
SLIDERS = (  # (field, label, step, tooltip)
    ("scale", "scale", 0.05, "the window's side as a share of the image's (0.5: zoom in 2x)"),
    ("rotation", "rotation (deg)", 5.0, "turns the window (clockwise on the screen for positive angles)"),
    ("tx", "tx", 0.05, "the window's centre, x: -1 is the left edge of the image, +1 the right edge"),
    ("ty", "ty", 0.05, "the window's centre, y: -1 is the top edge, +1 the bottom edge"),
)
STATIC_TEXT = "θ explorer (interactive: run this cell with a live kernel to use it; the picture is its first frame)"


def theta_html(settings: ThetaSettings) -> str:
    """θ as a formula line: [[s cos a, -s sin a, tx], [s sin a, s cos a, ty]] with the values."""
    s, a, tx, ty = settings.scale, settings.rotation, settings.tx, settings.ty
    return (f"θ = [[s·cos a, −s·sin a, tx], [s·sin a, s·cos a, ty]] with s = {s:.2f}, a = {a:.0f}°, "
            f"tx = {tx:+.2f}, ty = {ty:+.2f}")


class ThetaExplorer:
    """The widget. ``.ui`` is the ipywidgets box; displaying the object displays it.

    Args:
        image: float[3, S, S] in [0, 1], the input the transformer samples.
        settings: the starting θ in words (ValueError if invalid); out_size: the output's side.
    """

    def __init__(self, image: torch.Tensor, settings: ThetaSettings | None = None, out_size: int = 32):
        settings = settings or ThetaSettings()
        self.image, self.out_size = image, out_size
        theta_frame(image, settings, out_size)                           # refuse a bad start at once
        self.sliders = {}
        for field, label, step, tip in SLIDERS:
            lo, hi = LIMITS[field]
            s = W.FloatSlider(value=getattr(settings, field), min=lo, max=hi, step=step, description=label,
                              tooltip=tip, style={"description_width": "110px"}, layout=W.Layout(width="360px"),
                              continuous_update=False, readout_format=".2f" if step < 1 else ".0f")
            s.add_class(f"stn-{field}")
            s.observe(self._draw, names="value")
            self.sliders[field] = s
        self.theta = W.HTML()
        self.theta.add_class(CSS["theta"])
        self.message = W.HTML(layout=W.Layout(display="none"))
        self.message.add_class(CSS["message"])
        self.picture = W.Image(format="png", layout=W.Layout(align_self="flex-start", max_width="100%",
                                                             height="auto"))
        self.picture.add_class(CSS["picture"])
        self._png = b""
        values = list(self.sliders.values())
        self.ui = W.VBox([W.HBox([W.VBox(values[:2]), W.VBox(values[2:])]), self.theta,
                          W.VBox([self.message], layout=W.Layout(min_height="24px")), self.picture])
        self.ui.add_class(CSS["root"])
        self.ui.add_class(LIVE_ONLY)
        self._draw()

    @property
    def settings(self) -> ThetaSettings:
        return ThetaSettings(**{field: float(s.value) for field, s in self.sliders.items()})

    def _draw(self, _change=None) -> None:
        st = self.settings
        self.theta.value = html.escape(theta_html(st))
        try:
            frame = theta_frame(self.image, st, self.out_size)
        except ValueError as exc:
            self.message.value = f"<div style='color:#b00020'><b>\u26a0</b> {html.escape(str(exc))}</div>"
            self.message.layout.display = None
            if self._png:
                self.picture.value = _greyed(self._png)
            self.picture.add_class(CSS["stale"])
            return
        self.message.layout.display = "none"
        self._png = frame_png(frame)
        self.picture.width = str(int.from_bytes(self._png[16:20], "big"))
        self.picture.value = self._png
        self.picture.remove_class(CSS["stale"])

    def _repr_mimebundle_(self, **kwargs):
        return bundle_with_still(self.ui, self._png, STATIC_TEXT, **kwargs)


def theta_explorer(image: torch.Tensor, scale: float = 1.0, rotation: float = 0.0, tx: float = 0.0,
                   ty: float = 0.0) -> ThetaExplorer:
    """The lesson's explorer on ``image``, starting at the identity (the whole image)."""
    return ThetaExplorer(image, ThetaSettings(scale, rotation, tx, ty))
