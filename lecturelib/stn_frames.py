"""The θ explorer's frames: pure functions from (scale, rotation, translation) to θ, the grid and the output.

A frame is everything the explorer shows for one setting: θ (:func:`lecturelib.spatial_transformer.theta_from`),
the sampling grid (where each output pixel reads the input, :func:`lecturelib.spatial_transformer.affine_grid`),
the window's corners and the sampled output (:func:`lecturelib.spatial_transformer.grid_sample`), all computed by
the lesson's own from-scratch code. :func:`frame_png` draws it: the input with the window and every
``grid_step``-th grid line on it, and the output beside it, both enlarged.

Invalid settings raise ValueError with the reason (:func:`validate`): a scale that is not positive, and a window
that misses the image entirely (the output would be all zeros).
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch

from .spatial_transformer import affine_grid, grid_sample, theta_from, window_corners

LIMITS = {"scale": (0.0, 2.0), "rotation": (-180.0, 180.0), "tx": (-1.5, 1.5), "ty": (-1.5, 1.5)}


@dataclass(frozen=True)
class ThetaSettings:
    """What the explorer's sliders choose: scale (window side / image side), rotation (degrees), tx, ty (the
    window's centre, normalised: -1 .. 1 spans the image)."""

    scale: float = 1.0
    rotation: float = 0.0
    tx: float = 0.0
    ty: float = 0.0


def validate(settings: ThetaSettings) -> None:
    """ValueError naming the setting and the fix when the explorer cannot show it."""
    for name, (lo, hi) in LIMITS.items():
        v = getattr(settings, name)
        if not lo <= v <= hi:
            raise ValueError(f"{name} = {v} is outside {lo} .. {hi}")
    if settings.scale <= 0:
        raise ValueError("scale must be positive: a window of side 0 shows nothing; raise the scale")
    theta = theta_from(settings.scale, settings.rotation, settings.tx, settings.ty)
    corners = window_corners(theta[None].double(), 2, 2)[0] - 1            # in [-1, 1] units
    lo, hi = corners.min(dim=0).values, corners.max(dim=0).values
    if (lo >= 1).any() or (hi <= -1).any():
        raise ValueError("the window misses the image entirely (the output would be all zeros); move tx or ty "
                         "back towards 0")


@dataclass
class ThetaFrame:
    """One frame: settings, θ float[2, 3], grid float[out, out, 2] (normalised), corners float[4, 2] (input pixels,
    pixel-edge), image float[3, S, S] and output float[3, out, out] in [0, 1]."""

    settings: ThetaSettings
    theta: torch.Tensor
    grid: torch.Tensor
    corners: torch.Tensor
    image: torch.Tensor
    output: torch.Tensor


def theta_frame(image: torch.Tensor, settings: ThetaSettings = ThetaSettings(), out_size: int = 32) -> ThetaFrame:
    """The frame of ``settings`` on ``image`` float[3, S, S] (ValueError for invalid settings, :func:`validate`)."""
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be a tensor [3, H, W], got {getattr(image, 'shape', type(image).__name__)}")
    validate(settings)
    theta = theta_from(settings.scale, settings.rotation, settings.tx, settings.ty)
    grid = affine_grid(theta[None], (1, 3, out_size, out_size))
    output = grid_sample(image[None].float(), grid)[0].clamp(0, 1)
    corners = window_corners(theta[None], image.shape[1], image.shape[2])[0]
    return ThetaFrame(settings, theta, grid[0], corners, image, output)


def _picture(t: torch.Tensor, zoom: int) -> np.ndarray:
    a = (t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return np.kron(a, np.ones((zoom, zoom, 1), np.uint8))


def frame_png(frame: ThetaFrame, side: int = 256, grid_step: int = 4) -> bytes:
    """PNG bytes: the input (``side`` px) with the window (red) and every ``grid_step``-th line of the sampling grid
    (yellow), an arrow, the output (``side`` px), and θ written below."""
    from PIL import Image, ImageDraw

    S, out = frame.image.shape[1], frame.output.shape[1]
    zi, zo = max(1, side // S), max(1, side // out)
    left, right = _picture(frame.image, zi), _picture(frame.output, zo)
    gap, text_h = 40, 44
    canvas = Image.new("RGB", (left.shape[1] + gap + right.shape[1], max(left.shape[0], right.shape[0]) + text_h),
                       "white")
    canvas.paste(Image.fromarray(left), (0, 0))
    canvas.paste(Image.fromarray(right), (left.shape[1] + gap, 0))
    draw = ImageDraw.Draw(canvas)
    # sampling points in input pixels (pixel-edge): normalised x -> (x + 1) / 2 * S
    pts = ((frame.grid.double() + 1) / 2 * S * zi).numpy()
    rows = list(range(0, out, grid_step)) + [out - 1]
    for r in sorted(set(rows)):
        draw.line([tuple(p) for p in pts[r]], fill=(255, 210, 0), width=1)
        draw.line([tuple(p) for p in pts[:, r]], fill=(255, 210, 0), width=1)
    c = (frame.corners.double() * zi).numpy()
    draw.line([tuple(p) for p in c] + [tuple(c[0])], fill=(230, 20, 20), width=2)
    draw.ellipse([c[0][0] - 4, c[0][1] - 4, c[0][0] + 4, c[0][1] + 4], fill=(230, 20, 20))   # the output's top-left
    mid = left.shape[0] // 2
    x0 = left.shape[1] + 6
    draw.line([(x0, mid), (x0 + gap - 12, mid)], fill=(0, 0, 0), width=2)
    draw.polygon([(x0 + gap - 12, mid - 5), (x0 + gap - 6, mid), (x0 + gap - 12, mid + 5)], fill=(0, 0, 0))
    th = frame.theta.tolist()
    draw.text((4, canvas.height - text_h + 4), f"theta = [[{th[0][0]:+.2f} {th[0][1]:+.2f} {th[0][2]:+.2f}]  "
              f"[{th[1][0]:+.2f} {th[1][1]:+.2f} {th[1][2]:+.2f}]]", fill=(0, 0, 0))
    draw.text((4, canvas.height - text_h + 22), "input: window (red, dot = output's top-left) and sampling grid "
              "(yellow)      output", fill=(60, 60, 60))
    buf = io.BytesIO()
    canvas.save(buf, format="png", compress_level=1)
    return buf.getvalue()
