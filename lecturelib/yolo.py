"""YOLO v1 (Redmon, Divvala, Girshick & Farhadi, CVPR 2016): detection as one regression, no proposals.

The image is divided into an S × S grid. Each cell predicts ``B`` boxes -- centre (x, y) as offsets inside
the cell, width and height as the square roots of their share of the image side, and a **confidence** --
and one set of C class probabilities, P(class | object): an S × S × (B · 5 + C) tensor from one network pass.

Training (the paper's sum-squared loss): the cell that holds an object's centre is responsible for it, and of
its B boxes the one whose prediction overlaps the object most (IoU) is the responsible box:

    λ_coord Σ_resp [(x - x̂)² + (y - ŷ)² + (√w - √ŵ)² + (√h - √ĥ)²]         coord (λ_coord = 5)
  + Σ_resp (C - IoU(pred, truth))²                                           confidence_obj
  + λ_noobj Σ_not resp C²                                                    confidence_noobj (λ_noobj = 0.5)
  + Σ_cells with an object Σ_c (p(c) - p̂(c))²                               class

so the confidence learns P(object) · IoU, and the square roots make an error of a few pixels count more on a
small box than on a large one. At test time each box's class-specific score is P(class | object) · C.
One cell holds one object: when several centres fall into one cell the larger object is kept (the smaller
one cannot be learned there, YOLO v1's known limit on crowded small objects).

Here the grid has cells of ``grid_cell`` pixels (S = image side / grid_cell: 8 × 8 on 64-px scenes; 7 × 7 on
448-px images in the paper), and the head is convolutional on the shared backbone
(:class:`lecturelib.cascade.Backbone`): the paper's last two layers are fully connected. Sides are a share of
``config.image_size`` (the training side), so a box's pixel size does not change with the input size.

API: ``model.train(); losses = model(images, targets)``; ``model.predict(images)`` ->
``[{"boxes", "scores", "labels"}]``; :func:`yolo_targets` / :func:`decode_targets` convert boxes to the target
tensor and back.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.ops import box_iou

from .cascade import Backbone, conv_bn, pad_images
from .detection import DetectionConfig, check_detection_targets, image_list, select_boxes


def yolo_targets(boxes: torch.Tensor, labels: torch.Tensor, grid_hw: tuple[int, int], cell: int,
                 image_size: int, num_classes: int) -> torch.Tensor:
    """The YOLO target tensor of one image: float32[S_h, S_w, 5 + C], C = num_classes - 1 (no background).

    Per cell: [0] 1 if an object's centre falls in it, else 0; [1:3] the centre's (x, y) offset inside the cell,
    in [0, 1); [3:5] √(w / image_size), √(h / image_size); [5 + c - 1] 1 for the object's class c (1..C).
    ``boxes`` float[G, 4] pixel-edge (x0, y0, x1, y1), ``labels`` int[G] in 1..C; cell: pixels per cell.
    When several centres share a cell the largest box is kept.
    """
    Sh, Sw = grid_hw
    C = num_classes - 1
    out = torch.zeros(Sh, Sw, 5 + C)
    if len(boxes) == 0:
        return out
    boxes = boxes.float().cpu()
    labels = labels.cpu()
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for g in area.argsort().tolist():                          # the largest last: it wins a shared cell
        x0, y0, x1, y1 = boxes[g].tolist()
        cx, cy = (x0 + x1) / 2 / cell, (y0 + y1) / 2 / cell
        j, i = min(max(int(cx), 0), Sw - 1), min(max(int(cy), 0), Sh - 1)
        out[i, j] = 0
        out[i, j, 0] = 1
        out[i, j, 1:3] = torch.tensor([cx - j, cy - i])
        out[i, j, 3:5] = torch.tensor([(x1 - x0) / image_size, (y1 - y0) / image_size]).sqrt()
        out[i, j, 5 + int(labels[g]) - 1] = 1
    return out


def to_pixels(xywh: torch.Tensor, i: torch.Tensor, j: torch.Tensor, cell: int, image_size: int) -> torch.Tensor:
    """Pixel boxes float[..., 4] (x0, y0, x1, y1) of predictions ``xywh`` [..., 4] = (x, y, √w, √h) made in the cells
    of row ``i`` and column ``j`` (tensors broadcastable to ``xywh[..., 0]``)."""
    cx, cy = (j + xywh[..., 0]) * cell, (i + xywh[..., 1]) * cell
    w, h = xywh[..., 2] ** 2 * image_size, xywh[..., 3] ** 2 * image_size
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def cell_boxes(xywh: torch.Tensor, cell: int, image_size: int) -> torch.Tensor:
    """Pixel boxes float[Sh, Sw, ..., 4] of a grid of predictions ``xywh`` [Sh, Sw, ..., 4] = (x, y, √w, √h)."""
    Sh, Sw = xywh.shape[:2]
    extra = (1,) * (xywh.dim() - 3)
    i = torch.arange(Sh, device=xywh.device, dtype=xywh.dtype).reshape(Sh, 1, *extra)
    j = torch.arange(Sw, device=xywh.device, dtype=xywh.dtype).reshape(1, Sw, *extra)
    return to_pixels(xywh, i, j, cell, image_size)


def decode_targets(target: torch.Tensor, cell: int, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`yolo_targets`: the boxes float[G, 4] and labels int64[G] of the cells holding an object
    (row-major cell order)."""
    boxes = cell_boxes(target[..., 1:5], cell, image_size)                               # (Sh, Sw, 4)
    has = target[..., 0] > 0.5
    return boxes[has], target[..., 5:][has].argmax(-1) + 1


