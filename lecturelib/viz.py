"""Pictures: a class palette, mask overlays and image/mask grids (matplotlib).

Every helper that shows classes takes ``num_classes`` and ``class_names`` (a dataset's ``class_names``,
e.g. VOC's 21 for :class:`lecturelib.datasets.VOCScenes`); without names, 11 classes get the course's
Fashion-MNIST names and any other number "background", "class 1", ...
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from .metrics import IGNORE_INDEX
from .scenes import CLASS_NAMES

LEGEND_COLUMNS = 6

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


def class_names_for(num_classes: int | None = None, class_names=None) -> tuple[int, tuple[str, ...]]:
    """(num_classes, names): from ``class_names`` (its length is the number of classes), else the course's
    names for None or 11 classes, else ("background", "class 1", ...). Raises ValueError when both are given
    and disagree."""
    if class_names is not None:
        names = tuple(str(n) for n in class_names)
        if num_classes is not None and num_classes != len(names):
            raise ValueError(f"num_classes={num_classes} but {len(names)} class_names; give one name per class")
        return len(names), names
    if num_classes is None or num_classes == len(CLASS_NAMES):
        return len(CLASS_NAMES), CLASS_NAMES
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return num_classes, ("background",) + tuple(f"class {c}" for c in range(1, num_classes))


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


def colorize(mask, num_classes: int | None = None, ignore_index: int = IGNORE_INDEX, class_names=None) -> np.ndarray:
    """Label map int[H, W] -> uint8[H, W, 3] with the class palette (ignore pixels and labels >= num_classes
    white). num_classes / class_names: see :func:`class_names_for` (default: the course's 11)."""
    num_classes, _ = class_names_for(num_classes, class_names)
    m = _as_numpy(mask).astype(np.int64)
    if m.ndim != 2:
        raise ValueError(f"mask must be a 2-D label map [H, W], got shape {m.shape}")
    pal = palette(num_classes)
    out = np.full(m.shape + (3,), 255, np.uint8)
    ok = (m >= 0) & (m < num_classes)
    out[ok] = pal[m[ok]]
    return out


def overlay(image, mask, num_classes: int | None = None, alpha: float = 0.55, class_names=None) -> np.ndarray:
    """Draw label map ``mask`` [H, W] over ``image`` with torchvision's ``draw_segmentation_masks``; returns
    uint8[H, W, 3]. num_classes / class_names: see :func:`class_names_for` (default: the course's 11)."""
    num_classes, _ = class_names_for(num_classes, class_names)
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
    """Draw instance masks over ``image``, one colour per instance; returns uint8[H, W, 3].

    masks: bool or integer [N, H, W] (non-zero = inside), or probabilities float [N, H, W] or a model's
    [N, 1, H, W], inside where > 0.5 (as :func:`lecturelib.mask_ap.mask_iou` and ``MaskAP`` read them).
    Raises ValueError for other shapes or a size that differs from the image's.
    """
    img = image_uint8(image)
    ms = torch.as_tensor(_as_numpy(masks))
    if ms.numel() == 0:
        return img
    if ms.dim() == 4 and ms.shape[1] == 1:
        ms = ms[:, 0]
    if ms.dim() != 3:
        raise ValueError(f"masks must be [N, H, W] or [N, 1, H, W], got shape {tuple(ms.shape)}")
    ms = ms > 0.5 if ms.is_floating_point() else ms != 0
    if tuple(ms.shape[1:]) != img.shape[:2]:
        raise ValueError(f"masks are {tuple(ms.shape[1:])}, the image {img.shape[:2]}; paste the masks into the image")
    rng = np.random.default_rng(1)
    colors = [tuple(int(v) for v in rng.integers(60, 256, 3)) for _ in range(ms.shape[0])]
    out = draw_segmentation_masks(torch.from_numpy(img).permute(2, 0, 1), ms, alpha=alpha, colors=colors)
    return out.permute(1, 2, 0).numpy()


def legend_handles(num_classes: int | None = None, class_names=None):
    """One matplotlib patch per class, in the palette's colour, labelled with the class's name
    (see :func:`class_names_for`)."""
    from matplotlib.patches import Patch

    num_classes, names = class_names_for(num_classes, class_names)
    return [Patch(color=palette(num_classes)[c] / 255, label=names[c]) for c in range(num_classes)]


def show_grid(rows: list[list], titles: list[list[str]] | None = None, row_labels: list[str] | None = None,
              size: float = 2.0, legend: bool = False, num_classes: int | None = None, dpi: int = 100,
              class_names=None):
    """Show a grid of pictures. Each entry is an image ([H,W,3] / [3,H,W]) or a label map ([H,W]), drawn
    without interpolation (each pixel a crisp square); ``dpi`` of the figure (100 by default).

    legend: a legend of the classes under the grid (``num_classes`` / ``class_names``, see
    :func:`class_names_for`; default the course's 11); a legend of more than two rows makes the figure taller
    so that it never covers the pictures. Returns the matplotlib figure.
    """
    num_classes, names = class_names_for(num_classes, class_names)
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
    if not legend:
        fig.tight_layout()
        return fig
    legend_outside(fig, num_classes=num_classes, class_names=names)
    return fig


COURSE_STYLE = {
    "figure.dpi": 100,                 # stored PNGs at 100 dpi (matplotlib-inline's own default is 72 in some set-ups)
    "savefig.dpi": "figure",
    "image.interpolation": "nearest",  # a 64-px scene shown large keeps crisp pixels; label maps are never blurred
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "lines.linewidth": 1.2,
}


def use_course_style() -> None:
    """Apply the course's figure style to matplotlib's ``rcParams`` (:data:`COURSE_STYLE`: 100 dpi, nearest
    interpolation, small consistent fonts, legends without frames). :func:`lecturelib.setup` calls it; a figure
    may still ask for more (``dpi=``) but never less."""
    import matplotlib

    matplotlib.rcParams.update(COURSE_STYLE)


def legend_outside(fig, handles=None, num_classes: int | None = None, class_names=None, ncol: int | None = None,
                   margin_inches: float = 0.1):
    """Put a legend under all panels of ``fig``, never over one, and return it.

    handles: matplotlib artists with labels; None = one patch per class (:func:`legend_handles` with
    ``num_classes`` / ``class_names``). ncol: columns (default up to :data:`LEGEND_COLUMNS`). The figure is made
    taller by the legend's height and the panels are laid out above it (``tight_layout`` with a reserved band; a
    figure with constrained layout gets matplotlib's ``"outside lower center"`` placement instead).
    Raises ValueError when there is nothing to show.
    """
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    if handles is None:
        handles = legend_handles(num_classes, class_names)
    handles = list(handles)
    if not handles:
        raise ValueError("legend_outside: no handles to show; pass handles= or num_classes=")
    columns = ncol if ncol is not None else min(len(handles), LEGEND_COLUMNS)
    if isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine):
        return fig.legend(handles=handles, loc="outside lower center", ncol=columns, frameon=False)
    legend = fig.legend(handles=handles, loc="lower center", ncol=columns, frameon=False)
    legend_inches = legend.get_window_extent(fig.canvas.get_renderer()).height / fig.dpi + margin_inches
    height = fig.get_figheight() + legend_inches
    fig.set_figheight(height)
    fig.tight_layout(rect=(0, legend_inches / height, 1, 1))
    return legend


