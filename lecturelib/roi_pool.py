"""RoI max pooling (Girshick, Fast R-CNN, ICCV 2015, section 2.1), written out with plain loops.

Every region of interest (RoI), a box on the image, is projected onto the feature map (multiplied by
``spatial_scale`` = 1 / stride and rounded to whole cells), cut into an ``h × w`` grid of roughly equal
bins and max-pooled inside each bin: a fixed-size ``[C, h, w]`` feature for a box of any size, so that
one fully connected head can score every proposal. The bins follow ``torchvision.ops.roi_pool`` exactly
(Caffe's rounding): the RoI spans cells ``round(x0 · s) .. round(x1 · s)`` inclusive (at least one
cell), bin ``j`` spans ``floor(j · W_roi / w) .. ceil((j + 1) · W_roi / w)``, clipped to the map; an empty
bin gives 0.

Backward: "RoI pooling can back-propagate like max pooling" -- each output's gradient goes to the one
input cell that was its maximum (the first in row-major order on ties), and a cell that is the
maximum of several (overlapping) bins or RoIs sums their gradients.

This is the teaching version (a Python loop over RoIs and bins); the detectors call
``torchvision.ops.roi_pool``, which the tests check it against, forward and backward.
"""
from __future__ import annotations

import torch


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    """C's ``round``: halves go away from zero (``torch.round`` rounds them to even)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def roi_bins(box: torch.Tensor, output_size: tuple[int, int], spatial_scale: float,
             feature_hw: tuple[int, int]) -> list[list[tuple[int, int, int, int]]]:
    """The cells each output bin of one RoI pools over, as torchvision computes them.

    Args:
        box (float[4]): (x0, y0, x1, y1) in input pixels (the dtype of the features: its rounding is the one used).
        output_size: (h, w) bins. spatial_scale: feature cells per input pixel. feature_hw: (H, W) of the map.
    Returns:
        ``bins[i][j] = (y_start, y_end, x_start, x_end)``, half-open cell ranges (empty when start >= end).
    """
    ph, pw = output_size
    H, W = feature_hw
    x0, y0, x1, y1 = (int(v) for v in _round_half_away(box * spatial_scale))
    roi_h, roi_w = max(y1 - y0 + 1, 1), max(x1 - x0 + 1, 1)
    bin_h = torch.tensor(roi_h, dtype=box.dtype) / ph
    bin_w = torch.tensor(roi_w, dtype=box.dtype) / pw
    bins = []
    for i in range(ph):
        ys = min(max(int(torch.floor(i * bin_h)) + y0, 0), H)
        ye = min(max(int(torch.ceil((i + 1) * bin_h)) + y0, 0), H)
        row = []
        for j in range(pw):
            xs = min(max(int(torch.floor(j * bin_w)) + x0, 0), W)
            xe = min(max(int(torch.ceil((j + 1) * bin_w)) + x0, 0), W)
            row.append((ys, ye, xs, xe))
        bins.append(row)
    return bins


def roi_max_pool(features: torch.Tensor, rois: torch.Tensor, output_size, spatial_scale: float = 1.0) -> torch.Tensor:
    """RoI max pooling, from scratch: the same numbers as ``torchvision.ops.roi_pool`` and the same gradient.

    Args:
        features (float[N, C, H, W]): feature maps of N images.
        rois (float[R, 5]): (image index, x0, y0, x1, y1) per RoI, boxes in input pixels (torchvision's layout).
        output_size: h or (h, w) bins per RoI.
        spatial_scale: feature cells per input pixel (1 / the backbone's stride).
    Returns:
        float[R, C, h, w]: the maximum of each bin (0 for an empty bin). Differentiable in ``features``: the
        gradient of each output goes to its argmax cell only.
    Raises:
        ValueError: features not 4-D, rois not [R, 5], an image index outside 0..N-1, or a bad output size.
    """
    if features.dim() != 4:
        raise ValueError(f"features must be [N, C, H, W], got shape {tuple(features.shape)}")
    if rois.dim() != 2 or rois.shape[-1] != 5:
        raise ValueError(f"rois must be [R, 5] (image index, x0, y0, x1, y1), got shape {tuple(rois.shape)}; "
                         "prepend the image index: torch.cat([index[:, None], boxes], 1)")
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if ph < 1 or pw < 1:
        raise ValueError(f"output_size must be positive, got {output_size}")
    N, C, H, W = features.shape
    index = rois[:, 0].long()
    if len(rois) and (index.min() < 0 or index.max() >= N):
        raise ValueError(f"rois[:, 0] are image indices in 0..{N - 1}, got {index.unique().tolist()}")
    boxes = rois[:, 1:].detach().to(features.dtype)
    out = []
    for r in range(len(rois)):
        fmap = features[index[r]]                                            # (C, H, W)
        cells = []
        for row in roi_bins(boxes[r], (ph, pw), spatial_scale, (H, W)):
            for ys, ye, xs, xe in row:
                if ye <= ys or xe <= xs:
                    cells.append(features.new_zeros(C))
                    continue
                region = fmap[:, ys:ye, xs:xe].reshape(C, -1)               # (C, cells in the bin)
                arg = region.detach().argmax(1, keepdim=True)                # the first maximum of each channel
                cells.append(region.gather(1, arg)[:, 0])                    # gradient to the argmax only
        out.append(torch.stack(cells, 1).reshape(C, ph, pw))
    return torch.stack(out) if out else features.new_zeros(0, C, ph, pw)
