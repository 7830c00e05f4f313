"""Fully convolutional networks (lesson 02): Overfeat's efficient sliding window.

A classifier of the form ``convs/pools -> Flatten -> Linear -> ... -> Linear`` is
turned into a network of convolutions only: the first Linear, which reads a
``C x kh x kw`` feature map, becomes a ``kh x kw`` Conv2d with the same weights;
every later Linear becomes a 1x1 Conv2d. On the input size it was trained on the
converted network gives a 1x1 score map equal to the classifier's output; on a
larger image it gives the classifier's score at every window position, spaced by
the network's output stride, in one pass that shares the work of overlapping
windows.
"""
from __future__ import annotations

import copy
import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .patch import pad_for_patches
from .transposed import pair

# layers that act on every position (or every channel) alone: valid before and after the Flatten
ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.Hardswish,
               nn.Hardsigmoid, nn.Identity, nn.Dropout)
# layers that are convolutional already (work on any input size): kept as they are before the Flatten
SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.BatchNorm2d, nn.Dropout2d) + ELEMENTWISE


def linear_to_conv(linear: nn.Linear, in_channels: int, kernel_size: int | tuple[int, int]) -> nn.Conv2d:
    """A Conv2d computing ``linear`` on a ``in_channels x kh x kw`` map flattened in (C, H, W) order.

    The weight float[out, C * kh * kw] is reshaped to float[out, C, kh, kw]; the bias is copied.
    ``kernel_size=1`` (with ``in_channels = in_features``) gives the 1x1 convolution for a later Linear.
    """
    if not isinstance(linear, nn.Linear):
        raise ValueError(f"linear_to_conv needs an nn.Linear, got {type(linear).__name__}")
    kh, kw = pair(kernel_size, "kernel_size")
    if in_channels * kh * kw != linear.in_features:
        raise ValueError(f"Linear has in_features={linear.in_features} but in_channels * kh * kw = "
                         f"{in_channels} * {kh} * {kw} = {in_channels * kh * kw}; pass the shape of the map it reads")
    conv = nn.Conv2d(in_channels, linear.out_features, (kh, kw), bias=linear.bias is not None)
    conv = conv.to(device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.reshape(linear.out_features, in_channels, kh, kw))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


