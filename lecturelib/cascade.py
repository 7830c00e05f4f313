"""Multi-task Network Cascades (Dai, He & Sun, 2015), small enough for a laptop CPU.

One network, three stages on a shared backbone, trained end to end with one loss:

1. **boxes**: a region proposal network (Faster R-CNN's RPN): at every feature-map cell,
   ``A`` anchors; a 3×3 conv, then per anchor an objectness logit and a box offset
   (dx, dy, dw, dh). Decoded, clipped, NMS-ed: class-agnostic proposals.
2. **masks**: each proposal's features are reshaped to a fixed size with RoIAlign
   (``torchvision.ops.roi_align``), and a small head predicts a 28×28 figure/ground
   mask: per-pixel logistic regression.
3. **categories**: the RoI features are multiplied by the predicted mask (background
   masked out) and, beside the plain box features, classified into ``num_classes``
   (0 = background). The class loss back-propagates into the mask head.

The loss is the sum: objectness BCE + box smooth-L1 (RPN) + mask BCE + class CE.
As in torchvision, the proposal boxes are treated as constants in the RoI stages
(MNC's paper also differentiates through the box coordinates).

API (torchvision detection style): ``model.train(); losses = model(images, targets)``;
``model.eval(); preds = model(images)`` with per image ``boxes``, ``labels``, ``scores``
and ``masks`` float[D, 1, H, W] (probabilities).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.ops import box_iou, nms, roi_align

from .scenes import NUM_CLASSES
from .sds import select_detections

ANCHOR_CACHE = 8   # anchor sets kept per model (one per feature-map size and device)

BBOX_CLIP = math.log(1000.0 / 16)


# ----------------------------------------------------------------------------- anchors and box coding
def make_anchors(feature_size: tuple[int, int], stride: int, sizes, ratios) -> torch.Tensor:
    """float32[h * w * A, 4] anchors (x0, y0, x1, y1) centred on each feature cell, A = len(sizes) * len(ratios).

    Cell (i, j) covers pixels [j*stride, (j+1)*stride); its anchors are centred at its middle.
    ``ratios`` are height / width; every anchor of a given size has area size².
    """
    h, w = feature_size
    if stride < 1 or h < 1 or w < 1:
        raise ValueError(f"need a positive stride and feature size, got stride={stride}, size={feature_size}")
    base = []
    for r in ratios:
        for s in sizes:
            bw, bh = s / math.sqrt(r), s * math.sqrt(r)
            base.append([-bw / 2, -bh / 2, bw / 2, bh / 2])
    base = torch.tensor(base, dtype=torch.float32)                            # (A, 4)
    cy = (torch.arange(h, dtype=torch.float32) + 0.5) * stride
    cx = (torch.arange(w, dtype=torch.float32) + 0.5) * stride
    yy, xx = torch.meshgrid(cy, cx, indexing="ij")
    centres = torch.stack([xx, yy, xx, yy], -1).reshape(-1, 1, 4)            # (h*w, 1, 4)
    return (centres + base[None]).reshape(-1, 4)                              # (h*w*A, 4), cell-major


def encode_boxes(anchors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Offsets float[N, 4] (dx, dy, dw, dh) that take ``anchors`` [N, 4] to ``boxes`` [N, 4] (Faster R-CNN).

    dx = (x_b - x_a) / w_a, dy = (y_b - y_a) / h_a (centres), dw = log(w_b / w_a), dh = log(h_b / h_a).
    """
    if anchors.shape != boxes.shape or anchors.shape[-1] != 4:
        raise ValueError(f"anchors {tuple(anchors.shape)} and boxes {tuple(boxes.shape)} must both be [N, 4]")
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + 0.5 * aw, anchors[:, 1] + 0.5 * ah
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    bx, by = boxes[:, 0] + 0.5 * bw, boxes[:, 1] + 0.5 * bh
    return torch.stack([(bx - ax) / aw, (by - ay) / ah, torch.log(bw / aw), torch.log(bh / ah)], 1)


