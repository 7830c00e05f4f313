"""torchvision's Mask R-CNN (He et al., ICCV 2017), no pretrained weights, sized for the course scenes.

The modern reference row of lesson 08. Mask R-CNN is Faster R-CNN with a mask branch added in
parallel to its box and class branch (class-specific masks, predicted without feeding the class
head; RoIAlign for the RoI features; boxes refined in the second stage). It does not descend from
the cascade, whose class head reads the predicted mask. It gets the same backbone
(:class:`lecturelib.cascade.Backbone`), the same anchors, the same scenes and the same training
loop and budget as :class:`lecturelib.cascade.MaskCascade`.

torchvision resizes every input so that its shorter side is ``image_size`` (its longer side at most
``image_size``) and pads it to a multiple of 32; boxes and masks come back in the input's pixels.

**Boxes.** Outside, boxes are the course's float pixel-edge boxes (x0, y0, x1, y1), targets and predictions
alike. Inside, torchvision's RoIAlign runs with ``aligned=False``, which reads a box in pixel-centre
coordinates; :class:`PixelEdgeTransform` shifts target boxes by -0.5 on the way in and predicted boxes by
+0.5 on the way out, so that torchvision's mask targets (``project_masks_on_boxes``) are exactly
:func:`lecturelib.cascade.roi_mask_targets` of the pixel-edge boxes, and pastes the 28×28 masks back with
:func:`lecturelib.cascade.paste_masks` instead of torchvision's ``paste_masks_in_image`` (which reads boxes as
inclusive pixel indices and pastes a perfect mask of a 32-px box one pixel too long at each end). A box
torchvision clips to the image's left or top border starts at pixel edge 0.5 there. Its
per-image caps (``post_nms_test`` proposals, ``detections`` detections) say when they bite
(:mod:`lecturelib.caps`).
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
import torch.nn as nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import MultiScaleRoIAlign

from .caps import CONFIDENT, proposals_saturated, warn_cap
from .cascade import ANCHOR_FRACTIONS, Backbone, CascadeConfig, paste_masks, roi_fc

CENTRE_SHIFT = 0.5      # pixel-edge coordinate - pixel-centre coordinate (torchvision's aligned=False RoIAlign)


class PixelEdgeTransform(GeneralizedRCNNTransform):
    """torchvision's input/output transform with pixel-edge boxes outside and an exact mask paste.

    ``resize``: the image and the target as torchvision does (boxes scaled, exact for pixel-edge boxes), then
    the target boxes shifted by -0.5 into the pixel-centre coordinates torchvision's RoIAlign (``aligned=False``)
    reads. ``postprocess``: predicted boxes shifted by +0.5 back to pixel-edge, scaled to the input's size and
    clipped to it; each 28×28 mask pasted into its pixel-edge box with :func:`lecturelib.cascade.paste_masks`.
    Returns per image ``boxes`` float[D, 4] (pixel-edge), ``masks`` float[D, 1, H, W] (probabilities).
    """

    def resize(self, image, target=None):
        image, target = super().resize(image, target)
        if target is not None and "boxes" in target:
            target = {**target, "boxes": target["boxes"] - CENTRE_SHIFT}
        return image, target

    def postprocess(self, result, image_shapes, original_image_sizes):
        if self.training:
            return result
        for pred, im_s, (H, W) in zip(result, image_shapes, original_image_sizes):
            boxes = resize_boxes(pred["boxes"] + CENTRE_SHIFT, im_s, (H, W))
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, W)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, H)
            pred["boxes"] = boxes
            if "masks" in pred:
                ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
                masks = pred["masks"].new_zeros(len(boxes), 1, H, W)
                masks[ok] = paste_masks(pred["masks"][ok], boxes[ok], (H, W))
                pred["masks"] = masks
        return result


class _FeatureDict(nn.Module):
    """Wraps a backbone returning one tensor into torchvision's ``{"0": features}`` interface."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body
        self.out_channels = body.out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict:
        return OrderedDict([("0", self.body(x))])


