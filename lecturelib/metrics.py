"""Segmentation metrics from an accumulated confusion matrix.

Rows are ground truth, columns predictions; pixels labelled ``ignore_index``
(255) are dropped. IoU is averaged only over classes that occur (in the ground
truth or the predictions) so an absent class never turns the mean into NaN. Ground truth
with no labelled pixel of any class but 0 (background) has no mIoU: it is NaN, with a warning.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255


def _check_pair(pred: torch.Tensor, target: torch.Tensor, name: str) -> None:
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise ValueError(f"{name}: pred and target must be torch tensors, got "
                         f"{type(pred).__name__} and {type(target).__name__}")
    if pred.is_floating_point() or target.is_floating_point():
        raise ValueError(f"{name}: pred and target must be integer label maps (use logits.argmax(1)); "
                         f"got dtypes {pred.dtype} and {target.dtype}")
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}; "
                         "resize the prediction to the target size first (F.interpolate on the logits)")


def labels_from_scores(scores: torch.Tensor) -> torch.Tensor:
    """The predicted label map int64[N, H, W] of class scores float[N, C, H, W]: ``scores.argmax(1)``.

    The same labels (the first class wins a tie), computed by one pass per class over contiguous maps,
    which on a CPU is several times faster than ``argmax`` over the channel dimension of large maps.
    """
    if scores.dim() != 4:
        raise ValueError(f"scores must be [N, C, H, W], got shape {tuple(scores.shape)}")
    best = scores[:, 0].clone()
    labels = torch.zeros(best.shape, dtype=torch.long, device=scores.device)
    for c in range(1, scores.shape[1]):
        better = scores[:, c] > best
        best = torch.where(better, scores[:, c], best)
        labels[better] = c
    return labels


class ConfusionMatrix:
    """Accumulates a ``num_classes × num_classes`` confusion matrix over batches.

    >>> cm = ConfusionMatrix(3); cm.update(pred, target); cm.compute()["miou"]
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2 (background counts), got {num_classes!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        self.mat.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: integer label maps of the same shape (any shape, e.g. [N, H, W])."""
        _check_pair(pred, target, "ConfusionMatrix.update")
        pred, target = pred.reshape(-1).cpu().long(), target.reshape(-1).cpu().long()
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        bad = (target < 0) | (target >= self.num_classes)
        if bad.any():
            raise ValueError(f"ConfusionMatrix.update: target holds labels {sorted(set(target[bad].tolist()))[:5]} "
                             f"outside 0..{self.num_classes - 1} (and not ignore_index={self.ignore_index}); "
                             "check num_classes")
        if ((pred < 0) | (pred >= self.num_classes)).any():
            raise ValueError(f"ConfusionMatrix.update: pred holds labels outside 0..{self.num_classes - 1}; "
                             "check num_classes")
        self.mat += torch.bincount(target * self.num_classes + pred,
                                   minlength=self.num_classes ** 2).reshape(self.num_classes, self.num_classes)

    def compute(self) -> dict:
        """pixel_acc, per-class iou (NaN where a class never occurs), miou over the classes that occur.

        When labelled ground-truth pixels exist but none of a class other than 0 (background), ``miou`` is NaN
        and a warning says so (e.g. binary 0/255 masks read with 255 = ignore); ``pixel_acc`` then counts
        background pixels only.
        """
        m = self.mat.double()
        tp = m.diag()
        gt, pr = m.sum(1), m.sum(0)
        union = gt + pr - tp
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
        valid = union > 0
        total = m.sum()
        no_objects = bool(total > 0 and gt[1:].sum() == 0)
        if no_objects:
            warnings.warn(f"ConfusionMatrix: none of the {int(total)} labelled ground-truth pixels belongs to a class "
                          "other than 0 (background), so mIoU is undefined (NaN) and pixel_acc counts background "
                          "only; check the masks (binary 0/255 masks read with 255 = ignore?)", stacklevel=2)
        return {
            "pixel_acc": float(tp.sum() / total) if total > 0 else float("nan"),
            "iou": iou.tolist(),
            "miou": float(iou[valid].mean()) if valid.any() and not no_objects else float("nan"),
            "class_acc": (tp / gt.clamp(min=1)).where(gt > 0, torch.full_like(tp, float("nan"))).tolist(),
        }


def boundary_band(target: torch.Tensor, width: int = 2, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """bool mask of pixels within ``width`` pixels (Chebyshev distance) of a label change in ``target``.

    target: int[N, H, W] or int[H, W].
    """
    if width < 1:
        raise ValueError(f"width must be >= 1 pixel, got {width}")
    if target.dim() not in (2, 3):
        raise ValueError(f"target must be [H, W] or [N, H, W], got shape {tuple(target.shape)}")
    t = target if target.dim() == 3 else target[None]                      # [N, H, W]
    tf = t.float()[:, None]                                                 # [N, 1, H, W]
    # an edge pixel has a 3x3 neighbour with another label
    edge = F.max_pool2d(tf, 3, 1, 1) != -F.max_pool2d(-tf, 3, 1, 1)
    if width > 1:  # grow the edge by width - 1 pixels
        edge = F.max_pool2d(edge.float(), 2 * width - 1, 1, width - 1) > 0
    band = edge[:, 0] & (t != ignore_index)
    return band if target.dim() == 3 else band[0]


class BoundaryAccuracy:
    """Pixel accuracy restricted to a band around ground-truth label boundaries (a trimap measure).

    Interior pixels are easy; the band is where coarse outputs (stride 32, say) lose.
    """

    def __init__(self, width: int = 2, ignore_index: int = IGNORE_INDEX):
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be an int >= 1 (pixels), got {width!r}")
        self.width, self.ignore_index = width, ignore_index
        self.correct = 0
        self.total = 0

    def reset(self) -> None:
        self.correct = self.total = 0

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        _check_pair(pred, target, "BoundaryAccuracy.update")
        band = boundary_band(target.cpu(), self.width, self.ignore_index)
        self.correct += int((pred.cpu()[band] == target.cpu()[band]).sum())
        self.total += int(band.sum())

    def compute(self) -> float:
        return self.correct / self.total if self.total else float("nan")


def segmentation_report(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                        boundary_width: int = 2) -> dict:
    """One-shot metrics for a set of label maps: pixel_acc, iou, miou, class_acc, boundary_acc."""
    cm = ConfusionMatrix(num_classes)
    cm.update(pred, target)
    ba = BoundaryAccuracy(boundary_width)
    ba.update(pred, target)
    out = cm.compute()
    out["boundary_acc"] = ba.compute()
    return out


def psnr_from_mse(mse: float, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of a mean squared error, for signals with maximum ``peak``."""
    return 10 * math.log10(peak ** 2 / max(float(mse), 1e-12))


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of images ``pred`` (clipped to [0, 1]) against ``target``, both float[..., H, W] in [0, 1]."""
    return psnr_from_mse(F.mse_loss(pred.double().clamp(0, 1), target.double()).item())