def _adaptive_to_fixed(pool: nn.Module, in_hw: tuple[int, int]) -> nn.Module:
    """Adaptive pooling at the reference size -> a fixed window pool that slides with stride 1."""
    out = pool.output_size
    oh, ow = pair(out if out is not None else in_hw, "output size")
    h, w = in_hw
    if h % oh or w % ow:
        raise ValueError(f"{type(pool).__name__}(output_size={out}) on a {h}x{w} map has uneven windows; "
                         "only windows that divide the map can be made convolutional")
    kernel = (h // oh, w // ow)
    if (oh, ow) != (1, 1):
        stride = kernel
    else:
        stride = (1, 1)  # a single window: slide it one feature at a time over a larger map
    cls = nn.AvgPool2d if isinstance(pool, nn.AdaptiveAvgPool2d) else nn.MaxPool2d
    return cls(kernel, stride=stride)


def to_fully_convolutional(classifier: nn.Sequential, input_size: int | tuple[int, int], in_channels: int = 3,
                           check: bool = True, atol: float = 1e-4) -> nn.Sequential:
    """Turn a ``features -> Flatten -> Linear ... Linear`` classifier into convolutions only.

    Args:
        classifier: an ``nn.Sequential`` (nested Sequentials allowed before the Flatten).
        input_size: the (H, W) it classifies, e.g. the patch size; fixes the map shape the first Linear reads.
        in_channels: channels of the input.
        check: run both networks on a random input of ``input_size`` and raise if they disagree.
        atol: tolerance of that check.
    Returns an ``nn.Sequential`` mapping float[N, C, H', W'] to scores float[N, classes, h, w]; on
    ``input_size`` h = w = 1, in eval mode. Its weights are copies: the classifier is left unchanged.
    """
    if not isinstance(classifier, nn.Sequential):
        raise ValueError(f"to_fully_convolutional needs an nn.Sequential, got {type(classifier).__name__}; "
                         "wrap your layers: nn.Sequential(features, nn.Flatten(), head)")
    h, w = pair(input_size, "input_size")
    layers = list(classifier.named_children())
    flat_at = [i for i, (_, m) in enumerate(layers) if isinstance(m, nn.Flatten)]
    if len(flat_at) != 1:
        raise ValueError(f"expected exactly one nn.Flatten layer between the features and the fully-connected head, "
                         f"found {len(flat_at)}")
    f = flat_at[0]
    flatten = layers[f][1]
    if flatten.start_dim != 1 or flatten.end_dim != -1:
        raise ValueError(f"layer {f} ({layers[f][0]}): Flatten(start_dim={flatten.start_dim}, end_dim="
                         f"{flatten.end_dim}) is not the usual per-sample flatten; use nn.Flatten()")
    param = next(classifier.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    out: OrderedDict[str, nn.Module] = OrderedDict()
    x = torch.zeros(1, in_channels, h, w, device=device, dtype=dtype)
    modes = {m: m.training for m in classifier.modules()}
    classifier.eval()
    with torch.no_grad():
        for i, (name, m) in enumerate(layers[:f]):
            if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
                out[name] = _adaptive_to_fixed(m, tuple(x.shape[-2:]))
                x = out[name](x)
                continue
            if isinstance(m, (nn.Linear, nn.Flatten, nn.BatchNorm1d)):
                raise ValueError(f"layer {i} ({name}: {type(m).__name__}) comes before the Flatten; a Linear there "
                                 "acts on the width axis, not on channels. Put all Linear layers after the Flatten")
            if not isinstance(m, SPATIAL) and not _is_convolutional_block(m):
                raise ValueError(f"cannot convert layer {i} ({name}: {type(m).__name__}): before the Flatten only "
                                 f"convolutional layers are allowed ({', '.join(t.__name__ for t in SPATIAL)}, or "
                                 "blocks built from them)")
            out[name] = copy.deepcopy(m)
            x = m(x)
        if x.dim() != 4:
            raise ValueError(f"the layers before the Flatten must give a 4-D map [N, C, h, w], got {tuple(x.shape)}")
        channels, kh, kw = x.shape[1:]
        first = True
        for i, (name, m) in enumerate(layers[f + 1:], start=f + 1):
            if isinstance(m, nn.Linear):
                if first:
                    out[name] = linear_to_conv(m, channels, (kh, kw))     # FC over C x kh x kw -> kh x kw conv
                    first = False
                else:
                    out[name] = linear_to_conv(m, m.in_features, 1)       # FC -> 1x1 conv
            elif isinstance(m, nn.BatchNorm1d):
                bn = nn.BatchNorm2d(m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                                    track_running_stats=m.track_running_stats).to(device=device, dtype=dtype)
                bn.load_state_dict(m.state_dict())
                out[name] = bn
            elif isinstance(m, ELEMENTWISE) or isinstance(m, nn.Softmax) and m.dim in (1, -1):
                out[name] = nn.Softmax(dim=1) if isinstance(m, nn.Softmax) else copy.deepcopy(m)
            else:
                raise ValueError(f"cannot convert layer {i} ({name}: {type(m).__name__}) after the Flatten: only "
                                 "Linear, BatchNorm1d, Softmax(dim=1) and element-wise layers "
                                 f"({', '.join(t.__name__ for t in ELEMENTWISE)}) have a convolutional twin")
        if first:
            raise ValueError("no Linear layer after the Flatten: nothing to convert")
    fcn = nn.Sequential(out)
    fcn.eval()
    if check:
        probe = torch.rand(2, in_channels, h, w, device=device, dtype=dtype, generator=None)
        with torch.no_grad():
            want = classifier(probe)
            got = fcn(probe)
        if got.shape[-2:] != (1, 1) or got.shape[:2] != want.shape:
            raise ValueError(f"converted network gives {tuple(got.shape)} on a {h}x{w} input, expected "
                             f"{tuple(want.shape)} x 1 x 1; is input_size the size the classifier was built for?")
        err = (got[..., 0, 0] - want).abs().max().item()
        if err > atol:
            raise ValueError(f"converted network differs from the classifier by {err:.3g} (> atol={atol}); a layer "
                             "before the Flatten probably is not convolutional (it depends on the input size)")
    for m, mode in modes.items():
        m.training = mode
    return fcn


def _is_convolutional_block(m: nn.Module) -> bool:
    """A module whose every leaf is a spatial layer (e.g. torchvision's InvertedResidual)."""
    leaves = [c for c in m.modules() if len(list(c.children())) == 0]
    return bool(leaves) and all(isinstance(c, SPATIAL) for c in leaves)


# ----------------------------------------------------------------------------- geometry
def receptive_field_of(layers: list[tuple[int, int]]) -> tuple[int, int]:
    """(receptive field, jump) of a chain of layers given as (kernel, stride) pairs, in input pixels.

    >>> receptive_field_of([(3, 1), (2, 2), (3, 1), (2, 2)])   # conv, pool, conv, pool
    (10, 4)
    """
    rf, jump = 1, 1
    for i, layer in enumerate(layers):
        if len(layer) != 2 or min(layer) < 1:
            raise ValueError(f"layer {i}: expected a (kernel, stride) pair of positive ints, got {layer!r}")
        kernel, stride = layer
        rf += (kernel - 1) * jump      # each new tap reaches `jump` input pixels further
        jump *= stride
    return rf, jump


def layer_geometry(model: nn.Module) -> list[dict]:
    """Receptive field and jump (output stride) after every Conv2d / pooling layer, in module order.

    rf_out = rf_in + (kernel - 1) * dilation * jump_in;  jump_out = jump_in * stride.
    Valid for chains of layers (residual shortcuts that skip a block do not change the result).
    """
    rows, rf, jump = [], 1, 1
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k = pair(m.kernel_size)[0]
            s = pair(m.stride if m.stride is not None else m.kernel_size)[0]
            d = pair(getattr(m, "dilation", 1))[0]
            rf = rf + (k - 1) * d * jump
            jump = jump * s
            rows.append({"layer": name, "type": type(m).__name__, "kernel": k, "stride": s,
                         "receptive_field": rf, "jump": jump})
    return rows


def receptive_field(model: nn.Module) -> tuple[int, int]:
    """(receptive field, output stride) in input pixels, from :func:`layer_geometry`."""
    rows = layer_geometry(model)
    return (rows[-1]["receptive_field"], rows[-1]["jump"]) if rows else (1, 1)


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of the Conv2d and Linear layers for one input of ``input_shape`` (C, H, W).

    Pooling, activations and normalisation are not counted (they are a small share).
    """
    total = 0

    def conv_hook(m, inp, out):
        nonlocal total
        kh, kw = pair(m.kernel_size)
        total += out[0].numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m, inp, out):
        nonlocal total
        total += out[0].numel() * m.in_features

    hooks = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(linear_hook) for m in model.modules() if isinstance(m, nn.Linear)]
    param = next(model.parameters())
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype))
    finally:
        for hk in hooks:
            hk.remove()
    return total


# ----------------------------------------------------------------------------- dense labels back
@torch.no_grad()
def coarse_scores(fcn: nn.Module, image: torch.Tensor, patch_size: int) -> torch.Tensor:
    """One pass over the reflect-padded image float[3, H, W]: float[classes, ceil(H/s), ceil(W/s)].

    Entry (i, j) is the patch classifier's score for pixel (s*i, s*j), s the output stride.
    """
    padded = pad_for_patches(image, patch_size)[None]
    return fcn(padded)[0]


@torch.no_grad()
def shift_and_stitch(fcn: nn.Module, image: torch.Tensor, patch_size: int, stride: int) -> torch.Tensor:
    """Dense scores float[classes, H, W] from ``stride**2`` passes over shifted copies of the image.

    Shifting the padded input by (dy, dx) moves the output grid to pixels (s*i + dy, s*j + dx);
    interleaving the ``s x s`` outputs gives every pixel (Overfeat; Long et al. 2015 §3.2).
    A batch float[N, 3, H, W] gives float[N, classes, H, W].
    """
    if image.dim() not in (3, 4):
        raise ValueError(f"image must be [C, H, W] or [N, C, H, W], got shape {tuple(image.shape)}")
    single = image.dim() == 3
    h, w = image.shape[-2:]
    padded = pad_for_patches(image[None] if single else image, patch_size)   # (N, C, H+P-1, W+P-1)
    dense = None
    for dy in range(stride):
        for dx in range(stride):
            if dy >= h or dx >= w:
                continue
            out = fcn(padded[:, :, dy:, dx:])                          # (N, classes, ceil((H-dy)/s), ...)
            if dense is None:
                dense = out.new_zeros(out.shape[0], out.shape[1], h, w)
            n_y, n_x = len(range(dy, h, stride)), len(range(dx, w, stride))
            dense[..., dy::stride, dx::stride] = out[..., :n_y, :n_x]
    return dense[0] if single else dense


@torch.no_grad()
def dense_labels_fully_convolutional(classifier: nn.Sequential, images: torch.Tensor, patch_size: int,
                                     device: torch.device | str = "cpu", batch_size: int = 16) -> torch.Tensor:
    """The per-pixel patch loop's labels int64[N, H, W] for images float[N, 3, H, W], computed fast.

    The patch classifier is converted to its fully convolutional twin (:func:`to_fully_convolutional`)
    and run with :func:`shift_and_stitch`: every pixel gets the classifier's score for its own
    reflect-padded patch, as in ``patch.dense_labels_by_patches``, with the work of overlapping patches
    shared (equal up to float rounding; lesson 02 measures both).
    """
    if images.dim() != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
    fcn = to_fully_convolutional(classifier, patch_size, in_channels=images.shape[1])
    _, stride = receptive_field(fcn)
    return torch.cat([shift_and_stitch(fcn, images[i:i + batch_size].to(device), patch_size, stride).argmax(1).cpu()
                      for i in range(0, len(images), batch_size)])


@torch.no_grad()
def upsample_scores(coarse: torch.Tensor, stride: int, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of a coarse score map float[classes, h, w] whose sample (i, j) sits at pixel (s*i, s*j).

    Returns float[classes, H, W]; pixel y reads the coarse map at y / s (edge values repeated past the end).
    Lesson 05 makes this upsampling learnable (a transposed convolution initialised bilinearly).
    """
    c, hc, wc = coarse.shape
    ext = F.pad(coarse[None], (0, 1, 0, 1), mode="replicate")         # (1, c, hc+1, wc+1)
    up = F.interpolate(ext, size=(hc * stride + 1, wc * stride + 1), mode="bilinear", align_corners=True)
    return up[0, :, :size[0], :size[1]]


# ----------------------------------------------------------------------------- ImageNet MobileNetV2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_CAT_CLASSES = (281, 282, 283, 284, 285)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def mobilenet_v2_as_sequential(model: nn.Module) -> nn.Sequential:
    """torchvision's MobileNetV2 written as features -> global average pool -> Flatten -> classifier."""
    if not hasattr(model, "features") or not hasattr(model, "classifier"):
        raise ValueError(f"expected a torchvision MobileNetV2 (with .features and .classifier), "
                         f"got {type(model).__name__}")
    return nn.Sequential(OrderedDict([("features", model.features), ("pool", nn.AdaptiveAvgPool2d(1)),
                                      ("flatten", nn.Flatten()), *model.classifier.named_children()]))


def imagenet_input(image: np.ndarray, size: tuple[int, int] | None = None) -> torch.Tensor:
    """uint8[H, W, 3] -> normalised float[1, 3, H', W'] (bilinear resize to ``size`` = (H', W') if given)."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be uint8[H, W, 3], got {img.dtype}{list(img.shape)}")
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div(255)[None]
    if size is not None:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def class_probability_map(fcn: nn.Module, x: torch.Tensor, classes=IMAGENET_CAT_CLASSES) -> torch.Tensor:
    """Softmax over the class axis of the score map, summed over ``classes``: float[h, w] in [0, 1]."""
    scores = fcn(x.to(next(fcn.parameters()).device))                    # (1, 1000, h, w)
    return scores.softmax(1)[0, list(classes)].sum(0).cpu()


def window_extent(map_shape: tuple[int, int], stride: int, window: int) -> tuple[float, float, float, float]:
    """matplotlib ``extent`` that draws cell (i, j) of a score map as the stride x stride square centred on
    its window ``[s*i, s*i + window)`` in input pixels."""
    h, w = map_shape
    first = (window - 1) / 2 - stride / 2
    return (first, first + w * stride, first + h * stride, first)


def output_side(n: int, window: int, stride: int) -> int:
    """Number of window positions along a side of ``n`` pixels: floor((n - window) / stride) + 1."""
    if n < window:
        return 0
    return math.floor((n - window) / stride) + 1
