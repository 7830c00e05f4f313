"""Bottom-up segment proposals: hierarchical grouping of superpixels, selective-search style.

SDS (Hariharan et al., ECCV 2014) scores *region* proposals made bottom-up, before any class is
considered: MCG (Arbeláez et al., CVPR 2014), which groups the regions of learned contours and ranks
the candidates with a learned model. The course's proposals are a stand-in that learns nothing,
made as selective search does (Uijlings et al., IJCV 2013):

1. over-segment the image into superpixels (Felzenszwalb & Huttenlocher, IJCV 2004);
2. repeatedly merge the two most similar *neighbouring* regions, with similarity
   = colour-histogram intersection + small-regions-first + fill (how well the two fill
   their joint bounding box);
3. every region that ever exists (the superpixels and every merge) is a proposal;
4. diversify: repeat with several superpixel scales and colour spaces, drop duplicates.

Proposal recall at IoU t: the share of ground-truth instances that some proposal covers
with mask IoU >= t. It caps what any scorer can reach.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from skimage.color import rgb2hsv

from .mask_ap import mask_iou
from .superpixels import felzenszwalb_pixels
from .viz import image_uint8

SUPERPIXEL_SHARE = 0.003   # default smallest superpixel: this share of the image area ...
PROPOSAL_SHARE = 0.004     # default smallest proposal: this share of the image area ...
REFERENCE_SIDE = 128       # ... of at most a 128 x 128 image (the largest course scenes): 49 and 66 pixels


@dataclass(frozen=True)
class ProposalConfig:
    """Diversification strategies and sizes (in pixels).

    scales: Felzenszwalb ``scale`` values (larger = bigger superpixels), one grouping per scale and colour space.
    sigma: Gaussian smoothing before the over-segmentation.
    min_size: smallest superpixel in pixels (Felzenszwalb's ``min_size``). None: 0.3 % of the image area,
        but at most its value on a 128 x 128 image (49 px): 12 px on the 64-px course scenes, 49 px on
        128-px ones and on anything larger, so small objects on large images keep their own superpixels.
    color_spaces: 'rgb' and/or 'hsv' (colour histograms are taken in this space).
    bins: histogram bins per channel.
    min_area: proposals of fewer pixels are dropped. None: 0.4 % of the image area, at most 65.5 px (its
        value at 128 x 128): proposals of >= 17 px on 64-px scenes, >= 66 px on 128-px and larger images.
    """

    scales: tuple = (40.0, 120.0)
    sigma: float = 0.5
    min_size: int | None = None
    color_spaces: tuple = ("rgb", "hsv")
    bins: int = 16
    min_area: float | None = None

    def __post_init__(self):
        for name in ("min_size", "min_area"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and v >= 1):
                raise ValueError(f"ProposalConfig.{name} is in pixels (>= 1) or None (a share of the image area, "
                                 f"see the docstring), got {v!r}")
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"ProposalConfig.scales must be positive numbers, got {self.scales!r}")
        bad = set(self.color_spaces) - {"rgb", "hsv"}
        if bad or not self.color_spaces:
            raise ValueError(f"ProposalConfig.color_spaces must be a non-empty subset of ('rgb', 'hsv'), got "
                             f"{self.color_spaces!r}")
        if self.bins < 2:
            raise ValueError(f"ProposalConfig.bins must be >= 2, got {self.bins}")


def _image_array(image) -> np.ndarray:
    """uint8[H, W, 3] or float[3, H, W] tensor in [0, 1] -> float64[H, W, 3] in [0, 1] (via :func:`image_uint8`)."""
    return image_uint8(image).astype(np.float64) / 255.0


def _reference_hw(H: int, W: int) -> tuple[int, int]:
    """The image size the default sizes are shares of: the image itself, or 128 x 128 for larger images."""
    return (H, W) if H * W <= REFERENCE_SIDE ** 2 else (REFERENCE_SIDE, REFERENCE_SIDE)


def default_min_size(H: int, W: int) -> int:
    """ProposalConfig's default smallest superpixel (pixels) for an H x W image (see its docstring)."""
    h, w = _reference_hw(H, W)
    return max(1, int(round(SUPERPIXEL_SHARE * 64 ** 2 * (h * w / 64 ** 2))))


def default_min_area(H: int, W: int) -> float:
    """ProposalConfig's default smallest proposal (pixels) for an H x W image (see its docstring)."""
    h, w = _reference_hw(H, W)
    return PROPOSAL_SHARE * h * w


def felzenszwalb_regions(image, scale: float, sigma: float = 0.5, min_size: int | None = None) -> np.ndarray:
    """Selective search's starting regions: Felzenszwalb superpixels of at least ``min_size`` pixels (None:
    :func:`default_min_size`). int64[H, W], ids 0..R-1."""
    H, W = image_uint8(image).shape[:2]
    return felzenszwalb_pixels(image, scale, sigma, default_min_size(H, W) if min_size is None else min_size)


def neighbours(labels: np.ndarray) -> set[tuple[int, int]]:
    """Pairs (i, j), i < j, of regions that touch horizontally or vertically in ``labels`` [H, W]."""
    pairs = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        diff = a != b
        lo, hi = np.minimum(a[diff], b[diff]), np.maximum(a[diff], b[diff])
        pairs.update(zip(lo.tolist(), hi.tolist()))
    return pairs


def colour_histograms(features: np.ndarray, labels: np.ndarray, n_regions: int, bins: int) -> np.ndarray:
    """float64[R, 3 * bins]: per-region histograms of each channel of ``features`` [H, W, 3] in [0, 1],
    L1-normalised."""
    q = np.clip((features * bins).astype(np.int64), 0, bins - 1)            # (H, W, 3)
    hists = []
    for ch in range(3):
        h = np.bincount(labels.ravel() * bins + q[..., ch].ravel(), minlength=n_regions * bins)
        hists.append(h.reshape(n_regions, bins))
    h = np.concatenate(hists, axis=1).astype(np.float64)
    return h / np.maximum(h.sum(1, keepdims=True), 1)


def hierarchical_grouping(labels: np.ndarray, hist: np.ndarray) -> list[list[int]]:
    """Greedy grouping of superpixels; returns every region as a list of superpixel ids.

    Args:
        labels (int[H, W]): superpixel label map, ids 0..R-1.
        hist (float[R, K]): L1-normalised colour histogram of each superpixel.
    Returns:
        the R superpixels, then one region per merge (R - 1 of them for a connected image),
        in merge order (most similar pair first).
    """
    H, W = labels.shape
    n = int(labels.max()) + 1
    area_im = float(H * W)
    ys, xs = np.mgrid[0:H, 0:W]
    size = np.bincount(labels.ravel(), minlength=n).astype(np.float64)
    box = np.stack([np.full(n, W), np.full(n, H), np.zeros(n), np.zeros(n)], 1).astype(np.float64)
    np.minimum.at(box[:, 0], labels.ravel(), xs.ravel())
    np.minimum.at(box[:, 1], labels.ravel(), ys.ravel())
    np.maximum.at(box[:, 2], labels.ravel(), xs.ravel() + 1)
    np.maximum.at(box[:, 3], labels.ravel(), ys.ravel() + 1)
    regions = {i: {"size": size[i], "hist": hist[i], "box": box[i], "members": [i]} for i in range(n)}
    out = [[i] for i in range(n)]

    def similarity(a: dict, b: dict) -> float:
        colour = np.minimum(a["hist"], b["hist"]).sum() / 3.0                  # in [0, 1]
        small = 1.0 - (a["size"] + b["size"]) / area_im
        x0, y0 = min(a["box"][0], b["box"][0]), min(a["box"][1], b["box"][1])
        x1, y1 = max(a["box"][2], b["box"][2]), max(a["box"][3], b["box"][3])
        fill = 1.0 - ((x1 - x0) * (y1 - y0) - a["size"] - b["size"]) / area_im
        return colour + small + fill

    adj = {i: set() for i in range(n)}
    for i, j in neighbours(labels):
        adj[i].add(j)
        adj[j].add(i)
    sims = {(i, j): similarity(regions[i], regions[j]) for i in adj for j in adj[i] if i < j}
    next_id = n
    while sims:
        (i, j) = max(sims, key=sims.get)
        a, b = regions.pop(i), regions.pop(j)
        s = a["size"] + b["size"]
        merged = {"size": s, "hist": (a["size"] * a["hist"] + b["size"] * b["hist"]) / s,
                  "box": np.concatenate([np.minimum(a["box"][:2], b["box"][:2]),
                                         np.maximum(a["box"][2:], b["box"][2:])]),
                  "members": a["members"] + b["members"]}
        k = next_id
        next_id += 1
        regions[k] = merged
        out.append(merged["members"])
        near = (adj.pop(i) | adj.pop(j)) - {i, j}
        adj[k] = near
        for m in near:
            adj[m] -= {i, j}
            adj[m].add(k)
        sims = {p: v for p, v in sims.items() if i not in p and j not in p}
        for m in near:
            sims[(m, k)] = similarity(regions[m], merged)
    return out


def selective_search(image, config: ProposalConfig = ProposalConfig()) -> torch.Tensor:
    """Segment proposals of one image: bool[P, H, W], duplicates and tiny regions removed.

    ``image``: uint8[H, W, 3] or float tensor [3, H, W] in [0, 1].
    """
    img = _image_array(image)
    H, W = img.shape[:2]
    spaces = {"rgb": img, "hsv": rgb2hsv(img) if "hsv" in config.color_spaces else None}
    seen, masks = set(), []
    min_area = default_min_area(H, W) if config.min_area is None else config.min_area
    for scale in config.scales:
        labels = felzenszwalb_regions(img, scale, config.sigma, config.min_size)
        n = int(labels.max()) + 1
        for space in config.color_spaces:
            hist = colour_histograms(spaces[space], labels, n, config.bins)
            groups = [g for g in hierarchical_grouping(labels, hist) if (scale, frozenset(g)) not in seen]
            seen.update((scale, frozenset(g)) for g in groups)
            member = np.zeros((len(groups), n), bool)                      # (P, R)
            for k, g in enumerate(groups):
                member[k, g] = True
            region = member[:, labels]                                     # (P, H, W)
            masks.extend(region[region.sum((1, 2)) >= min_area])
    keys, unique = set(), []
    for m in masks:                                                         # drop identical masks
        key = np.packbits(m).tobytes()
        if key not in keys:
            keys.add(key)
            unique.append(m)
    if not unique:
        return torch.zeros(0, H, W, dtype=torch.bool)
    return torch.from_numpy(np.stack(unique))


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """bool[P, H, W] -> float32[P, 4] pixel-edge boxes (x0, y0, x1, y1); an empty mask gives a zero box."""
    if masks.dim() != 3:
        raise ValueError(f"masks must be [P, H, W], got shape {tuple(masks.shape)}")
    P, H, W = masks.shape
    boxes = torch.zeros(P, 4)
    if P == 0:
        return boxes
    rows, cols = masks.any(2), masks.any(1)                                  # (P, H), (P, W)
    ar_h, ar_w = torch.arange(H), torch.arange(W)
    nonempty = rows.any(1)
    boxes[:, 0] = torch.where(cols, ar_w, W).min(1).values
    boxes[:, 1] = torch.where(rows, ar_h, H).min(1).values
    boxes[:, 2] = torch.where(cols, ar_w + 1, 0).max(1).values
    boxes[:, 3] = torch.where(rows, ar_h + 1, 0).max(1).values
    boxes[~nonempty] = 0
    return boxes


def best_overlap(proposals: torch.Tensor, gt_masks: torch.Tensor) -> torch.Tensor:
    """float64[G]: for each ground-truth mask, the highest IoU of any proposal (0 if there are none)."""
    if len(gt_masks) == 0:
        return torch.zeros(0, dtype=torch.float64)
    if len(proposals) == 0:
        return torch.zeros(len(gt_masks), dtype=torch.float64)
    return mask_iou(proposals, gt_masks).max(0).values


def proposal_recall(best: torch.Tensor, thresholds=(0.5, 0.7)) -> dict:
    """Share of ground-truth instances whose best proposal reaches each IoU threshold ({t: recall})."""
    best = torch.as_tensor(best, dtype=torch.float64)
    if best.numel() == 0:
        return {t: float("nan") for t in thresholds}
    return {t: float((best >= t).double().mean()) for t in thresholds}
