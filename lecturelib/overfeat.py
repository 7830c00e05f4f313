"""Overfeat: detection by a sliding window, made efficient by a fully convolutional network (lesson 07).

Sermanet et al., "OverFeat: Integrated Recognition, Localization and Detection using Convolutional
Networks", ICLR 2014. The localization network of :mod:`lecturelib.localization` classifies one window and
regresses the box of the item in it. Overfeat slides it over the image at many positions and several
scales. Written with lesson 02's converter (:func:`lecturelib.fully_conv.to_fully_convolutional`), one pass
over a resized image gives, at every window position ``(i, j)``:

- class scores (a score map per class, background included), and
- a box (x0, y0, x1, y1) relative to that window (per-position box regression),

for windows of side ``window`` whose top-left corners are ``stride`` pixels apart (the network's output
stride). Each scale resizes the image so that the fixed window covers a different share of it. The boxes of
every position and scale are then merged greedily:

- ``"nms"`` (default): per class, keep the highest-scoring box and drop the boxes that overlap it by more than
  ``iou_threshold`` (``torchvision.ops.batched_nms``), repeat. The course's R-CNN family uses the same rule, so
  the detectors of lesson 07 differ only in how they find and score boxes, not in how they merge them.
- ``"overfeat"``: Overfeat's spirit (its Section 4.3 merges pairs of boxes greedily and averages them): per class,
  the highest-scoring box and every box of that class overlapping it by more than ``iou_threshold`` are
  replaced by their score-weighted mean box, scored by the best of them.

Boxes are pixel-edge ``(x0, y0, x1, y1)`` float32 in the input image's pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import batched_nms, box_iou

from .fully_conv import output_side, receptive_field, to_fully_convolutional
from .localization import LocalizationNet

MERGES = ("nms", "overfeat")


@dataclass(frozen=True)
class OverfeatConfig:
    """How the sliding-window detector searches and merges.

    window_fractions: at each scale the image is resized so that the window covers this share of the image
        side (largest first): the localizer saw items of 0.5-1.0 of its window, so each scale finds items of
        about half to all of its fraction.
    pad: share of the window added around the resized image (reflect padding) so that windows also centre on
        items at the border.
    score_threshold: windows whose best item class scores below it are dropped (softmax probability).
    merge: "nms" or "overfeat" (see the module docstring); iou_threshold: the overlap that merges two boxes.
    max_detections: boxes kept per image after merging, highest scores first.
    """

    window_fractions: tuple = (0.8, 0.6, 0.45, 0.34)
    pad: float = 0.25
    score_threshold: float = 0.3
    merge: str = "nms"
    iou_threshold: float = 0.3
    max_detections: int = 20

    def __post_init__(self):
        if not self.window_fractions or any(not (0 < f <= 4) for f in self.window_fractions):
            raise ValueError(f"OverfeatConfig.window_fractions must be shares of the image side in (0, 4], got "
                             f"{self.window_fractions!r}")
        if self.merge not in MERGES:
            raise ValueError(f"OverfeatConfig.merge must be one of {MERGES}, got {self.merge!r}")
        if not (0 <= self.iou_threshold <= 1) or not (0 <= self.score_threshold <= 1):
            raise ValueError("OverfeatConfig.iou_threshold and score_threshold are in [0, 1]")
        if self.pad < 0 or self.max_detections < 1:
            raise ValueError("OverfeatConfig.pad must be >= 0 and max_detections >= 1")


def sliding_window_net(model: LocalizationNet) -> nn.Sequential:
    """The localization network made fully convolutional (lesson 02): float[N, 3, H, W] ->
    float[N, num_classes + 4, h, w]: channels 0..C-1 the class logits, C..C+3 the box (window fractions)
    of the window at (i, j). Checked against the network on a window (raises ValueError if they differ)."""
    if not isinstance(model, LocalizationNet):
        raise ValueError(f"sliding_window_net needs a LocalizationNet, got {type(model).__name__}")
    return to_fully_convolutional(model.as_sequential(), model.config.window)


def window_box(i: int, j: int, scale: float, window: int, stride: int, pad: float = 0.0) -> tuple:
    """The window of output position (i, j) in the original image's pixels: (x0, y0, x1, y1).

    The image was resized by ``scale`` and padded by ``pad`` pixels (of the resized image) on every side;
    position (i, j) reads resized pixels rows ``stride*i .. stride*i + window`` of the padded image.
    """
    if scale <= 0 or window < 1 or stride < 1:
        raise ValueError(f"need scale > 0, window >= 1 and stride >= 1, got {scale}, {window}, {stride}")
    x0, y0 = stride * j - pad, stride * i - pad
    return (x0 / scale, y0 / scale, (x0 + window) / scale, (y0 + window) / scale)


def positions(side: int, window: int, stride: int) -> int:
    """Window positions along a side of ``side`` pixels: floor((side - window) / stride) + 1 (0 if it does not fit)."""
    return output_side(side, window, stride)


@torch.no_grad()
def dense_detections(fcn: nn.Module, image: torch.Tensor, scale: float, window: int, num_classes: int,
                     pad: int = 0) -> dict:
    """Every window of one scale: the image float[3, H, W] resized by ``scale``, reflect-padded by ``pad``
    pixels (replicate when the image is smaller), one pass of ``fcn``.

    Returns {"probs": float[P, num_classes] (softmax), "boxes": float[P, 4] (the regressed boxes, original
    pixels), "windows": float[P, 4] (the windows themselves), "shape": (h, w)}, P = h * w positions, row-major.
    """
    if image.dim() != 3:
        raise ValueError(f"image must be [3, H, W], got shape {tuple(image.shape)}")
    H, W = image.shape[-2:]
    h_s, w_s = max(1, round(H * scale)), max(1, round(W * scale))
    x = F.interpolate(image[None], size=(h_s, w_s), mode="bilinear", align_corners=False, antialias=scale < 1)
    if pad:
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect" if pad < min(h_s, w_s) else "replicate")
    if min(x.shape[-2:]) < window:
        empty = torch.zeros(0, 4)
        return {"probs": torch.zeros(0, num_classes), "boxes": empty, "windows": empty, "shape": (0, 0)}
    out = fcn(x)[0].float()                                                  # (C + 4, h, w)
    _, stride = receptive_field(fcn)
    h, w = out.shape[-2:]
    probs = out[:num_classes].softmax(0).flatten(1).t()                      # (h*w, C)
    rel = out[num_classes:].flatten(1).t()                                   # (h*w, 4) window fractions
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    x0 = (stride * jj.flatten() - pad).float()
    y0 = (stride * ii.flatten() - pad).float()
    origin = torch.stack([x0, y0, x0, y0], 1)                                 # (h*w, 4) resized pixels
    windows = (origin + torch.tensor([0.0, 0.0, window, window])) / scale
    boxes = (origin + rel * window) / scale
    return {"probs": probs, "boxes": boxes, "windows": windows, "shape": (h, w)}


def overfeat_merge(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                   iou_threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Greedy merge: per class, the best box and every box of its class overlapping it by more than
    ``iou_threshold`` become their score-weighted mean box, scored by the best; repeat with the rest.

    boxes float[N, 4], scores float[N], labels int64[N] -> the merged (boxes, scores, labels), best first.
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4 or len(scores) != len(boxes) or len(labels) != len(boxes):
        raise ValueError(f"need boxes [N, 4], scores [N] and labels [N], got {tuple(boxes.shape)}, "
                         f"{tuple(scores.shape)}, {tuple(labels.shape)}")
    order = scores.argsort(descending=True)
    boxes, scores, labels = boxes[order], scores[order], labels[order]
    left = torch.ones(len(boxes), dtype=torch.bool)
    kept = []
    for k in range(len(boxes)):
        if not left[k]:
            continue
        same = left & (labels == labels[k])
        cluster = same & (box_iou(boxes[k:k + 1], boxes)[0] > iou_threshold)
        cluster[k] = True
        w = scores[cluster][:, None]
        kept.append(((boxes[cluster] * w).sum(0) / w.sum(), scores[k], labels[k]))
        left &= ~cluster
    if not kept:
        return boxes[:0], scores[:0], labels[:0]
    b, s, lab = zip(*kept)
    return torch.stack(b), torch.stack(s), torch.stack(lab)


class Overfeat(nn.Module):
    """The sliding-window detector: ``predict(images) -> [{"boxes", "scores", "labels"}]`` (one dict per image).

    model: a trained :class:`~lecturelib.localization.LocalizationNet` (copied, made fully convolutional).
    images: float[3, H, W] tensors in [0, 1] (a list, or a batch [N, 3, H, W]); any size.
    """

    def __init__(self, model: LocalizationNet, config: OverfeatConfig = OverfeatConfig()):
        super().__init__()
        self.config = config
        self.window, self.num_classes = model.config.window, model.config.num_classes
        self.fcn = sliding_window_net(model).eval()
        self.stride = receptive_field(self.fcn)[1]

    def scales(self, side: int) -> list[float]:
        """The resize factor of each window fraction for an image side of ``side`` pixels."""
        return [self.window / (f * side) for f in self.config.window_fractions]

    @torch.no_grad()
    def windows(self, image: torch.Tensor) -> dict:
        """Every window of every scale of one image: {"probs", "boxes", "windows", "scale"} concatenated
        (see :func:`dense_detections`; "scale" float[P] is each window's resize factor)."""
        pad = int(round(self.config.pad * self.window))
        parts = []
        for s in self.scales(min(image.shape[-2:])):
            d = dense_detections(self.fcn, image, s, self.window, self.num_classes, pad)
            d["scale"] = torch.full((len(d["boxes"]),), s)
            parts.append(d)
        return {k: torch.cat([p[k] for p in parts]) for k in ("probs", "boxes", "windows", "scale")}

    @torch.no_grad()
    def detect(self, image: torch.Tensor) -> dict:
        """One image float[3, H, W] -> {"boxes" float[D, 4], "scores" float[D], "labels" int64[D]}."""
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"image must be [3, H, W], got shape {tuple(image.shape)}")
        H, W = image.shape[-2:]
        d = self.windows(image)
        scores, labels = d["probs"][:, 1:].max(1)                            # best item class per window
        labels = labels + 1
        keep = scores >= self.config.score_threshold
        boxes, scores, labels = d["boxes"][keep], scores[keep], labels[keep]
        boxes = torch.stack([boxes[:, 0].clamp(0, W), boxes[:, 1].clamp(0, H),
                             boxes[:, 2].clamp(0, W), boxes[:, 3].clamp(0, H)], 1)
        ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores, labels = boxes[ok], scores[ok], labels[ok]
        if self.config.merge == "nms":
            idx = batched_nms(boxes, scores, labels, self.config.iou_threshold)
            boxes, scores, labels = boxes[idx], scores[idx], labels[idx]
        else:
            boxes, scores, labels = overfeat_merge(boxes, scores, labels, self.config.iou_threshold)
        n = self.config.max_detections
        return {"boxes": boxes[:n].float(), "scores": scores[:n].float(), "labels": labels[:n].long()}

    def predict(self, images) -> list[dict]:
        """Detections of each image of ``images`` (a list of float[3, H, W] or a batch float[N, 3, H, W])."""
        if isinstance(images, torch.Tensor):
            if images.dim() != 4:
                raise ValueError(f"a batch of images must be [N, 3, H, W], got shape {tuple(images.shape)}")
            images = list(images)
        return [self.detect(im) for im in images]

    def forward(self, images) -> list[dict]:
        return self.predict(images)

    def window_count(self, side: int) -> int:
        """Windows the detector scores on a ``side`` x ``side`` image, over all scales."""
        pad = int(round(self.config.pad * self.window))
        return sum(positions(max(1, round(side * s)) + 2 * pad, self.window, self.stride) ** 2
                   for s in self.scales(side))

