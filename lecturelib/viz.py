"""Pictures: a class palette, mask overlays and image/mask grids (matplotlib)."""
from __future__ import annotations

import numpy as np
import torch
from torchvision.utils import draw_segmentation_masks

from .metrics import IGNORE_INDEX
from .scenes import CLASS_NAMES

# background black, then ten distinct colours (one per Fashion-MNIST class), uint8 RGB
PALETTE = np.array([
    [0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
], dtype=np.uint8)


def palette(num_classes: int) -> np.ndarray:
    """uint8[num_classes, 3]; the course colours first, then deterministic extra colours."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if num_classes <= len(PALETTE):
        return PALETTE[:num_classes]
    rng = np.random.default_rng(0)
    extra = rng.integers(40, 256, size=(num_classes - len(PALETTE), 3), dtype=np.uint8)
    return np.concatenate([PALETTE, extra])


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def image_uint8(image) -> np.ndarray:
    """The course's one image converter: uint8[H, W, 3], float[H, W, 3] in [0, 1] (clipped) or a tensor
    [3, H, W] -> uint8[H, W, 3]. Raises ValueError naming the shape for anything else."""
    img = _as_numpy(image)
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3:
        img = img.transpose(1, 2, 0)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3] or [3, H, W], got shape {img.shape}")
    if img.dtype != np.uint8:
        img = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    return img


def colorize(mask, num_classes: int = len(CLASS_NAMES), ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Label map int[H, W] -> uint8[H, W, 3] with the class palette (ignore pixels white)."""
    m = _as_numpy(mask).astype(np.int64)
    if m.ndim != 2:
        raise ValueError(f"mask must be a 2-D label map [H, W], got shape {m.shape}")
    pal = palette(num_classes)
    out = np.full(m.shape + (3,), 255, np.uint8)
    ok = (m >= 0) & (m < num_classes)
    out[ok] = pal[m[ok]]
    return out


def overlay(image, mask, num_classes: int = len(CLASS_NAMES), alpha: float = 0.55) -> np.ndarray:
    """Draw label map ``mask`` over ``image`` with torchvision's ``draw_segmentation_masks``; returns uint8[H,W,3]."""
    img = image_uint8(image)
    m = torch.as_tensor(_as_numpy(mask)).long()
    if m.shape != img.shape[:2]:
        raise ValueError(f"mask shape {tuple(m.shape)} differs from image size {img.shape[:2]}")
    classes = [c for c in range(1, num_classes) if (m == c).any()]
    if not classes:
        return img
    masks = torch.stack([m == c for c in classes])
    colors = [tuple(int(v) for v in palette(num_classes)[c]) for c in classes]
    out = draw_segmentation_masks(torch.from_numpy(img).permute(2, 0, 1), masks, alpha=alpha, colors=colors)
    return out.permute(1, 2, 0).numpy()


def instance_overlay(image, masks, alpha: float = 0.6) -> np.ndarray:
    """Draw instance masks bool[N, H, W] over ``image``, one colour per instance."""
    img = image_uint8(image)
    ms = torch.as_tensor(_as_numpy(masks)).bool()
    if ms.numel() == 0 or ms.shape[0] == 0:
        return img
    rng = np.random.default_rng(1)
    colors = [tuple(int(v) for v in rng.integers(60, 256, 3)) for _ in range(ms.shape[0])]
    out = draw_segmentation_masks(torch.from_numpy(img).permute(2, 0, 1), ms, alpha=alpha, colors=colors)
    return out.permute(1, 2, 0).numpy()


def legend_handles(num_classes: int = len(CLASS_NAMES), names=CLASS_NAMES):
    from matplotlib.patches import Patch
    return [Patch(color=palette(num_classes)[c] / 255, label=names[c] if c < len(names) else str(c))
            for c in range(num_classes)]


def show_grid(rows: list[list], titles: list[list[str]] | None = None, row_labels: list[str] | None = None,
              size: float = 2.0, legend: bool = False, num_classes: int = len(CLASS_NAMES), dpi: int = 100):
    """Show a grid of pictures. Each entry is an image ([H,W,3] / [3,H,W]) or a label map ([H,W]), drawn
    without interpolation (each pixel a crisp square); ``dpi`` of the figure (100 by default).

    Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    if not rows or not all(len(r) == len(rows[0]) for r in rows):
        raise ValueError("rows must be a non-empty list of equally long lists of pictures")
    nr, nc = len(rows), len(rows[0])
    fig, axes = plt.subplots(nr, nc, figsize=(size * nc, size * nr), squeeze=False, dpi=dpi)
    for i, row in enumerate(rows):
        for j, pic in enumerate(row):
            ax = axes[i][j]
            arr = _as_numpy(pic)
            if arr.ndim == 2:
                ax.imshow(colorize(arr, num_classes), interpolation="nearest")
            else:
                ax.imshow(image_uint8(arr), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if titles is not None:
                ax.set_title(titles[i][j], fontsize=9)
            if row_labels is not None and j == 0:
                ax.set_ylabel(row_labels[i], fontsize=9)
    if legend:
        fig.legend(handles=legend_handles(num_classes), loc="lower center", ncol=min(num_classes, 6),
                   fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.08, 1, 1))
    else:
        fig.tight_layout()
    return fig