def tiny_maskrcnn(num_classes: int, image_size: int, width: int = 16,
                  config: CascadeConfig | None = None) -> MaskRCNN:
    """``torchvision.models.detection.MaskRCNN`` with the cascade's backbone and anchors (weights=None).

    Images of ``image_size`` are not resized (min_size = max_size = ``image_size``; other sizes are scaled
    to it); heads are shrunk to the backbone's width, and the box head is :func:`lecturelib.cascade.roi_fc` (a 1×1
    squeeze to ``config.head_channels``, then two fully connected layers of ``config.hidden``, torchvision's
    TwoMLPHead on fewer inputs). Anchors: ``config.anchor_sizes`` in pixels, or
    ANCHOR_FRACTIONS × ``image_size`` when None. Boxes in and out are pixel-edge and masks are pasted exactly
    (:class:`PixelEdgeTransform`). A forward hook warns (:class:`lecturelib.caps.CapWarning`)
    when an image's detections suggest that ``post_nms_test`` or ``detections`` dropped objects.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background counts), got {num_classes}")
    if image_size % 16:
        raise ValueError(f"image_size must be a multiple of 16 (the backbone's coarsest stride), got {image_size}")
    cfg = config or CascadeConfig(num_classes=num_classes, width=width)
    backbone = _FeatureDict(Backbone(width, cfg.feature_stride, cfg.first_stride))
    C = backbone.out_channels
    sizes = cfg.anchor_sizes if cfg.anchor_sizes is not None else tuple(f * image_size for f in ANCHOR_FRACTIONS)
    anchors = AnchorGenerator(sizes=(tuple(sizes),),
                              aspect_ratios=(tuple(cfg.anchor_ratios),))
    box_pool = MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2)
    mask_pool = MultiScaleRoIAlign(["0"], output_size=cfg.roi_size, sampling_ratio=2)
    model = MaskRCNN(
        backbone, num_classes=None,
        min_size=image_size, max_size=image_size, image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0],
        rpn_anchor_generator=anchors, rpn_pre_nms_top_n_train=cfg.pre_nms, rpn_pre_nms_top_n_test=cfg.pre_nms,
        rpn_post_nms_top_n_train=cfg.post_nms_train, rpn_post_nms_top_n_test=cfg.post_nms_test,
        rpn_fg_iou_thresh=cfg.rpn_pos_iou, rpn_bg_iou_thresh=cfg.rpn_neg_iou, rpn_batch_size_per_image=cfg.rpn_batch,
        box_roi_pool=box_pool, box_head=roi_fc(C, cfg.head_channels, 7, cfg.hidden, layers=2),
        box_predictor=FastRCNNPredictor(cfg.hidden, num_classes),
        box_batch_size_per_image=cfg.roi_batch, box_positive_fraction=cfg.roi_pos_fraction,
        box_score_thresh=cfg.score_threshold, box_detections_per_img=cfg.detections,
        mask_roi_pool=mask_pool, mask_head=MaskRCNNHeads(C, [C], 1),
        mask_predictor=MaskRCNNPredictor(C, C, num_classes),
    )
    t = model.transform
    model.transform = PixelEdgeTransform(t.min_size, t.max_size, t.image_mean, t.image_std,
                                         size_divisible=t.size_divisible, fixed_size=t.fixed_size)
    model.register_forward_hook(partial(report_caps, cfg.post_nms_test, cfg.detections))
    return model


def report_caps(proposals: int, detections: int, model: nn.Module, inputs, outputs) -> None:
    """Forward hook of :func:`tiny_maskrcnn` (with its ``post_nms_test`` and ``detections`` bound): in eval mode,
    warn (:class:`lecturelib.caps.CapWarning`) when an image's detections fill the proposal or detection cap."""
    if model.training or not isinstance(outputs, list):
        return
    for out in outputs:
        scores = out["scores"].detach()
        if proposals_saturated(scores, proposals):
            warn_cap(f"Mask R-CNN: at least half of the post_nms_test={proposals} proposals of an image became "
                     "detections scored >= 0.5; it may hold more objects: raise CascadeConfig.post_nms_test")
        if len(scores) >= detections and float(scores.min()) >= CONFIDENT:
            warn_cap(f"Mask R-CNN: an image returned detections={detections} detections, all scored >= 0.5; more "
                     "may have been dropped: raise CascadeConfig.detections")