class YOLO(nn.Module):
    """Backbone -> a conv head on an S × S grid -> per cell B × (x, y, √w, √h, confidence) + C class probabilities."""

    def __init__(self, config: DetectionConfig | None = None):
        super().__init__()
        self.config = cfg = config or DetectionConfig()
        self.backbone = Backbone(cfg.width)
        C = self.backbone.out_channels
        step = cfg.grid_cell // self.backbone.stride
        self.B, self.C = cfg.boxes_per_cell, cfg.num_classes - 1
        self.head = nn.Sequential(conv_bn(C, 2 * C, stride=step), conv_bn(2 * C, 2 * C),
                                  nn.Conv2d(2 * C, self.B * 5 + self.C, 1))

    def grid(self, images) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        """The network's output for a list / batch of images: box predictions float[N, Sh, Sw, B, 5] (x, y, √w,
        √h, confidence, all in [0, 1]), class probabilities float[N, Sh, Sw, C], and each image's (H, W)."""
        x, sizes = pad_images(image_list(images))
        out = self.head(self.backbone(x)).permute(0, 2, 3, 1)                          # (N, Sh, Sw, B*5 + C)
        N, Sh, Sw, _ = out.shape
        boxes = torch.sigmoid(out[..., : 5 * self.B].reshape(N, Sh, Sw, self.B, 5))
        return boxes, torch.softmax(out[..., 5 * self.B:], -1), sizes

    def forward(self, images, targets: list[dict] | None = None):
        ims = image_list(images)
        if self.training:
            check_detection_targets(targets, len(ims))
        boxes, probs, sizes = self.grid(ims)
        if self.training:
            return self.loss(boxes, probs, targets)
        return [self.detect(b, p, hw) for b, p, hw in zip(boxes, probs, sizes)]

    def loss(self, boxes: torch.Tensor, probs: torch.Tensor, targets: list[dict]) -> dict:
        """The YOLO v1 loss terms (``coord``, ``confidence_obj``, ``confidence_noobj``, ``class``), each summed over
        cells and boxes and divided by the number of images."""
        cfg = self.config
        N, Sh, Sw, B, _ = boxes.shape
        T = torch.stack([yolo_targets(t["boxes"], t["labels"], (Sh, Sw), cfg.grid_cell, cfg.image_size,
                                      cfg.num_classes) for t in targets]).to(boxes)   # (N, Sh, Sw, 5 + C)
        obj = T[..., 0] > 0.5                                                          # (N, Sh, Sw)
        pred = boxes[obj]                                                              # (M, B, 5)
        truth = T[obj]                                                                 # (M, 5 + C)
        responsible = torch.zeros(N, Sh, Sw, B, dtype=torch.bool, device=boxes.device)
        zero = boxes.sum() * 0
        coord, conf_obj, cls = zero, zero, zero
        if len(pred):
            cells = obj.nonzero().to(boxes.dtype)                                      # (M, 3): n, i, j
            i, j = cells[:, 1:2], cells[:, 2:3]
            pb = to_pixels(pred[..., :4].detach(), i, j, cfg.grid_cell, cfg.image_size)   # (M, B, 4)
            tb = to_pixels(truth[:, 1:5], i[:, 0], j[:, 0], cfg.grid_cell, cfg.image_size)  # (M, 4)
            iou = torch.stack([box_iou(pb[m], tb[m:m + 1])[:, 0] for m in range(len(pb))])    # (M, B)
            best = iou.argmax(1)
            n, ci, cj = obj.nonzero().unbind(1)
            responsible[n, ci, cj, best] = True
            r = pred[torch.arange(len(pred)), best]                                    # (M, 5)
            coord = cfg.lambda_coord * ((r[:, :4] - truth[:, 1:5]) ** 2).sum()
            conf_obj = ((r[:, 4] - iou[torch.arange(len(pred)), best]) ** 2).sum()
            cls = ((probs[obj] - truth[:, 5:]) ** 2).sum()
        conf_noobj = cfg.lambda_noobj * (boxes[..., 4][~responsible] ** 2).sum()
        return {"coord": coord / N, "confidence_obj": conf_obj / N, "confidence_noobj": conf_noobj / N,
                "class": cls / N}

    @torch.no_grad()
    def detect(self, boxes: torch.Tensor, probs: torch.Tensor, image_hw: tuple[int, int]) -> dict:
        """One image's detections from its grid (boxes [Sh, Sw, B, 5], probs [Sh, Sw, C]): class-specific scores
        P(class | object) · confidence for every box, then :func:`lecturelib.detection.select_boxes`."""
        cfg = self.config
        pix = cell_boxes(boxes[..., :4], cfg.grid_cell, cfg.image_size).reshape(-1, 4)
        scores = (boxes[..., 4:5] * probs[:, :, None, :]).reshape(-1, self.C)          # (Sh*Sw*B, C)
        scores = torch.cat([scores.new_zeros(len(scores), 1), scores], 1)              # column 0: background
        return select_boxes(pix, scores, image_hw, cfg)

    @torch.no_grad()
    def predict(self, images) -> list[dict]:
        """Eval-mode detections of each image."""
        self.eval()
        return self(images)
