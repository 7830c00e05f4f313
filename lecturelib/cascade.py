"""Multi-task Network Cascades (Dai, He & Sun, CVPR 2016), small enough for a laptop CPU.

One network, three stages on a shared backbone, trained end to end with one loss:

1. **boxes**: a region proposal network (Faster R-CNN's RPN): at every feature-map cell,
   ``A`` anchors; a 3×3 conv, then per anchor an objectness logit and a box offset
   (dx, dy, dw, dh). Decoded, clipped, NMS-ed: class-agnostic proposals.
2. **masks**: each proposal's features are warped to a fixed size -- MNC's "RoI warping"
   layer, computed here with RoIAlign (He et al., Mask R-CNN, 2017; ``torchvision.ops.roi_align``)
   -- and a small head predicts a 28×28 figure/ground mask: per-pixel logistic regression.
3. **categories**: the RoI features are multiplied by the predicted mask (background
   masked out) and, beside the plain box features, classified into ``num_classes``
   (0 = background). The class loss back-propagates into the mask head.

The loss is the sum: objectness BCE + box smooth-L1 (RPN) + mask BCE + class CE.
As in torchvision, the proposal boxes are treated as constants in the RoI stages
(MNC's paper also differentiates through the box coordinates).

API (torchvision detection style): ``model.train(); losses = model(images, targets)``;
``model.eval(); preds = model(images)`` with per image ``boxes``, ``labels``, ``scores``
and ``masks`` float[D, 1, H, W] (probabilities). Images may have any size (each is padded with zeros
at the bottom and right to a multiple of 16 for the backbone; outputs are in its own pixels). Anchor
sizes are in pixels and do not change with the input size: a model trained on 128-px tiles looks for
objects of the same pixel size on a 512-px image. Target boxes are pixel-edge (x0, y0, x1, y1) with
x1 > x0 and y1 > y0 (:func:`lecturelib.instances.instances_to_targets` makes them); empty boxes are refused.

**One box convention end to end.** Every box here is a float pixel-edge box (x0, y0, x1, y1): pixel
(row i, column j) is the unit square [j, j+1) × [i, i+1), so a mask whose columns run 3..7 has x0 = 3,
x1 = 8. The same box is used to cut the mask targets (:func:`roi_mask_targets`, RoIAlign with
``aligned=True``, which reads pixel-edge boxes), to warp the features (:func:`warp_boxes`, the same), to paste
the predicted 28×28 masks back (:func:`paste_masks`, the exact inverse resampling: the m × m mask covers the
box's pixel-edge extent) and to draw (``plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0)`` on an
``imshow`` picture, whose pixel j spans [j - 0.5, j + 0.5)). A perfect 28×28 prediction pasted back gives its
object again up to one boundary pixel (``tests/test_cascade.py``). torchvision's ``paste_masks_in_image``
reads boxes as inclusive pixel indices and is not used.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import box_iou, nms, roi_align

from .caps import proposals_saturated, warn_cap
from .scenes import NUM_CLASSES
from .sds import select_detections

ANCHOR_CACHE = 8   # anchor sets kept per model (one per feature-map size and device)
ANCHOR_FRACTIONS = (0.19, 0.38, 0.62)   # default anchor sides as fractions of the training image side
SIZE_MULTIPLE = 16                      # the backbone's coarsest stride: inputs are padded to a multiple of it

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

    MNC's stage-2 layer, computed with RoIAlign (bilinear sampling; the boxes get no gradient).

    ``boxes``: one float[R_i, 4] tensor per image, in input-pixel coordinates.
    """
    return roi_align(features, boxes, output_size=size, spatial_scale=1.0 / stride, sampling_ratio=2, aligned=True)


