"""Faster R-CNN (Ren, He, Girshick & Sun, NeurIPS 2015): the network makes its own proposals.

Fast R-CNN (:mod:`lecturelib.fast_rcnn`) still waits for selective search. Faster R-CNN inserts a **region
proposal network** (RPN) after the backbone: at every feature-map cell, ``A`` anchors (boxes of a few sizes
and aspect ratios); a 3 × 3 conv, then per anchor an objectness logit and box offsets (dx, dy, dw, dh). The
best decoded anchors, after NMS, are the proposals, and the Fast R-CNN head (RoI pooling, class scores, box
offsets) scores them on the same feature map. Proposals cost one small conv instead of a bottom-up search.

Jointly trained, one loss with **four terms** (logged separately by the training loop):

- ``rpn_objectness``: binary cross-entropy of anchors labelled object (IoU >= ``rpn_pos_iou`` with a ground
  truth, or the best anchor of a ground truth) / background (IoU < ``rpn_neg_iou``), ``rpn_batch`` sampled per
  image, at most half positive;
- ``rpn_box``: smooth L1 of the positive anchors' offsets;
- ``classifier``: the head's cross-entropy on RoIs sampled from the RPN's proposals plus the ground truth;
- ``box``: the head's smooth L1 on the positives' class-specific offsets.

As in torchvision, proposals are constants for the head (no gradient through their coordinates). The RPN's
layers and its anchors, decoding and NMS are the cascade's (:class:`lecturelib.cascade.MaskCascade`), the head
is Fast R-CNN's: Faster R-CNN = RPN + Fast R-CNN.

API: ``model.train(); losses = model(images, targets)``; ``model.predict(images)`` ->
``[{"boxes", "scores", "labels"}]``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import box_iou, roi_pool

from .cascade import Backbone, MaskCascade, encode_boxes, pad_images
from .detection import DetectionConfig, check_detection_targets, image_list, sample_rois
from .fast_rcnn import BoxHead, detect, head_losses


def rpn_losses(anchors: torch.Tensor, objectness: torch.Tensor, deltas: torch.Tensor, targets: list[dict],
               config: DetectionConfig) -> dict:
    """The RPN's two losses over a batch.

    anchors float[A, 4] (pixels), objectness logits [N, A], offsets [N, A, 4], targets (``boxes`` per image).
    Returns ``rpn_objectness`` (BCE over the sampled anchors) and ``rpn_box`` (smooth L1 of the positives, summed
    and divided by the number of sampled anchors), each averaged over images.
    """
    obj_losses, box_losses = [], []
    for o, d, t in zip(objectness, deltas, targets):
        gt = t["boxes"].to(anchors)
        labels = torch.zeros(len(anchors), device=anchors.device)
        idx = torch.zeros(len(anchors), dtype=torch.long, device=anchors.device)
        if len(gt):
            iou = box_iou(anchors, gt)                                                # (A, G)
            best, idx = iou.max(1)
            labels[(best >= config.rpn_neg_iou) & (best < config.rpn_pos_iou)] = -1  # neither: ignored
            labels[best >= config.rpn_pos_iou] = 1
            labels[iou.argmax(0)] = 1                                                 # each ground truth's best anchor
        pos = torch.nonzero(labels == 1).flatten()
        neg = torch.nonzero(labels == 0).flatten()
        pos = pos[torch.randperm(len(pos), device=pos.device)[: config.rpn_batch // 2]]
        neg = neg[torch.randperm(len(neg), device=neg.device)[: config.rpn_batch - len(pos)]]
        sel = torch.cat([pos, neg])
        obj_losses.append(F.binary_cross_entropy_with_logits(o[sel], labels[sel]))
        target = encode_boxes(anchors[pos], gt[idx[pos]]) if len(pos) else d[:0]
        box_losses.append(F.smooth_l1_loss(d[pos], target, beta=1 / 9, reduction="sum") / max(len(sel), 1))
    return {"rpn_objectness": torch.stack(obj_losses).mean(), "rpn_box": torch.stack(box_losses).mean()}


class FasterRCNN(nn.Module):
    """Backbone -> RPN proposals -> RoI pooling -> Fast R-CNN head, trained jointly (four losses)."""

    # the cascade's region proposal network, the same code: anchors of a feature map, the RPN's outputs,
    # and decoding + clipping + NMS into proposals
    anchors = MaskCascade.anchors
    rpn = MaskCascade.rpn
    rpn_proposals = MaskCascade.propose

    def __init__(self, config: DetectionConfig | None = None):
        super().__init__()
        self.config = cfg = config or DetectionConfig()
        self.backbone = Backbone(cfg.width)
        C = self.backbone.out_channels
        self.anchor_sizes = cfg.anchor_pixels
        self.num_anchors = len(self.anchor_sizes) * len(cfg.anchor_ratios)
        self.rpn_conv = nn.Sequential(nn.Conv2d(C, C, 3, padding=1), nn.ReLU(inplace=True))
        self.rpn_obj = nn.Conv2d(C, self.num_anchors, 1)
        self.rpn_box = nn.Conv2d(C, 4 * self.num_anchors, 1)
        nn.init.normal_(self.rpn_box.weight, std=0.01)
        nn.init.zeros_(self.rpn_box.bias)
        self.head = BoxHead(C, cfg.roi_size, cfg.hidden, cfg.num_classes)
        self._anchor_cache: dict = {}

    def pooled(self, feats: torch.Tensor, rois: list[torch.Tensor]) -> torch.Tensor:
        s = self.config.roi_size
        return roi_pool(feats, [r.to(feats) for r in rois], (s, s), 1.0 / self.backbone.stride)

    def forward(self, images, targets: list[dict] | None = None):
        ims = image_list(images)
        if self.training:
            check_detection_targets(targets, len(ims))
        x, sizes = pad_images(ims)
        feats = self.backbone(x)                                                      # (N, C, H'/4, W'/4)
        anchors = self.anchors(tuple(feats.shape[-2:]), device=x.device)
        obj, deltas = self.rpn(feats)
        cfg = self.config
        if self.training:
            losses = rpn_losses(anchors, obj, deltas, targets, cfg)
            proposals = self.rpn_proposals(anchors, obj, deltas, sizes, cfg.post_nms_train)
            rois, labels, box_targets = zip(*(sample_rois(p, t["boxes"], t["labels"], cfg)
                                              for p, t in zip(proposals, targets)))
            class_logits, box_deltas = self.head(self.pooled(feats, list(rois)))
            return {**losses, **head_losses(class_logits, box_deltas, torch.cat(labels), torch.cat(box_targets))}
        proposals = self.rpn_proposals(anchors, obj, deltas, sizes, cfg.post_nms_test)
        with torch.no_grad():
            class_logits, box_deltas = self.head(self.pooled(feats, proposals))
        return detect(proposals, class_logits, box_deltas, sizes, cfg)

    @torch.no_grad()
    def predict(self, images) -> list[dict]:
        """Eval-mode detections of each image."""
        self.eval()
        return self(images)