def decode_boxes(anchors: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode_boxes`: apply offsets ``deltas`` [N, 4] to ``anchors`` [N, 4] -> boxes [N, 4]."""
    if anchors.shape != deltas.shape or anchors.shape[-1] != 4:
        raise ValueError(f"anchors {tuple(anchors.shape)} and deltas {tuple(deltas.shape)} must both be [N, 4]")
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + 0.5 * aw, anchors[:, 1] + 0.5 * ah
    dx, dy = deltas[:, 0], deltas[:, 1]
    dw, dh = deltas[:, 2].clamp(max=BBOX_CLIP), deltas[:, 3].clamp(max=BBOX_CLIP)
    x, y = ax + dx * aw, ay + dy * ah
    w, h = aw * torch.exp(dw), ah * torch.exp(dh)
    return torch.stack([x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h], 1)


def warp_boxes(features: torch.Tensor, boxes: list[torch.Tensor], size: int, stride: int) -> torch.Tensor:
    """RoI warping: each box's region of ``features`` [N, C, h, w] resampled to [R, C, size, size].

    ``boxes``: one float[R_i, 4] tensor per image, in input-pixel coordinates.
    """
    return roi_align(features, boxes, output_size=size, spatial_scale=1.0 / stride, sampling_ratio=2, aligned=True)


# ----------------------------------------------------------------------------- the network
def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Backbone(nn.Module):
    """A small convolutional backbone with one top-down merge: features at stride 4, large receptive field.

    x (Tensor[N, 3, H, W]) -> Tensor[N, out_channels, H/4, W/4]. H and W must be multiples of 16.
    """

    stride = 4

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        self.c1 = nn.Sequential(conv_bn(3, w, 2), conv_bn(w, w))               # /2
        self.c2 = nn.Sequential(conv_bn(w, 2 * w, 2), conv_bn(2 * w, 2 * w))   # /4
        self.c3 = nn.Sequential(conv_bn(2 * w, 4 * w, 2), conv_bn(4 * w, 4 * w))  # /8
        self.c4 = nn.Sequential(conv_bn(4 * w, 4 * w, 2), conv_bn(4 * w, 4 * w))  # /16
        self.lat3 = nn.Conv2d(4 * w, 2 * w, 1)
        self.lat4 = nn.Conv2d(4 * w, 2 * w, 1)
        self.lat2 = nn.Conv2d(2 * w, 2 * w, 1)
        self.smooth = conv_bn(2 * w, 2 * w)
        self.out_channels = 2 * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"Backbone expects [N, 3, H, W] with H, W multiples of 16, got {tuple(x.shape)}; "
                             "pad the images")
        c2 = self.c2(self.c1(x))                                     # (N, 2w, H/4, W/4)
        c3 = self.c3(c2)                                             # (N, 4w, H/8, W/8)
        c4 = self.c4(c3)                                             # (N, 4w, H/16, W/16)
        p3 = self.lat3(c3) + F.interpolate(self.lat4(c4), size=c3.shape[-2:], mode="nearest")
        p2 = self.lat2(c2) + F.interpolate(p3, size=c2.shape[-2:], mode="nearest")
        return self.smooth(p2)                                       # (N, 2w, H/4, W/4)


@dataclass(frozen=True)
class CascadeConfig:
    """The recipe of the cascade and of Mask R-CNN (lesson 07): sizes and training.

    Anchor sizes are fractions of the image side (items are 22-75 % of it). image_size: the scene side
    (Mask R-CNN does not resize). epochs, batch_size, lr, grad_clip: training (AdamW, one-cycle).
    """

    num_classes: int = NUM_CLASSES
    width: int = 16
    image_size: int = 64
    anchor_sizes: tuple = (0.19, 0.38, 0.62)
    anchor_ratios: tuple = (0.5, 1.0, 2.0)
    rpn_pos_iou: float = 0.6
    rpn_neg_iou: float = 0.3
    rpn_batch: int = 96            # anchors sampled per image for the RPN loss
    pre_nms: int = 300
    rpn_nms: float = 0.7
    post_nms_train: int = 48
    post_nms_test: int = 24
    roi_batch: int = 16            # RoIs per image in training
    roi_pos_fraction: float = 0.5
    roi_pos_iou: float = 0.5
    roi_size: int = 14             # RoIAlign output (features)
    mask_size: int = 28            # figure/ground mask resolution
    hidden: int = 128
    score_threshold: float = 0.05
    mask_nms: float = 0.5
    detections: int = 100
    epochs: int = 12
    batch_size: int = 16
    lr: float = 3e-3
    grad_clip: float = 10.0

    @classmethod
    def from_profile(cls, profile, **changes) -> "CascadeConfig":
        """The lesson's recipe for ``profile``: half the profile's batch for twice its epochs."""
        base = dict(width=profile.width, image_size=profile.image_size, epochs=2 * profile.epochs,
                    batch_size=max(2, profile.batch_size // 2))
        return cls(**{**base, **changes})

    def __post_init__(self):
        if self.num_classes < 2:
            raise ValueError(f"CascadeConfig.num_classes must be >= 2 (background counts), got {self.num_classes}")
        if self.mask_size != 2 * self.roi_size:
            raise ValueError(f"mask_size must be 2 * roi_size (the mask logits are upsampled 2x), got "
                             f"{self.mask_size} and {self.roi_size}")


class MaskCascade(nn.Module):
    """MNC: backbone -> RPN -> RoIAlign -> figure/ground mask -> masked features -> class."""

    def __init__(self, config: CascadeConfig | None = None):
        super().__init__()
        self.config = cfg = config or CascadeConfig()
        self.backbone = Backbone(cfg.width)
        C = self.backbone.out_channels
        A = len(cfg.anchor_sizes) * len(cfg.anchor_ratios)
        self.num_anchors = A
        # stage 1: region proposal network
        self.rpn_conv = nn.Sequential(nn.Conv2d(C, C, 3, padding=1), nn.ReLU(inplace=True))
        self.rpn_obj = nn.Conv2d(C, A, 1)
        self.rpn_box = nn.Conv2d(C, 4 * A, 1)
        nn.init.normal_(self.rpn_box.weight, std=0.01)
        nn.init.zeros_(self.rpn_box.bias)
        # stage 2: figure/ground mask on warped RoI features
        self.mask_head = nn.Sequential(conv_bn(C, C), nn.Conv2d(C, 1, 1),
                                       nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
        # stage 3: classify the box features and the masked features
        flat = C * (cfg.roi_size // 2) ** 2
        self.box_fc = nn.Sequential(nn.Flatten(), nn.Linear(flat, cfg.hidden), nn.ReLU(inplace=True))
        self.region_fc = nn.Sequential(nn.Flatten(), nn.Linear(flat, cfg.hidden), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(2 * cfg.hidden, cfg.num_classes)
        self._anchor_cache: dict = {}

    # ------------------------------------------------------------------ stage 1
    def anchors(self, feature_size: tuple[int, int], image_size: int, device) -> torch.Tensor:
        """The anchors of a feature map, float[h * w * A, 4] (x0, y0, x1, y1); the last few sizes are cached
        (at most ``ANCHOR_CACHE`` entries, so images of ever new sizes cannot grow the cache without bound)."""
        key = (tuple(feature_size), image_size, str(device))
        if key not in self._anchor_cache:
            if len(self._anchor_cache) >= ANCHOR_CACHE:
                self._anchor_cache.pop(next(iter(self._anchor_cache)))     # the oldest entry
            sizes = [s * image_size for s in self.config.anchor_sizes]
            self._anchor_cache[key] = make_anchors(feature_size, self.backbone.stride, sizes,
                                                   self.config.anchor_ratios).to(device)
        return self._anchor_cache[key]

    def rpn(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats [N, C, h, w] -> objectness logits [N, h*w*A], offsets [N, h*w*A, 4] (cell-major, like the anchors)."""
        N, _, h, w = feats.shape
        t = self.rpn_conv(feats)
        obj = self.rpn_obj(t).permute(0, 2, 3, 1).reshape(N, -1)                    # (N, h*w*A)
        box = self.rpn_box(t).reshape(N, self.num_anchors, 4, h, w)
        box = box.permute(0, 3, 4, 1, 2).reshape(N, -1, 4)                           # (N, h*w*A, 4)
        return obj, box

    def propose(self, anchors, obj, deltas, image_hw, keep: int) -> list[torch.Tensor]:
        """Decode, clip, drop tiny boxes, NMS; up to ``keep`` boxes per image (constants: no gradient)."""
        H, W = image_hw
        out = []
        for o, d in zip(obj.detach(), deltas.detach()):
            top = o.topk(min(self.config.pre_nms, len(o))).indices
            boxes = decode_boxes(anchors[top], d[top])
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, W)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, H)
            ok = ((boxes[:, 2] - boxes[:, 0]) >= 2) & ((boxes[:, 3] - boxes[:, 1]) >= 2)
            boxes, scores = boxes[ok], o[top][ok]
            kept = nms(boxes, scores, self.config.rpn_nms)[:keep]
            out.append(boxes[kept])
        return out

    # ------------------------------------------------------------------ stages 2 and 3
    def heads(self, feats: torch.Tensor, rois: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits [R, 1, 28, 28] and class logits [R, num_classes] for the RoIs (list per image)."""
        x = warp_boxes(feats, rois, self.config.roi_size, self.backbone.stride)      # (R, C, 14, 14)
        mask_logits = self.mask_head(x)                                               # (R, 1, 28, 28)
        fg = torch.sigmoid(F.avg_pool2d(mask_logits, 2))                              # (R, 1, 14, 14)
        box_feat = self.box_fc(F.avg_pool2d(x, 2))                                    # (R, hidden)
        region_feat = self.region_fc(F.avg_pool2d(x * fg, 2))                        # background masked out
        return mask_logits, self.classifier(torch.cat([box_feat, region_feat], 1))

    def forward(self, images, targets: list[dict] | None = None):
        x = torch.stack(list(images)) if isinstance(images, (list, tuple)) else images
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"images must be a list of [3, H, W] tensors or a batch [N, 3, H, W], "
                             f"got {tuple(x.shape)}")
        H, W = x.shape[-2:]
        feats = self.backbone(x)                                                      # (N, C, H/4, W/4)
        anchors = self.anchors(tuple(feats.shape[-2:]), max(H, W), x.device)
        obj, deltas = self.rpn(feats)
        if self.training:
            if targets is None or len(targets) != len(x):
                raise ValueError("in training mode pass one target dict (boxes, labels, masks) per image")
            return self._losses(feats, anchors, obj, deltas, targets, (H, W))
        rois = self.propose(anchors, obj, deltas, (H, W), self.config.post_nms_test)
        return self._detect(feats, rois, (H, W))

    def _losses(self, feats, anchors, obj, deltas, targets, image_hw) -> dict:
        cfg = self.config
        # --- stage 1: label anchors by box IoU, sample, BCE + smooth L1
        obj_losses, box_losses = [], []
        for o, d, t in zip(obj, deltas, targets):
            gt = t["boxes"].to(anchors)
            labels = torch.zeros(len(anchors), device=anchors.device)
            if len(gt):
                iou = box_iou(anchors, gt)                                            # (A_total, G)
                best, idx = iou.max(1)
                labels[best < cfg.rpn_neg_iou] = 0
                labels[(best >= cfg.rpn_neg_iou) & (best < cfg.rpn_pos_iou)] = -1    # ignored
                labels[best >= cfg.rpn_pos_iou] = 1
                labels[iou.argmax(0)] = 1                                             # every GT gets its best anchor
            pos = torch.nonzero(labels == 1).flatten()
            neg = torch.nonzero(labels == 0).flatten()
            pos = pos[torch.randperm(len(pos), device=pos.device)[: cfg.rpn_batch // 2]]
            neg = neg[torch.randperm(len(neg), device=neg.device)[: cfg.rpn_batch - len(pos)]]
            sel = torch.cat([pos, neg])
            obj_losses.append(F.binary_cross_entropy_with_logits(o[sel], labels[sel]))
            if len(pos):
                target = encode_boxes(anchors[pos], gt[idx[pos]])
                box_losses.append(F.smooth_l1_loss(d[pos], target, beta=1 / 9, reduction="sum") / max(len(sel), 1))
            else:
                box_losses.append(d.sum() * 0)
        # --- stage 2 and 3 on proposals + ground-truth boxes
        proposals = self.propose(anchors, obj, deltas, image_hw, cfg.post_nms_train)
        rois, roi_labels, gt_masks, pos_boxes = [], [], [], []
        for props, t in zip(proposals, targets):
            gt = t["boxes"].to(props)
            cand = torch.cat([props, gt])
            if len(gt) == 0:
                pick = torch.randperm(len(cand), device=cand.device)[: cfg.roi_batch]
                rois.append(cand[pick])
                roi_labels.append(torch.zeros(len(pick), dtype=torch.long, device=cand.device))
                continue
            best, idx = box_iou(cand, gt).max(1)
            pos = torch.nonzero(best >= cfg.roi_pos_iou).flatten()
            neg = torch.nonzero(best < cfg.roi_pos_iou).flatten()
            pos = pos[torch.randperm(len(pos), device=pos.device)[: int(cfg.roi_batch * cfg.roi_pos_fraction)]]
            neg = neg[torch.randperm(len(neg), device=neg.device)[: cfg.roi_batch - len(pos)]]
            sel = torch.cat([pos, neg])
            rois.append(cand[sel])
            lab = t["labels"].to(cand.device)[idx[sel]].clone()
            lab[len(pos):] = 0
            roi_labels.append(lab)
            # mask targets: the matched GT mask, cut by the RoI box and resized (RoIAlign on the mask)
            gt_masks.append(t["masks"].to(cand)[idx[pos]][:, None])                 # (P, 1, H, W)
            pos_boxes.append(cand[pos])
        if gt_masks and sum(len(b) for b in pos_boxes):
            gm = torch.cat(gt_masks)
            b = torch.cat(pos_boxes)
            b = torch.cat([torch.arange(len(b), device=b.device, dtype=b.dtype)[:, None], b], 1)
            mask_targets = roi_align(gm, b, cfg.mask_size, 1.0, 2, aligned=True)[:, 0] >= 0.5  # (P, 28, 28)
        mask_logits, class_logits = self.heads(feats, rois)
        labels = torch.cat(roi_labels)
        cls_loss = F.cross_entropy(class_logits, labels)
        fg = labels > 0
        if fg.any():
            mask_loss = F.binary_cross_entropy_with_logits(mask_logits[fg][:, 0], mask_targets.float())
        else:
            mask_loss = mask_logits.sum() * 0
        return {"rpn_objectness": torch.stack(obj_losses).mean(), "rpn_box": torch.stack(box_losses).mean(),
                "mask": mask_loss, "classifier": cls_loss}

    @torch.no_grad()
    def _detect(self, feats, rois, image_hw) -> list[dict]:
        cfg = self.config
        mask_logits, class_logits = self.heads(feats, rois)
        probs = F.softmax(class_logits, 1)
        out, start = [], 0
        for boxes in rois:
            n = len(boxes)
            p, m = probs[start:start + n], torch.sigmoid(mask_logits[start:start + n])
            start += n
            out.append(postprocess(boxes, p, m, image_hw, cfg.score_threshold, cfg.mask_nms, cfg.detections))
        return out


def postprocess(boxes, probs, masks, image_hw, score_threshold: float, nms_threshold: float,
                detections: int) -> dict:
    """Masks [R, 1, m, m] pasted into their boxes in the image, then per-class scoring and region NMS
    (:func:`lecturelib.sds.select_detections`). Returns ``masks`` float[D, 1, H, W] (probabilities)."""
    H, W = image_hw
    full = paste_masks_in_image(masks, boxes, (H, W), padding=1) if len(boxes) else masks.new_zeros(0, 1, H, W)
    return select_detections(boxes, probs, full, full[:, 0] >= 0.5, score_threshold, nms_threshold, detections)


def cascade_stages(model: MaskCascade, image: torch.Tensor, top: int = 6) -> OrderedDict:
    """What each stage produces for one image [3, H, W] (for pictures): anchors, the RPN's top proposals,
    their warped features, their figure/ground masks and class probabilities."""
    model.eval()
    with torch.no_grad():
        x = image[None]
        H, W = image.shape[-2:]
        feats = model.backbone(x)
        anchors = model.anchors(tuple(feats.shape[-2:]), max(H, W), x.device)
        obj, deltas = model.rpn(feats)
        rois = model.propose(anchors, obj, deltas, (H, W), top)
        warped = warp_boxes(feats, rois, model.config.roi_size, model.backbone.stride)
        mask_logits, class_logits = model.heads(feats, rois)
    return OrderedDict(anchors=anchors, objectness=torch.sigmoid(obj[0]), proposals=rois[0], warped=warped,
                       masks=torch.sigmoid(mask_logits[:, 0]), probs=F.softmax(class_logits, 1))