# ----------------------------------------------------------------------------- the network
def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Backbone(nn.Module):
    """A small convolutional backbone with top-down merges (FPN-style): one feature map, large receptive field.

    x (Tensor[N, 3, H, W]) -> Tensor[N, out_channels = 2 * width, H/stride, W/stride]. H and W must be multiples
    of 16. Four stages c1..c4 of two 3×3 conv-BN-ReLU layers each; c1 runs at ``first_stride`` (2: its first
    layer halves the image, 1: it keeps every pixel), each later stage halves again. The top-down path adds the
    coarser stages into c2's level (``stride`` = 2 × first_stride) or, one merge further, into c1's (``stride`` =
    first_stride). Lesson 07 uses first_stride 2, stride 4; lesson 08 first_stride 1, stride 2: its items are
    6-47 px wide, and a first layer that halves the image loses the detail that tells a shirt from a pullover.
    Raises ValueError for any other combination.
    """

    def __init__(self, width: int = 16, stride: int = 4, first_stride: int = 2):
        super().__init__()
        if first_stride not in (1, 2) or stride not in (first_stride, 2 * first_stride):
            raise ValueError(f"Backbone: first_stride must be 1 or 2 and stride first_stride or 2 * first_stride, "
                             f"got first_stride={first_stride}, stride={stride}")
        w = width
        self.stride = stride
        self.c1 = nn.Sequential(conv_bn(3, w, first_stride), conv_bn(w, w))     # /first_stride
        self.c2 = nn.Sequential(conv_bn(w, 2 * w, 2), conv_bn(2 * w, 2 * w))   # /2 first_stride
        self.c3 = nn.Sequential(conv_bn(2 * w, 4 * w, 2), conv_bn(4 * w, 4 * w))  # /4 first_stride
        self.c4 = nn.Sequential(conv_bn(4 * w, 4 * w, 2), conv_bn(4 * w, 4 * w))  # /8 first_stride
        self.lat3 = nn.Conv2d(4 * w, 2 * w, 1)
        self.lat4 = nn.Conv2d(4 * w, 2 * w, 1)
        self.lat2 = nn.Conv2d(2 * w, 2 * w, 1)
        self.smooth = conv_bn(2 * w, 2 * w)
        self.finest = stride == first_stride
        if self.finest:
            self.lat1 = nn.Conv2d(w, 2 * w, 1)
            self.smooth1 = conv_bn(2 * w, 2 * w)
        self.out_channels = 2 * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"Backbone expects [N, 3, H, W] with H, W multiples of 16, got {tuple(x.shape)}; "
                             "pad the images (lecturelib.cascade.pad_images)")
        c1 = self.c1(x)                                              # (N, w, H/f, W/f), f = first_stride
        c2 = self.c2(c1)                                             # (N, 2w, H/2f, W/2f)
        c3 = self.c3(c2)                                             # (N, 4w, H/4f, W/4f)
        c4 = self.c4(c3)                                             # (N, 4w, H/8f, W/8f)
        p3 = self.lat3(c3) + F.interpolate(self.lat4(c4), size=c3.shape[-2:], mode="nearest")
        p2 = self.smooth(self.lat2(c2) + F.interpolate(p3, size=c2.shape[-2:], mode="nearest"))  # (N, 2w, H/2f, W/2f)
        if not self.finest:
            return p2
        return self.smooth1(self.lat1(c1) + F.interpolate(p2, size=c1.shape[-2:], mode="nearest"))  # (N, 2w, H/f, W/f)


