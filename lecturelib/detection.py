"""What lesson 07's four detectors share: one recipe, selective-search boxes, box coding and the final NMS.

The detectors (:mod:`lecturelib.rcnn`, :mod:`lecturelib.fast_rcnn`, :mod:`lecturelib.faster_rcnn`,
:mod:`lecturelib.yolo`) are built on the same small backbone (:class:`lecturelib.cascade.Backbone`), trained
on the same course scenes by the same loop with the same budget, and all answer
``model.predict(images) -> [{"boxes", "scores", "labels"}, ...]`` (torchvision's detection format, pixel-edge
boxes (x0, y0, x1, y1) in each image's own pixels) so that they can be timed and scored alike
(:func:`lecturelib.timing.time_per_image`, :class:`lecturelib.box_ap.BoxAP`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torchvision.ops import batched_nms, clip_boxes_to_image, remove_small_boxes

from .cascade import ANCHOR_FRACTIONS, decode_boxes, encode_boxes
from .proposals import ProposalConfig, masks_to_boxes, selective_search
from .scenes import NUM_CLASSES

BOX_SCALE = (10.0, 10.0, 5.0, 5.0)   # box offsets are regressed times these (Fast R-CNN's target normalisation)


@dataclass(frozen=True)
class DetectionConfig:
    """The recipe of lesson 07's detectors: one for all four, so that they differ only in the idea compared.

    width: the backbone's base channels (:class:`lecturelib.cascade.Backbone`). image_size: training scene side (px).
    Fast / Faster R-CNN head: ``roi_size`` × ``roi_size`` RoI pooling, two fully connected layers of ``hidden``,
    then class logits and class-specific box offsets; per image ``roi_batch`` RoIs are sampled, at most
    ``roi_pos_fraction`` of them positives (IoU >= ``roi_pos_iou`` with a ground-truth box), the rest
    background with IoU in [``roi_neg_iou``, ``roi_pos_iou``) (Fast R-CNN's sampling; below ``roi_neg_iou`` only
    when there are too few). R-CNN: each proposal, enlarged by ``context`` of its side on each side, is warped
    to ``crop`` × ``crop`` pixels. RPN (Faster R-CNN): the cascade's anchors (``anchor_sizes`` px, None:
    ANCHOR_FRACTIONS × image_size; ``anchor_ratios`` = h / w), positives IoU >= ``rpn_pos_iou``, negatives below
    ``rpn_neg_iou``, ``rpn_batch`` anchors per image, ``pre_nms`` best anchors, NMS at ``rpn_nms``,
    ``post_nms_train`` / ``post_nms_test`` proposals kept. YOLO: cells of ``grid_cell`` pixels (an S × S grid, S =
    image side / grid_cell), ``boxes_per_cell`` boxes per cell, loss weights ``lambda_coord`` and
    ``lambda_noobj``. Output: detections scored above ``score_threshold``, class-wise NMS at ``nms``, at most
    ``detections`` per image. proposals: the selective-search settings (R-CNN, Fast R-CNN).
    epochs, batch_size (scenes per step), lr, grad_clip: training (AdamW, one-cycle).
    """

    num_classes: int = NUM_CLASSES
    width: int = 16
    image_size: int = 64
    roi_size: int = 7
    hidden: int = 128
    roi_batch: int = 32
    roi_pos_fraction: float = 0.25
    roi_pos_iou: float = 0.5
    roi_neg_iou: float = 0.1
    crop: int = 32
    context: float = 0.1
    anchor_sizes: tuple | None = None
    anchor_ratios: tuple = (0.5, 1.0, 2.0)
    rpn_pos_iou: float = 0.6
    rpn_neg_iou: float = 0.3
    rpn_batch: int = 64
    pre_nms: int = 300
    rpn_nms: float = 0.7
    post_nms_train: int = 48
    post_nms_test: int = 32
    grid_cell: int = 8
    boxes_per_cell: int = 2
    lambda_coord: float = 5.0
    lambda_noobj: float = 0.5
    score_threshold: float = 0.05
    nms: float = 0.5
    detections: int = 100
    epochs: int = 12
    batch_size: int = 16
    lr: float = 3e-3
    grad_clip: float = 10.0
    proposals: ProposalConfig = field(default_factory=ProposalConfig)

    @classmethod
    def from_profile(cls, profile, **changes) -> "DetectionConfig":
        """The lesson's recipe for ``profile``: the profile's width (hidden layers 8 × width), a quarter of its
        batch for twice its epochs."""
        base = dict(width=profile.width, hidden=8 * profile.width, image_size=profile.image_size,
                    epochs=2 * profile.epochs, batch_size=max(2, profile.batch_size // 4))
        return cls(**{**base, **changes})

    def __post_init__(self):
        if self.num_classes < 2:
            raise ValueError(f"DetectionConfig.num_classes must be >= 2 (background counts), got {self.num_classes}")
        if self.crop % 16 or self.crop < 16:
            raise ValueError(f"DetectionConfig.crop must be a multiple of 16 (the backbone's stride), got {self.crop}")
        if self.grid_cell % 4 or self.grid_cell < 4:
            raise ValueError(f"DetectionConfig.grid_cell must be a multiple of 4 pixels (the backbone's stride), got "
                             f"{self.grid_cell}")
        if not 0 < self.roi_pos_fraction <= 1 or self.roi_batch < 1 or self.boxes_per_cell < 1:
            raise ValueError("DetectionConfig: roi_pos_fraction must be in (0, 1], roi_batch and boxes_per_cell >= 1")

    @property
    def anchor_pixels(self) -> tuple[float, ...]:
        """The RPN's anchor sides in pixels: ``anchor_sizes``, or ANCHOR_FRACTIONS × image_size when None."""
        if self.anchor_sizes is None:
            return tuple(f * self.image_size for f in ANCHOR_FRACTIONS)
        return tuple(float(s) for s in self.anchor_sizes)


