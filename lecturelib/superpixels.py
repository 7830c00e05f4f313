"""Bottom-up segmentation: superpixels and label voting (Farabet et al., TPAMI 2013; lesson 03).

A network that classifies pixels from downsampled feature maps draws blurry,
blocky object edges. An external, bottom-up segmentation of the image into
superpixels (Felzenszwalb & Huttenlocher 2004, or SLIC, Achanta et al. 2012)
follows colour edges. Giving every pixel of a superpixel the label most of its
pixels received snaps the labels to those edges.

Label maps are int[H, W] (0 = background); segment maps are int[H, W] with ids
0 .. S-1 (``skimage.segmentation`` output).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .metrics import IGNORE_INDEX
from .viz import image_uint8


@dataclass(frozen=True)
class SuperpixelConfig:
    """How to cut an image into superpixels.

    method: 'felzenszwalb' (graph-based, follows edges) or 'slic' (k-means in colour + position).
    scale, sigma, min_size: Felzenszwalb's parameters; ``min_size`` is in pixels of a 64×64 image and
    scales with the image area. n_segments, compactness: SLIC's parameters (n_segments per 64×64 image).
    """

    method: str = "felzenszwalb"
    scale: float = 80.0
    sigma: float = 0.5
    min_size: int = 8
    n_segments: int = 120
    compactness: float = 10.0

    def __post_init__(self):
        if self.method not in ("felzenszwalb", "slic"):
            raise ValueError(f"SuperpixelConfig.method must be 'felzenszwalb' or 'slic', got {self.method!r}")




def felzenszwalb_pixels(image, scale: float, sigma: float, min_size: int) -> np.ndarray:
    """Felzenszwalb's segmentation of ``image`` (any form :func:`lecturelib.viz.image_uint8` takes) with the
    smallest segment ``min_size`` pixels: int64[H, W], ids 0..S-1."""
    from skimage.segmentation import felzenszwalb

    img = image_uint8(image)
    seg = felzenszwalb(img, scale=scale, sigma=sigma, min_size=int(min_size))
    return _consecutive(seg, img.shape[:2])


def _consecutive(seg: np.ndarray, shape) -> np.ndarray:
    _, seg = np.unique(seg, return_inverse=True)     # ids 0 .. S-1 without gaps
    return seg.reshape(shape).astype(np.int64)


def superpixels(image, config: SuperpixelConfig = SuperpixelConfig()) -> np.ndarray:
    """Cut ``image`` (uint8[H, W, 3], float in [0, 1], or Tensor[3, H, W]) into superpixels: int64[H, W], ids 0..S-1."""
    from skimage.segmentation import slic

    img = image_uint8(image)
    area = img.shape[0] * img.shape[1] / 64 ** 2
    if config.method == "felzenszwalb":
        return felzenszwalb_pixels(img, config.scale, config.sigma, max(1, int(round(config.min_size * area))))
    seg = slic(img, n_segments=max(1, int(round(config.n_segments * area))), compactness=config.compactness,
               start_label=0)
    return _consecutive(seg, img.shape[:2])


def superpixel_vote(labels, segments, num_classes: int | None = None) -> np.ndarray:
    """Majority vote: every pixel gets the label most pixels of its superpixel have.

    labels: int[H, W] (NumPy or tensor), segments: int[H, W] with ids >= 0. Ties go to the smaller label.
    Returns int64[H, W].
    """
    lab = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    seg = segments.detach().cpu().numpy() if isinstance(segments, torch.Tensor) else np.asarray(segments)
    if lab.shape != seg.shape:
        raise ValueError(f"superpixel_vote: labels {lab.shape} and segments {seg.shape} must have the same shape")
    if lab.size and (lab.min() < 0 or seg.min() < 0):
        raise ValueError("superpixel_vote: labels and segment ids must be non-negative integers")
    lab, seg = lab.astype(np.int64), seg.astype(np.int64)
    C = int(num_classes) if num_classes is not None else int(lab.max(initial=0)) + 1
    S = int(seg.max(initial=0)) + 1
    votes = np.bincount((seg * C + lab).ravel(), minlength=S * C).reshape(S, C)   # (S, C) pixel counts
    winner = votes.argmax(1)                                                        # (S,)
    return winner[seg]


def superpixel_average(probs, segments) -> np.ndarray:
    """Soft voting (what Farabet et al. do): average the class probabilities in each superpixel, then argmax.

    probs: float[C, H, W], segments: int[H, W]. Returns int64[H, W].
    """
    p = probs.detach().cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)
    seg = segments.detach().cpu().numpy() if isinstance(segments, torch.Tensor) else np.asarray(segments)
    if p.ndim != 3 or p.shape[1:] != seg.shape:
        raise ValueError(f"superpixel_average: probs must be [C, H, W] matching segments {seg.shape}, got {p.shape}")
    C, S = p.shape[0], int(seg.max(initial=0)) + 1
    sums = np.stack([np.bincount(seg.ravel(), weights=p[c].ravel(), minlength=S) for c in range(C)], 1)  # (S, C)
    return sums.argmax(1)[seg]


def vote_batch(labels: torch.Tensor, images: torch.Tensor, config: SuperpixelConfig = SuperpixelConfig(),
               num_classes: int | None = None) -> torch.Tensor:
    """Superpixel majority vote for a batch: labels int[N, H, W], images float[N, 3, H, W] -> int64[N, H, W]."""
    if labels.dim() != 3 or images.dim() != 4 or labels.shape[0] != images.shape[0] \
            or labels.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"vote_batch: need labels [N, H, W] and images [N, 3, H, W] of the same N, H, W; got "
                         f"{tuple(labels.shape)} and {tuple(images.shape)}")
    out = [superpixel_vote(labels[i], superpixels(images[i], config), num_classes) for i in range(len(labels))]
    return torch.from_numpy(np.stack(out))


def oracle_vote(target, segments, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """The best any voting can do with these superpixels: the vote of the *true* labels (ignore pixels skipped)."""
    t = np.asarray(target).astype(np.int64)
    C = int(t[t != ignore_index].max(initial=0)) + 2
    t = np.where(t == ignore_index, C - 1, t)        # ignore pixels vote for an extra class
    return superpixel_vote(t, segments, C)


def combine_everything(probs: torch.Tensor, images: torch.Tensor,
                       config: SuperpixelConfig = SuperpixelConfig()) -> torch.Tensor:
    """The final output of the multi-scale system: network probabilities float[N, C, H, W] averaged within the
    superpixels of ``images`` float[N, 3, H, W]; returns labels int64[N, H, W]."""
    if probs.dim() != 4 or images.dim() != 4 or len(probs) != len(images) or probs.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"combine_everything: need probs [N, C, H, W] and images [N, 3, H, W] with equal N, H, W; "
                         f"got {tuple(probs.shape)} and {tuple(images.shape)}")
    out = [superpixel_average(probs[i], superpixels(images[i], config)) for i in range(len(probs))]
    return torch.from_numpy(np.stack(out))
