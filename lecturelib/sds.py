"""SDS: Simultaneous Detection and Segmentation (Hariharan, Arbeláez, Girshick & Malik, ECCV 2014).

R-CNN for regions:

1. bottom-up segment proposals: MCG in the paper; here ``lecturelib.proposals.selective_search``,
   a stand-in that learns nothing;
2. for every proposal two crops, warped to a fixed size: its **box** (everything inside the
   bounding box) and its **region** (the same crop with the pixels outside the proposal's mask
   replaced by the mean image, so that after mean subtraction the background is exactly zero);
3. a two-pathway CNN (one per crop, features concatenated) scores every proposal for every class
   (class 0 = "not an object");
4. per class, region non-maximum suppression (mask IoU) keeps the best of overlapping proposals.

Every proposal goes through the CNN on its own: the cost per image grows with the number of
proposals. That is what the cascade of ``lecturelib.cascade`` removes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import TensorDataset
from torchvision.ops import roi_align
from tqdm.auto import tqdm

from .caps import dropped_confident, warn_cap
from .mask_ap import mask_iou
from .proposals import ProposalConfig, masks_to_boxes, selective_search
from .scenes import NUM_CLASSES
from .tasks import RegionTask


def mask_with_mean(crops: torch.Tensor, masks: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Replace the background of each crop by the mean image.

    Args:
        crops (float[N, 3, h, w]): warped box crops.
        masks (float or bool[N, 1, h, w] or [N, h, w]): 1 on the region, 0 on the background (soft values blend).
        mean (float[3] or [3, h, w]): the mean image (a colour per channel, or a full image).
    Returns:
        float[N, 3, h, w]: ``crops`` where the mask is 1, ``mean`` where it is 0.
    """
    if crops.dim() != 4 or crops.shape[1] != 3:
        raise ValueError(f"crops must be [N, 3, h, w], got shape {tuple(crops.shape)}")
    m = masks.to(crops.dtype)
    if m.dim() == 3:
        m = m[:, None]
    if m.shape != (crops.shape[0], 1, *crops.shape[2:]):
        raise ValueError(f"masks must be [N, 1, h, w] or [N, h, w] matching crops {tuple(crops.shape)}, "
                         f"got {tuple(masks.shape)}")
    mean = mean.to(crops)
    if mean.dim() == 1:
        mean = mean[:, None, None]                                      # (3, 1, 1)
    return crops * m + mean[None] * (1 - m)