# ----------------------------------------------------------------------------- proposals
def proposal_boxes(image: torch.Tensor, config: ProposalConfig | None = None) -> torch.Tensor:
    """Selective search's proposals of one image [3, H, W] as boxes: float32[P, 4] pixel-edge, duplicates removed
    (several segments can share a box), in the order selective search made them."""
    boxes = masks_to_boxes(selective_search(image, config or ProposalConfig()))
    if len(boxes) == 0:
        return boxes
    _, first = _unique_rows(boxes)
    return boxes[first]


def _unique_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows of ``x`` and the index of each one's first occurrence (in order of appearance)."""
    uniq, inverse = torch.unique(x, dim=0, return_inverse=True)
    first = torch.full((len(uniq),), len(x), dtype=torch.long).scatter_reduce(
        0, inverse, torch.arange(len(x)), reduce="amin")
    return uniq, first.sort().values


# ----------------------------------------------------------------------------- box coding and sampling
def encode(rois: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Regression targets float[R, 4] taking ``rois`` [R, 4] to ``boxes`` [R, 4]: the cascade's
    (dx, dy, dw, dh) (:func:`lecturelib.cascade.encode_boxes`) times :data:`BOX_SCALE`."""
    return encode_boxes(rois, boxes) * rois.new_tensor(BOX_SCALE)


def decode(rois: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode`: boxes float[R, 4] from ``rois`` [R, 4] and offsets [R, 4]."""
    return decode_boxes(rois, deltas / rois.new_tensor(BOX_SCALE))


def sample_rois(rois: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor, config: DetectionConfig,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fast R-CNN's mini-batch of RoIs for one image.

    Candidates are ``rois`` [P, 4] plus the ground-truth boxes; each gets the class of the ground truth it overlaps
    most if IoU >= ``roi_pos_iou`` (a positive), else 0 (background, preferably with IoU >= ``roi_neg_iou``: the
    hard negatives). Returns the sampled boxes float[R, 4], their labels int64[R] and regression targets
    float[R, 4] (zeros for background), positives first, R <= ``roi_batch``.
    """
    from torchvision.ops import box_iou

    cand = torch.cat([rois, gt_boxes.to(rois)])
    if len(gt_boxes) == 0:
        pick = torch.randperm(len(cand), generator=generator)[: config.roi_batch].to(cand.device)
        return cand[pick], torch.zeros(len(pick), dtype=torch.long, device=cand.device), cand.new_zeros(len(pick), 4)
    best, idx = box_iou(cand, gt_boxes.to(cand)).max(1)
    pos = torch.nonzero(best >= config.roi_pos_iou).flatten()
    hard = torch.nonzero((best < config.roi_pos_iou) & (best >= config.roi_neg_iou)).flatten()
    easy = torch.nonzero(best < config.roi_neg_iou).flatten()

    def take(ix, n):
        return ix[torch.randperm(len(ix), generator=generator)[:n].to(ix.device)]

    pos = take(pos, int(config.roi_batch * config.roi_pos_fraction))
    hard = take(hard, config.roi_batch - len(pos))
    easy = take(easy, config.roi_batch - len(pos) - len(hard))
    sel = torch.cat([pos, hard, easy])
    labels = gt_labels.to(cand.device)[idx[sel]].clone()
    labels[len(pos):] = 0
    targets = cand.new_zeros(len(sel), 4)
    if len(pos):
        targets[: len(pos)] = encode(cand[pos], gt_boxes.to(cand)[idx[pos]])
    return cand[sel], labels, targets


# ----------------------------------------------------------------------------- output
def select_boxes(boxes: torch.Tensor, scores: torch.Tensor, image_hw: tuple[int, int],
                 config: DetectionConfig) -> dict:
    """Per-class detections from per-class boxes and scores, the way torchvision's detectors finish.

    boxes float[R, K, 4] (one box per class; [R, 4] when shared by all classes), scores float[R, K] (column 0 =
    background, never returned). Boxes are clipped to the image (H, W); those scored above ``score_threshold``
    and at least 1 px wide and high survive; class-wise NMS at ``nms`` (``torchvision.ops.batched_nms``); the
    ``detections`` best. Returns ``boxes`` float32[D, 4], ``scores`` float32[D], ``labels`` int64[D].
    """
    R, K = scores.shape
    if boxes.dim() == 2:
        boxes = boxes[:, None].expand(R, K, 4)
    boxes = clip_boxes_to_image(boxes[:, 1:].reshape(-1, 4), image_hw)
    labels = torch.arange(1, K, device=scores.device).repeat(R)
    scores = scores[:, 1:].reshape(-1)
    keep = torch.nonzero(scores > config.score_threshold).flatten()
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = remove_small_boxes(boxes, 1.0)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes, scores, labels, config.nms)[: config.detections]
    return {"boxes": boxes[keep].float(), "scores": scores[keep].float(), "labels": labels[keep]}


def check_detection_targets(targets: list[dict], n_images: int) -> None:
    """Refuse training targets a detector would misread: one dict per image with ``boxes`` [G, 4], x1 > x0 and
    y1 > y0, and ``labels`` [G]."""
    if targets is None or len(targets) != n_images:
        raise ValueError(f"in training mode pass one target dict (boxes, labels) per image: {n_images} images, "
                         f"{None if targets is None else len(targets)} targets")
    for i, t in enumerate(targets):
        boxes, labels = t["boxes"], t["labels"]
        if boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"targets[{i}]['boxes'] must be [G, 4] (x0, y0, x1, y1), got {tuple(boxes.shape)}")
        if labels.dim() != 1 or len(labels) != len(boxes):
            raise ValueError(f"targets[{i}]['labels'] must be [G] with one label per box, got {tuple(labels.shape)} "
                             f"for {len(boxes)} boxes")
        bad = ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).nonzero().flatten()
        if len(bad):
            k = int(bad[0])
            raise ValueError(f"targets[{i}]['boxes'][{k}] = {[round(float(v), 2) for v in boxes[k]]} has x1 <= x0 or "
                             "y1 <= y0; boxes are pixel-edge (x0, y0, x1, y1) (a mask whose columns run 3..7 has "
                             "x0 = 3, x1 = 8): make them with lecturelib.instances.instances_to_targets")


def image_list(images) -> list[torch.Tensor]:
    """A list of images [3, H_i, W_i] from a list or a batch [N, 3, H, W]; ValueError for anything else."""
    ims = list(images) if isinstance(images, (list, tuple)) or (isinstance(images, torch.Tensor)
                                                               and images.dim() == 4) else []
    if not ims or any(not isinstance(im, torch.Tensor) or im.dim() != 3 or im.shape[0] != 3 for im in ims):
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a list of [3, H, W] tensors or a batch [N, 3, H, W], got {got}; "
                         "use image[None] for one image")
    return ims
