"""Fast R-CNN (Girshick, ICCV 2015): one backbone pass per image, RoI pooling, two heads, trained end to end.

R-CNN (:mod:`lecturelib.rcnn`) runs the CNN once per proposal. Fast R-CNN runs it once per image and cuts
every proposal's features out of the shared feature map:

1. proposals: selective search (:func:`lecturelib.detection.proposal_boxes`), outside the network;
2. the backbone (:class:`lecturelib.cascade.Backbone`, stride 4) on the whole image;
3. **RoI pooling**: each proposal's region of the feature map max-pooled into a fixed 7 × 7 grid
   (``torchvision.ops.roi_pool``; :func:`lecturelib.roi_pool.roi_max_pool` is the same written out);
4. two fully connected layers, then two sibling outputs: class scores over K classes (0 = background) and
   class-specific box offsets (dx, dy, dw, dh) relative to the proposal;
5. the multi-task loss: cross-entropy on the class + smooth L1 on the true class's offsets (positives only),
   back-propagated through RoI pooling into the backbone ("like max pooling": to each bin's maximum).

Training samples ``roi_batch`` RoIs per image, a quarter of them positives (IoU >= 0.5), the rest background
with IoU in [0.1, 0.5) (:func:`lecturelib.detection.sample_rois`). The paper takes 2 images × 64 RoIs per step.

API: ``model.train(); losses = model(images, targets)`` (each target holds ``boxes``, ``labels`` and, where the
proposals were computed beforehand, ``proposals`` float[P, 4]); ``model.predict(images, proposals=None)`` ->
``[{"boxes", "scores", "labels"}]`` (selective search runs when ``proposals`` is None); ``model.propose(images)``
-> the proposal boxes alone (to time them apart from the network).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import roi_pool

from .cascade import Backbone, pad_images
from .detection import (
    DetectionConfig,
    check_detection_targets,
    decode,
    image_list,
    proposal_boxes,
    sample_rois,
    select_boxes,
)


class BoxHead(nn.Module):
    """Fast R-CNN's head: RoI features [R, C, s, s] -> two FC layers -> class logits [R, K], box offsets [R, K, 4]."""

    def __init__(self, channels: int, roi_size: int, hidden: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(channels * roi_size ** 2, hidden), nn.ReLU(inplace=True),
                                nn.Linear(hidden, hidden), nn.ReLU(inplace=True))
        self.cls_score = nn.Linear(hidden, num_classes)
        self.bbox_pred = nn.Linear(hidden, 4 * num_classes)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.fc(x)
        return self.cls_score(h), self.bbox_pred(h).reshape(len(x), self.num_classes, 4)


def head_losses(class_logits: torch.Tensor, box_deltas: torch.Tensor, labels: torch.Tensor,
                targets: torch.Tensor) -> dict:
    """Fast R-CNN's multi-task loss: ``classifier`` (cross-entropy over all RoIs) and ``box`` (smooth L1 on the true
    class's offsets of the positives, summed and divided by the number of RoIs, as torchvision does)."""
    cls = F.cross_entropy(class_logits, labels)
    pos = torch.nonzero(labels > 0).flatten()
    box = F.smooth_l1_loss(box_deltas[pos, labels[pos]], targets[pos], beta=1.0, reduction="sum") / max(len(labels), 1)
    return {"classifier": cls, "box": box}


def detect(rois: list[torch.Tensor], class_logits: torch.Tensor, box_deltas: torch.Tensor, sizes,
           config: DetectionConfig) -> list[dict]:
    """Per-image detections from the head's outputs for ``rois`` (one float[R_i, 4] per image): softmax scores,
    class-specific boxes decoded from each RoI, then :func:`lecturelib.detection.select_boxes`."""
    probs = F.softmax(class_logits.float(), 1)
    out, start = [], 0
    for boxes, hw in zip(rois, sizes):
        n = len(boxes)
        p, d = probs[start:start + n], box_deltas[start:start + n].float()
        start += n
        K = p.shape[1]
        decoded = decode(boxes[:, None].expand(n, K, 4).reshape(-1, 4), d.reshape(-1, 4)).reshape(n, K, 4)
        out.append(select_boxes(decoded, p, hw, config))
    return out


class FastRCNN(nn.Module):
    """Backbone once per image -> RoI pooling of each proposal -> class scores and box offsets."""

    def __init__(self, config: DetectionConfig | None = None):
        super().__init__()
        self.config = cfg = config or DetectionConfig()
        self.backbone = Backbone(cfg.width)
        self.head = BoxHead(self.backbone.out_channels, cfg.roi_size, cfg.hidden, cfg.num_classes)

    def propose(self, images) -> list[torch.Tensor]:
        """Selective-search boxes of each image (float32[P_i, 4], on the images' device)."""
        return [proposal_boxes(im, self.config.proposals).to(im.device) for im in image_list(images)]

    def roi_features(self, images, rois: list[torch.Tensor]) -> torch.Tensor:
        """float[R, C, s, s]: the backbone run once on the (padded) batch, every RoI max-pooled out of it."""
        x, _ = pad_images(images)
        feats = self.backbone(x)                                                  # (N, C, H/4, W/4)
        s = self.config.roi_size
        return roi_pool(feats, [r.to(feats) for r in rois], (s, s), 1.0 / self.backbone.stride)

    def forward(self, images, targets: list[dict] | None = None, proposals: list[torch.Tensor] | None = None):
        ims = image_list(images)
        if self.training:
            check_detection_targets(targets, len(ims))
            if proposals is None:                                                 # cached by the task, else now
                proposals = [t["proposals"] if "proposals" in t else proposal_boxes(im, self.config.proposals)
                             for t, im in zip(targets, ims)]
            rois, labels, deltas = zip(*(sample_rois(p.to(im.device), t["boxes"], t["labels"], self.config)
                                         for p, t, im in zip(proposals, targets, ims)))
            class_logits, box_deltas = self.head(self.roi_features(ims, list(rois)))
            return head_losses(class_logits, box_deltas, torch.cat(labels), torch.cat(deltas))
        proposals = self.propose(ims) if proposals is None else [p.to(im.device) for p, im in zip(proposals, ims)]
        with torch.no_grad():
            class_logits, box_deltas = self.head(self.roi_features(ims, proposals))
        return detect(proposals, class_logits, box_deltas, [tuple(im.shape[-2:]) for im in ims], self.config)

    @torch.no_grad()
    def predict(self, images, proposals: list[torch.Tensor] | None = None) -> list[dict]:
        """Eval-mode detections of each image (selective search runs when ``proposals`` is None)."""
        self.eval()
        return self(images, proposals=proposals)