def warp_regions(image: torch.Tensor, boxes: torch.Tensor, masks: torch.Tensor, size: int,
                 context: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop each proposal's box (enlarged by ``context`` on each side) and warp it to ``size × size``.

    image float[3, H, W], boxes float[P, 4] (pixel-edge x0, y0, x1, y1, as
    :func:`lecturelib.proposals.masks_to_boxes` makes them; read by RoIAlign with ``aligned=True``, the same box
    convention as the cascade's), masks bool[P, H, W] ->
    box crops float[P, 3, size, size], mask crops float[P, 1, size, size] (in [0, 1]).
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be [3, H, W], got {tuple(image.shape)}")
    P = len(boxes)
    if P == 0:
        return image.new_zeros(0, 3, size, size), image.new_zeros(0, 1, size, size)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    pad = torch.stack([-w, -h, w, h], 1) * context
    b = boxes.to(image) + pad.to(image)
    crops = roi_align(image[None], [b], size, 1.0, 2, aligned=True)                  # (P, 3, s, s)
    idx = torch.arange(P, dtype=image.dtype, device=image.device)[:, None]
    mcrops = roi_align(masks.to(image)[:, None], torch.cat([idx, b], 1), size, 1.0, 2, aligned=True)
    return crops, mcrops


def mask_nms(masks: torch.Tensor, scores: torch.Tensor, threshold: float,
             iou: torch.Tensor | None = None) -> torch.Tensor:
    """Region non-maximum suppression: keep a mask unless a higher-scoring kept mask overlaps it with
    mask IoU > ``threshold``. masks bool[D, H, W], scores float[D] -> kept indices (int64), best first.
    ``iou`` (float[D, D]): the masks' pairwise IoU, if already computed (then ``masks`` may be None)."""
    order = scores.argsort(descending=True)
    if len(order) == 0:
        return order
    iou = mask_iou(masks, masks) if iou is None else iou
    overlap = (iou[order][:, order] > threshold).numpy()                # (D, D), best first
    keep = []
    suppressed = np.zeros(len(order), bool)
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlap[i]
    return order[torch.tensor(keep, dtype=torch.long)]


def select_detections(boxes: torch.Tensor, probs: torch.Tensor, masks: torch.Tensor, binary: torch.Tensor,
                      score_threshold: float, nms_threshold: float, detections: int) -> dict:
    """Per-class scoring and region NMS, shared by SDS and the cascade.

    boxes [R, 4], probs [R, K] (softmax, column 0 = background), masks float[R, 1, H, W] (probabilities or 0/1),
    binary bool[R, H, W]. A region may be kept for several classes (R-CNN scores every class).
    Returns torchvision-style ``boxes``, ``labels``, ``scores``, ``masks`` [D, 1, H, W], the ``detections`` best
    (a :class:`lecturelib.caps.CapWarning` says when the cap drops one scored >= 0.5).
    """
    keep_r, keep_c, keep_s = [], [], []
    nonempty = binary.flatten(1).any(1)
    live = torch.nonzero(nonempty & (probs[:, 1:] > score_threshold).any(1)).flatten()
    iou = torch.zeros(len(binary), len(binary), dtype=torch.float64)
    if len(live):                                                        # pairwise IoU once, shared by all classes
        iou[live[:, None].cpu(), live[None].cpu()] = mask_iou(binary[live].cpu(), binary[live].cpu())
    for c in range(1, probs.shape[1]):
        s = probs[:, c]
        cand = torch.nonzero((s > score_threshold) & nonempty).flatten()
        if len(cand) == 0:
            continue
        ci = cand.cpu()
        kept = cand[mask_nms(None, s[ci].cpu(), nms_threshold, iou[ci][:, ci]).to(cand.device)]
        keep_r.append(kept)
        keep_c.append(torch.full_like(kept, c))
        keep_s.append(s[kept])
    H, W = binary.shape[-2:]
    if not keep_r:
        return {"boxes": boxes.new_zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long, device=boxes.device),
                "scores": probs.new_zeros(0), "masks": masks.new_zeros(0, 1, H, W)}
    r, c, s = torch.cat(keep_r), torch.cat(keep_c), torch.cat(keep_s)
    if dropped_confident(s, detections):
        warn_cap(f"at most detections={detections} detections per image: an image lost detections scored >= 0.5; "
                 "raise the model config's detections")
    top = s.argsort(descending=True)[:detections]
    r, c, s = r[top], c[top], s[top]
    return {"boxes": boxes[r], "labels": c, "scores": s, "masks": masks[r]}


# ----------------------------------------------------------------------------- the network
def _pathway(width: int) -> nn.Sequential:
    w = width

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True))

    return nn.Sequential(block(3, w), nn.MaxPool2d(2), block(w, 2 * w), nn.MaxPool2d(2), block(2 * w, 4 * w),
                         nn.MaxPool2d(2), block(4 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten())


class SDSNet(nn.Module):
    """Two pathways with their own weights, box crop and region crop, features concatenated, then classes.

    box, region (Tensor[P, 3, s, s], mean-subtracted) -> logits Tensor[P, num_classes].
    """

    def __init__(self, num_classes: int, width: int = 16, hidden: int = 128):
        super().__init__()
        self.box_path = _pathway(width)
        self.region_path = _pathway(width)
        self.head = nn.Sequential(nn.Linear(8 * width, hidden), nn.ReLU(inplace=True), nn.Dropout(0.2),
                                  nn.Linear(hidden, num_classes))

    def forward(self, box: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.box_path(box), self.region_path(region)], 1))


@dataclass(frozen=True)
class SDSConfig:
    """The recipe of SDS (lesson 08): sizes, proposal sampling and training.

    crop: side of the warped crops fed to the CNN (R-CNN warps to 227 px from ~500 px images).
    context: margin around each box, as a fraction of its side. pos_iou: mask IoU that makes a proposal a
    positive. per_scene: positives and negatives sampled per training scene (each). n_scenes: training
    scenes whose proposals are used (selective search is slow). epochs, batch_size, lr: training of the
    two-pathway CNN on the crops.
    """

    num_classes: int = NUM_CLASSES
    width: int = 16
    crop: int = 32
    context: float = 0.1
    pos_iou: float = 0.5
    per_scene: int = 24
    score_threshold: float = 0.05
    nms: float = 0.3
    detections: int = 100
    n_scenes: int = 128
    epochs: int = 3
    batch_size: int = 128
    lr: float = 3e-3
    proposals: ProposalConfig = field(default_factory=ProposalConfig)

    @classmethod
    def from_profile(cls, profile, **changes) -> "SDSConfig":
        """The lesson's recipe for ``profile``: every train scene gives proposals (8 positives and 8 negatives
        each, beside its ground truth), trained for the profile's epochs: the same scenes and epochs as the
        cascade and Mask R-CNN (:meth:`lecturelib.cascade.CascadeConfig.from_profile`), so each model sees every
        training image equally often."""
        base = dict(width=profile.width, per_scene=8, n_scenes=profile.n_train, epochs=profile.epochs)
        return cls(**{**base, **changes})