@dataclass(frozen=True)
class CascadeConfig:
    """The recipe of the cascade and of Mask R-CNN (lesson 08): sizes and training.

    width, feature_stride, first_stride: the backbone's (:class:`Backbone`): base channels, the stride of the one
    feature map the RPN and the RoI heads read, and the stride of its first stage (1 or 2).
    image_size: the side of the training images in pixels (Mask R-CNN resizes its inputs to it).
    anchor_sizes: anchor sides in pixels (an anchor of size s has area s² in each aspect ratio), the same for
    every input size; None: :data:`ANCHOR_FRACTIONS` × image_size (the course's items are 22-75 % of the scene
    side: 12.2, 24.3 and 39.7 px on 64-px scenes, 24.3, 48.6 and 79.4 px on 128-px scenes), fixed when the
    model is built. Read them with :attr:`anchor_pixels`.
    pre_nms / post_nms_test: anchors scored before the RPN's NMS / proposals kept after it at test time;
    together they bound how many objects one image can yield (a :class:`lecturelib.caps.CapWarning` says when
    half of ``post_nms_test`` became confident detections): raise both for images with many objects.
    detections: most detections per image (a CapWarning says when it drops one scored >= 0.5).
    head_channels, hidden: the class head (:func:`roi_fc`): a 1×1 conv squeezes the 7×7 RoI features to
    ``head_channels`` channels, then one fully connected layer of ``hidden`` units (Mask R-CNN's box head: two).
    epochs, batch_size, lr, grad_clip: training (AdamW, one-cycle).
    """

    num_classes: int = NUM_CLASSES
    width: int = 16
    feature_stride: int = 4
    first_stride: int = 2
    image_size: int = 64
    anchor_sizes: tuple | None = None
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
    head_channels: int = 8         # RoI features squeezed to this many channels before the class head's FC layer
    hidden: int = 64
    score_threshold: float = 0.05
    mask_nms: float = 0.5
    detections: int = 100
    epochs: int = 12
    batch_size: int = 8
    lr: float = 5e-3
    grad_clip: float = 10.0

    @classmethod
    def from_profile(cls, profile, **changes) -> "CascadeConfig":
        """The lesson's recipe for ``profile``: the profile's epochs over its train scenes (the same scenes and
        epochs as :meth:`lecturelib.sds.SDSConfig.from_profile`: equal numbers of training images seen), a
        quarter of its batch (more optimiser steps for the same images), a backbone whose first layer keeps every
        pixel and features at stride 2 (the course's items are 6-47 px wide, median 20: a first layer that
        halves the image and stride-4 features leave too little to tell a shirt from a pullover or to draw its
        outline), and a class head of 16 squeezed channels and 128 hidden units (lesson 08's diagnosis)."""
        base = dict(width=profile.width, image_size=profile.image_size, epochs=profile.epochs,
                    batch_size=max(2, profile.batch_size // 4), first_stride=1, feature_stride=2,
                    head_channels=16, hidden=128)
        return cls(**{**base, **changes})

    def __post_init__(self):
        if self.num_classes < 2:
            raise ValueError(f"CascadeConfig.num_classes must be >= 2 (background counts), got {self.num_classes}")
        if self.anchor_sizes is not None and (not self.anchor_sizes or min(self.anchor_sizes) < 2):
            raise ValueError(f"CascadeConfig.anchor_sizes are anchor sides in pixels (>= 2), got "
                             f"{self.anchor_sizes!r}; for sides relative to the image use "
                             f"tuple(f * image_size for f in {ANCHOR_FRACTIONS})")
        if self.mask_size != 2 * self.roi_size:
            raise ValueError(f"mask_size must be 2 * roi_size (the mask logits are upsampled 2x), got "
                             f"{self.mask_size} and {self.roi_size}")

    @property
    def anchor_pixels(self) -> tuple[float, ...]:
        """The anchor sides in pixels: ``anchor_sizes``, or ANCHOR_FRACTIONS × image_size when it is None."""
        if self.anchor_sizes is None:
            return tuple(f * self.image_size for f in ANCHOR_FRACTIONS)
        return tuple(float(s) for s in self.anchor_sizes)


def roi_fc(channels: int, squeeze: int, pooled: int, hidden: int, layers: int = 1) -> nn.Sequential:
    """The RoI feature head: float[R, channels, pooled, pooled] -> float[R, hidden].

    A 1×1 convolution squeezes the channels to ``squeeze`` (ReLU), the result is flattened (the layout of the
    item inside its box is kept) and ``layers`` fully connected layers of ``hidden`` units (ReLU) follow. With
    ``squeeze`` = 8 it holds about 8× fewer weights than a fully connected layer on the raw RoI features
    (Fast R-CNN's fc6), which would dominate the model's size on these small backbones.
    """
    if min(channels, squeeze, pooled, hidden, layers) < 1:
        raise ValueError(f"roi_fc: every size must be >= 1, got channels={channels}, squeeze={squeeze}, "
                         f"pooled={pooled}, hidden={hidden}, layers={layers}")
    mods = [nn.Conv2d(channels, squeeze, 1), nn.ReLU(inplace=True), nn.Flatten()]
    width = squeeze * pooled * pooled
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
        width = hidden
    return nn.Sequential(*mods)


def pad_images(images) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """A list of images [3, H_i, W_i] (or a batch [N, 3, H, W]) as one zero-padded batch whose sides are
    multiples of :data:`SIZE_MULTIPLE` (padding at the bottom and right), and each image's own (H_i, W_i)."""
    batch_given = isinstance(images, torch.Tensor) and images.dim() == 4
    ims = list(images) if batch_given or isinstance(images, (list, tuple)) else []
    if not ims or any(not isinstance(im, torch.Tensor) or im.dim() != 3 or im.shape[0] != 3 for im in ims):
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else [getattr(im, "shape", im) for im in ims]
        raise ValueError(f"images must be a list of [3, H, W] tensors or a batch [N, 3, H, W], got {got}")
    sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in ims]
    H = -(-max(h for h, _ in sizes) // SIZE_MULTIPLE) * SIZE_MULTIPLE
    W = -(-max(w for _, w in sizes) // SIZE_MULTIPLE) * SIZE_MULTIPLE
    if all(hw == (H, W) for hw in sizes):
        return (images if batch_given else torch.stack(ims)), sizes
    batch = ims[0].new_zeros(len(ims), 3, H, W)
    for k, im in enumerate(ims):
        batch[k, :, :im.shape[-2], :im.shape[-1]] = im
    return batch, sizes


def check_targets(targets: list[dict]) -> None:
    """Refuse training targets the cascade would misread: boxes not [G, 4] or with zero width or height."""
    for i, t in enumerate(targets):
        boxes = t["boxes"]
        if boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"targets[{i}]['boxes'] must be [G, 4] (x0, y0, x1, y1), got {tuple(boxes.shape)}")
        empty = ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).nonzero().flatten()
        if len(empty):
            k = int(empty[0])
            raise ValueError(f"targets[{i}]['boxes'][{k}] = {[round(float(v), 2) for v in boxes[k]]} has zero width or "
                             f"height ({len(empty)} such box(es)); boxes are pixel-edge (a mask whose columns run from "
                             "3 to 7 has x0 = 3, x1 = 8): make them with lecturelib.instances.instances_to_targets or "
                             "lecturelib.proposals.masks_to_boxes (torchvision's masks_to_boxes gives x1 = 7)")