def draw_boxes(image, boxes, labels, scores=None, upscale: int = 4, class_names=None, width: int = 2) -> np.ndarray:
    """Boxes drawn on an image enlarged ``upscale`` times by nearest neighbour (so the pixels stay sharp and the
    labels readable): uint8[H * upscale, W * upscale, 3].

    boxes float[N, 4] pixel-edge (x0, y0, x1, y1) in the image's pixels; labels int[N] (coloured and named by
    class, :func:`palette` / ``class_names``); scores float[N] or None (then no score is written).
    ``torchvision.utils.draw_bounding_boxes`` draws them.
    """
    if upscale < 1:
        raise ValueError(f"upscale must be an int >= 1, got {upscale}")
    img = torch.from_numpy(image_uint8(image)).permute(2, 0, 1)
    img = img.repeat_interleave(upscale, 1).repeat_interleave(upscale, 2)              # nearest upscaling
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    labels = [int(v) for v in torch.as_tensor(labels).reshape(-1)]
    if len(labels) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels")
    num_classes, names = class_names_for(None if class_names is None else len(class_names), class_names)
    colours = palette(max(num_classes, max(labels, default=0) + 1))
    texts = [names[c] if c < len(names) else f"class {c}" for c in labels]
    if scores is not None:
        texts = [f"{t} {float(s):.2f}" for t, s in zip(texts, torch.as_tensor(scores).reshape(-1))]
    if len(boxes) == 0:
        return img.permute(1, 2, 0).numpy()
    out = draw_bounding_boxes(img, boxes * upscale, labels=texts, width=width,
                              colors=[tuple(int(v) for v in colours[c]) for c in labels])
    return out.permute(1, 2, 0).numpy()