class SDS(nn.Module):
    """The SDS pipeline: proposals -> box and region crops -> two-pathway CNN -> per-class scores -> region NMS.

    ``sds(image)`` with image float[3, H, W] in [0, 1] returns a torchvision-style prediction dict.
    """

    def __init__(self, config: SDSConfig | None = None, mean: torch.Tensor | None = None):
        super().__init__()
        self.config = config = config or SDSConfig()
        self.net = SDSNet(config.num_classes, config.width)
        self.register_buffer("mean", torch.full((3,), 0.5) if mean is None else torch.as_tensor(mean).float())

    def inputs(self, box_crops: torch.Tensor, mask_crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two network inputs, mean-subtracted: box crop, and region crop (background = mean, so 0)."""
        region = mask_with_mean(box_crops, (mask_crops >= 0.5), self.mean)
        m = self.mean[None, :, None, None]
        return box_crops - m, region - m

    def score(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Class probabilities float[P, num_classes] of proposals ``masks`` bool[P, H, W] of ``image``."""
        boxes = masks_to_boxes(masks).to(image.device)
        crops, mcrops = warp_regions(image, boxes, masks.to(image.device), self.config.crop, self.config.context)
        box_in, region_in = self.inputs(crops, mcrops)
        return F.softmax(self.net(box_in, region_in), 1)

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> dict:
        self.eval()
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"SDS takes one image [3, H, W] at a time, got {tuple(image.shape)}")
        return self.detect(image, selective_search(image, self.config.proposals))   # (P, H, W) on the CPU

    @torch.no_grad()
    def detect(self, image: torch.Tensor, masks: torch.Tensor) -> dict:
        """The detections of ``image`` float[3, H, W] from given segment proposals ``masks`` bool[P, H, W]
        (what :meth:`forward` does after selective search): scores, region NMS, torchvision-style dict."""
        self.eval()
        probs = self.score(image, masks)
        boxes = masks_to_boxes(masks).to(image.device)
        binary = masks.to(image.device)
        return select_detections(boxes, probs, binary[:, None].float(), binary, self.config.score_threshold,
                                 self.config.nms, self.config.detections)


def label_proposals(proposals: torch.Tensor, gt_masks: torch.Tensor, gt_labels: torch.Tensor,
                    pos_iou: float = 0.5) -> torch.Tensor:
    """int64[P]: the class of the best-overlapping ground truth if its mask IoU >= ``pos_iou``, else 0."""
    if len(gt_masks) == 0 or len(proposals) == 0:
        return torch.zeros(len(proposals), dtype=torch.long)
    best, idx = mask_iou(proposals, gt_masks).max(1)
    return torch.where(best >= pos_iou, gt_labels[idx], torch.zeros_like(gt_labels[idx]))


def build_training_crops(dataset, indices, config: SDSConfig, seed: int = 0,
                         progress: bool = True) -> TensorDataset:
    """Proposals of the given training scenes, labelled by mask IoU, sampled and warped.

    Per scene: the ground-truth masks (as positives), up to ``per_scene`` proposals labelled positive and
    as many labelled background. Returns a TensorDataset of box crops float[M, 3, s, s], mask crops
    float[M, 1, s, s] and labels int64[M].
    """
    g = torch.Generator().manual_seed(seed)
    crops, mcrops, labels = [], [], []
    for i in tqdm(list(indices), desc="SDS training proposals", disable=not progress, leave=False):
        image, target = dataset[i]
        gt_masks, gt_labels = target["masks"].bool(), target["labels"]
        props = selective_search(image, config.proposals)
        lab = label_proposals(props, gt_masks, gt_labels, config.pos_iou)
        pos, neg = torch.nonzero(lab > 0).flatten(), torch.nonzero(lab == 0).flatten()
        pos = pos[torch.randperm(len(pos), generator=g)[: config.per_scene]]
        neg = neg[torch.randperm(len(neg), generator=g)[: config.per_scene]]
        sel = torch.cat([pos, neg])
        masks = torch.cat([gt_masks, props[sel]])
        lab = torch.cat([gt_labels, lab[sel]])
        c, m = warp_regions(image, masks_to_boxes(masks), masks, config.crop, config.context)
        crops.append(c)
        mcrops.append(m)
        labels.append(lab)
    return TensorDataset(torch.cat(crops), torch.cat(mcrops), torch.cat(labels))


def region_task(config: SDSConfig, train, test=None, seed: int = 0, progress: bool = False) -> RegionTask:
    """SDS's training task: the proposals of the first ``config.n_scenes`` train scenes, labelled, sampled and
    warped (:func:`build_training_crops`), with the mean colour of those scenes as the mean image.

    train / test: datasets of (image, target) pairs in the detection format (train None: a task that only
    evaluates, keeping the model's mean image). Returns a :class:`lecturelib.tasks.RegionTask`; train the
    model with :func:`lecturelib.training.fit`.
    """
    if train is None:
        return RegionTask(config, None, test, mean=None)
    indices = range(min(config.n_scenes, len(train)))
    crops = build_training_crops(train, indices, config, seed=seed, progress=progress)
    return RegionTask(config, crops, test, mean=dataset_mean(train, indices))


def dataset_mean(dataset, indices) -> torch.Tensor:
    """float32[3]: the mean colour of the given scenes (the "mean image", averaged over positions)."""
    total = torch.zeros(3, dtype=torch.float64)
    n = 0
    for i in indices:
        image = dataset[i][0]
        total += image.double().mean((1, 2))
        n += 1
    if n == 0:
        raise ValueError("dataset_mean: no scenes given; pass a non-empty list of indices")
    return (total / n).float()