class MaskCascade(nn.Module):
    """MNC: backbone -> RPN -> RoI warping (RoIAlign) -> figure/ground mask -> masked features -> class."""

    def __init__(self, config: CascadeConfig | None = None):
        super().__init__()
        self.config = cfg = config or CascadeConfig()
        self.backbone = Backbone(cfg.width, cfg.feature_stride, cfg.first_stride)
        C = self.backbone.out_channels
        self.anchor_sizes = cfg.anchor_pixels           # pixels, whatever the input size
        A = len(self.anchor_sizes) * len(cfg.anchor_ratios)
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
        pooled = cfg.roi_size // 2
        self.box_fc = roi_fc(C, cfg.head_channels, pooled, cfg.hidden)
        self.region_fc = roi_fc(C, cfg.head_channels, pooled, cfg.hidden)
        self.classifier = nn.Linear(2 * cfg.hidden, cfg.num_classes)
        self._anchor_cache: dict = {}

    # ------------------------------------------------------------------ stage 1
    def anchors(self, feature_size: tuple[int, int], image_size: int | None = None, device="cpu") -> torch.Tensor:
        """The anchors of a feature map, float[h * w * A, 4] (x0, y0, x1, y1 in input pixels), of sides
        ``self.anchor_sizes`` pixels. ``image_size`` is accepted for older calls and not used: the anchors do
        not depend on the input size. The last few sets are cached (at most ``ANCHOR_CACHE``, so images of
        ever new sizes cannot grow the cache without bound)."""
        key = (tuple(feature_size), str(device))
        if key not in self._anchor_cache:
            if len(self._anchor_cache) >= ANCHOR_CACHE:
                self._anchor_cache.pop(next(iter(self._anchor_cache)))     # the oldest entry
            self._anchor_cache[key] = make_anchors(feature_size, self.backbone.stride, list(self.anchor_sizes),
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
        """Decode, clip to each image, drop tiny boxes, NMS; up to ``keep`` boxes per image (constants: no
        gradient). ``image_hw``: one (H, W) for every image, or a list of each image's own (H, W)."""
        sizes = image_hw if isinstance(image_hw, list) else [tuple(image_hw)] * len(obj)
        out = []
        for o, d, (H, W) in zip(obj.detach(), deltas.detach(), sizes):
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
        x, sizes = pad_images(images)                                                 # (N, 3, H', W'), 16 | H', W'
        feats = self.backbone(x)                                                      # (N, C, H'/s, W'/s)
        anchors = self.anchors(tuple(feats.shape[-2:]), device=x.device)
        obj, deltas = self.rpn(feats)
        if self.training:
            if targets is None or len(targets) != len(x):
                raise ValueError("in training mode pass one target dict (boxes, labels, masks) per image")
            check_targets(targets)
            return self._losses(feats, anchors, obj, deltas, targets, sizes)
        rois = self.propose(anchors, obj, deltas, sizes, self.config.post_nms_test)
        return self._detect(feats, rois, sizes)

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
        rois, roi_labels, mask_targets = [], [], []
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
            mask_targets.append(roi_mask_targets(t["masks"].to(cand)[idx[pos]], cand[pos], cfg.mask_size))
        mask_logits, class_logits = self.heads(feats, rois)
        labels = torch.cat(roi_labels)
        cls_loss = F.cross_entropy(class_logits, labels)
        fg = labels > 0
        if fg.any():
            mask_loss = F.binary_cross_entropy_with_logits(mask_logits[fg][:, 0], torch.cat(mask_targets).float())
        else:
            mask_loss = mask_logits.sum() * 0
        return {"rpn_objectness": torch.stack(obj_losses).mean(), "rpn_box": torch.stack(box_losses).mean(),
                "mask": mask_loss, "classifier": cls_loss}

    @torch.no_grad()
    def _detect(self, feats, rois, sizes) -> list[dict]:
        cfg = self.config
        mask_logits, class_logits = self.heads(feats, rois)
        probs = F.softmax(class_logits, 1)
        out, start = [], 0
        for boxes, hw in zip(rois, sizes):
            n = len(boxes)
            p, m = probs[start:start + n], torch.sigmoid(mask_logits[start:start + n])
            start += n
            out.append(postprocess(boxes, p, m, hw, cfg.score_threshold, cfg.mask_nms, cfg.detections))
            if proposals_saturated(out[-1]["scores"], cfg.post_nms_test):
                warn_cap(f"MaskCascade: at least half of the post_nms_test={cfg.post_nms_test} proposals of an image "
                         "became detections scored >= 0.5, so it may hold more objects than the cascade can return; "
                         "raise CascadeConfig.post_nms_test (and pre_nms)")
        return out


def roi_mask_targets(masks: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """The mask head's targets: each ground-truth mask [P, H, W] cut by its RoI box [P, 4] (float pixel-edge
    x0, y0, x1, y1) and resized to size × size (RoIAlign on the mask, ``aligned=True``: mask cell (a, b) is the
    average of the mask around the point (x0 + (b + 0.5) (x1 - x0) / size, y0 + (a + 0.5) (y1 - y0) / size)),
    thresholded at 0.5: bool[P, size, size]. :func:`paste_masks` is its inverse."""
    index = torch.arange(len(boxes), device=boxes.device, dtype=boxes.dtype)[:, None]
    return roi_align(masks[:, None].to(boxes), torch.cat([index, boxes], 1), size, 1.0, 2, aligned=True)[:, 0] >= 0.5


PASTE_CHUNK = 1 << 22     # pasted pixels computed at once (bounds the memory of paste_masks)


def paste_masks(masks: torch.Tensor, boxes: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """Paste box-relative masks back into the image, exactly: the inverse of :func:`roi_mask_targets`.

    Args:
        masks (float[R, 1, m, m] or [R, m, m]): per-box masks (probabilities or logits) on an m × m grid that
            covers the box's pixel-edge extent: cell (a, b) is centred at
            (x0 + (b + 0.5) (x1 - x0) / m, y0 + (a + 0.5) (y1 - y0) / m).
        boxes (float[R, 4]): pixel-edge boxes (x0, y0, x1, y1) in image pixels, x1 > x0, y1 > y0.
        image_hw: (H, W) of the image.
    Returns:
        float[R, 1, H, W]: each mask resampled bilinearly (``grid_sample``, ``align_corners=False``) at the
        centres (j + 0.5, i + 0.5) of the image pixels whose centre lies in [x0, x1) × [y0, y1) (nearest mask
        cell beyond the outermost cell centres), 0 elsewhere.
    Raises:
        ValueError: shapes that do not match, or a box with x1 <= x0 or y1 <= y0.

    torchvision's ``paste_masks_in_image`` reads a box as inclusive pixel indices, pads it by one cell and
    truncates its corners to integers: a perfect mask of the box [10, 20, 30, 52] comes back one row too long
    at the top and the bottom (IoU 0.94 with its object). Here it comes back whole (IoU 1 for a filled box).
    """
    if masks.dim() == 3:
        masks = masks[:, None]
    if masks.dim() != 4 or masks.shape[1] != 1 or boxes.dim() != 2 or boxes.shape[-1] != 4 or \
            len(masks) != len(boxes):
        raise ValueError(f"paste_masks: masks must be [R, 1, m, m] and boxes [R, 4] with the same R, got "
                         f"{tuple(masks.shape)} and {tuple(boxes.shape)}")
    H, W = int(image_hw[0]), int(image_hw[1])
    out = masks.new_zeros(len(boxes), 1, H, W)
    if len(boxes) == 0:
        return out
    b = boxes.to(masks.dtype)
    if bool(((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])).any()):
        raise ValueError("paste_masks: every box needs x1 > x0 and y1 > y0 (pixel-edge boxes are never empty)")
    cx = torch.arange(W, dtype=b.dtype, device=b.device) + 0.5                     # (W,) pixel centres
    cy = torch.arange(H, dtype=b.dtype, device=b.device) + 0.5                     # (H,)
    step = max(1, PASTE_CHUNK // max(H * W, 1))
    for s in range(0, len(b), step):
        bb = b[s:s + step]
        gx = 2 * (cx[None] - bb[:, 0:1]) / (bb[:, 2:3] - bb[:, 0:1]) - 1             # (r, W) in [-1, 1) inside
        gy = 2 * (cy[None] - bb[:, 1:2]) / (bb[:, 3:4] - bb[:, 1:2]) - 1             # (r, H)
        grid = torch.stack([gx[:, None, :].expand(-1, H, -1), gy[:, :, None].expand(-1, -1, W)], -1)
        pasted = F.grid_sample(masks[s:s + step], grid, mode="bilinear", padding_mode="border", align_corners=False)
        inside = ((gy >= -1) & (gy < 1))[:, :, None] & ((gx >= -1) & (gx < 1))[:, None, :]   # (r, H, W)
        out[s:s + step] = pasted * inside[:, None].to(pasted.dtype)
    return out


def postprocess(boxes, probs, masks, image_hw, score_threshold: float, nms_threshold: float,
                detections: int) -> dict:
    """Masks [R, 1, m, m] pasted into their pixel-edge boxes [R, 4] in the image (:func:`paste_masks`), then
    per-class scoring and region NMS (:func:`lecturelib.sds.select_detections`). Returns ``masks``
    float[D, 1, H, W] (probabilities)."""
    H, W = image_hw
    full = paste_masks(masks, boxes, (H, W))
    return select_detections(boxes, probs, full, full[:, 0] >= 0.5, score_threshold, nms_threshold, detections)


def cascade_stages(model: MaskCascade, image: torch.Tensor, top: int = 6) -> OrderedDict:
    """What each stage produces for one image [3, H, W] (for pictures): anchors, the RPN's top proposals,
    their warped features, their figure/ground masks and class probabilities."""
    model.eval()
    with torch.no_grad():
        x, sizes = pad_images([image])
        feats = model.backbone(x)
        anchors = model.anchors(tuple(feats.shape[-2:]), device=x.device)
        obj, deltas = model.rpn(feats)
        rois = model.propose(anchors, obj, deltas, sizes, top)
        warped = warp_boxes(feats, rois, model.config.roi_size, model.backbone.stride)
        mask_logits, class_logits = model.heads(feats, rois)
    return OrderedDict(anchors=anchors, objectness=torch.sigmoid(obj[0]), proposals=rois[0], warped=warped,
                       masks=torch.sigmoid(mask_logits[:, 0]), probs=F.softmax(class_logits, 1))
