"""Multi-scale convolutional features (Farabet, Couprie, Najman & LeCun, TPAMI 2013).

The image is resized to several scales (an image pyramid). One small CNN, with
the *same weights* at every scale, turns each level into a feature map; the
maps are upsampled to the finest feature map and concatenated, and a per-pixel
classifier (1×1 convolutions) labels every pixel. A pixel's feature vector then
describes a small window at full resolution *and* windows 2×, 4×, … larger at
the coarser levels: context for free, without more parameters in the CNN.

The pyramid is a plain low-pass one: every level is a smoothed, smaller copy of the image, and the
network only centres its input. Farabet et al. use a Laplacian pyramid and normalise the local
contrast of every level (zero mean, unit standard deviation over each neighbourhood); the course
keeps the simpler pyramid, its scenes being already in [0, 1].

The baseline :func:`single_scale_baseline` is the same CNN applied to the
full-resolution image only, with a wider classifier so that both networks have
the same number of parameters (within 1 %). What differs is the mechanism:
context from the coarser scales.

Models take images float[N, 3, H, W] in [0, 1] (any H, W >= 2) and return
logits float[N, num_classes, H, W].
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .metrics import IGNORE_INDEX
from .scenes import NUM_CLASSES
from .training import count_parameters

# ----------------------------------------------------------------------------- the pyramid


def image_pyramid(x: torch.Tensor, num_scales: int = 3) -> list[torch.Tensor]:
    """Level k is ``x`` shrunk by 2**k (bilinear with antialiasing), k = 0 .. num_scales-1.

    A plain low-pass pyramid, not Farabet et al.'s Laplacian pyramid with local contrast normalisation.

    x (Tensor[N, C, H, W]) -> [Tensor[N, C, H, W], Tensor[N, C, H//2, W//2], Tensor[N, C, H//4, W//4], ...]
    Odd sizes round down; a level is never smaller than 1×1.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"image_pyramid: x must be a tensor [N, C, H, W], got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not isinstance(num_scales, int) or num_scales < 1:
        raise ValueError(f"image_pyramid: num_scales must be an int >= 1, got {num_scales!r}")
    H, W = x.shape[-2:]
    levels = [x]
    for k in range(1, num_scales):
        size = (max(1, H // 2 ** k), max(1, W // 2 ** k))
        levels.append(F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True))
    return levels


def upsample_and_concat(features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Resize every feature map to ``size`` (bilinear) and stack them along the channels.

    features: [Tensor[N, C_k, h_k, w_k], ...] -> Tensor[N, sum(C_k), size[0], size[1]]
    """
    if not features:
        raise ValueError("upsample_and_concat: features is empty; pass one feature map per scale")
    size = (int(size[0]), int(size[1]))
    ups = [f if tuple(f.shape[-2:]) == size else
           F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in features]
    return torch.cat(ups, dim=1)


# ----------------------------------------------------------------------------- the networks


def conv_features(in_channels: int, width: int) -> nn.Sequential:
    """A small CNN: conv3×3 → max-pool 2 → conv3×3 → conv3×3 → max-pool 2 (BatchNorm + ReLU after each conv).

    Tensor[N, in_channels, H, W] -> Tensor[N, 2 * width, H // 4, W // 4]. Receptive field: 14 pixels,
    deliberately small: on its own it sees a patch of a large item, not the item.
    """
    if in_channels < 1 or width < 1:
        raise ValueError(f"conv_features: in_channels and width must be >= 1, got {in_channels}, {width}")

    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    return nn.Sequential(*block(in_channels, width), nn.MaxPool2d(2),
                         *block(width, 2 * width), *block(2 * width, 2 * width), nn.MaxPool2d(2))


def pixel_classifier(in_channels: int, hidden: int, num_classes: int) -> nn.Sequential:
    """Two 1×1 convolutions: a small MLP applied to every pixel's feature vector."""
    return nn.Sequential(nn.Conv2d(in_channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, num_classes, 1))


@dataclass(frozen=True)
class MultiScaleConfig:
    """The recipe of lesson 03: sizes of a :class:`MultiScaleNet` and how it trains.

    num_scales: pyramid levels (1 = single scale). width: channels of the CNN's first convs
    (its output has 2 * width). hidden: channels of the per-pixel classifier.
    epochs, lr, batch_size: training. class_balance: power of the inverse-frequency class weights of
    the loss (Farabet et al.; 0 = unweighted), see :func:`class_weights`.
    """

    num_classes: int = NUM_CLASSES
    num_scales: int = 3
    width: int = 16
    hidden: int = 64
    epochs: int = 6
    lr: float = 3e-3
    batch_size: int = 16
    class_balance: float = 0.5

    def __post_init__(self):
        for name in ("num_classes", "num_scales", "width", "hidden", "epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < (2 if name == "num_classes" else 1):
                raise ValueError(f"MultiScaleConfig.{name} must be a positive int, got {v!r}")

    @classmethod
    def from_profile(cls, profile, **changes) -> "MultiScaleConfig":
        """The lesson's recipe for ``profile``; scales go down to a coarsest level of about 16 pixels
        (64 px -> 3 scales, 128 px -> 4). ``changes`` override fields (shown in the calling cell)."""
        num_scales = max(2, int(np.log2(profile.image_size / 16)) + 1)
        base = dict(num_scales=num_scales, width=max(4, profile.width // 2), hidden=2 * profile.width,
                    epochs=profile.epochs + 4, lr=1e-2, batch_size=max(8, profile.batch_size // 2))
        return cls(**{**base, **changes})


class MultiScaleNet(nn.Module):
    """Farabet-style multi-scale network: pyramid → shared CNN → upsample + concat → per-pixel classifier.

    forward(x (Tensor[N, 3, H, W])) -> {"out": logits Tensor[N, num_classes, H, W]} (torchvision's contract).
    With ``num_scales=1`` it is a plain single-scale network.
    """

    def __init__(self, config: MultiScaleConfig = MultiScaleConfig(), in_channels: int = 3):
        super().__init__()
        self.config = config
        self.features = conv_features(in_channels, config.width)        # ONE set of weights for all scales
        self.classifier = pixel_classifier(config.num_scales * 2 * config.width, config.hidden, config.num_classes)

    def scale_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The shared CNN applied to each pyramid level: [Tensor[N, 2w, H/4, W/4], Tensor[N, 2w, H/8, W/8], ...]."""
        if x.dim() != 4 or min(x.shape[-2:]) < 4:
            raise ValueError(f"MultiScaleNet: expected images [N, C, H, W] with H, W >= 4, got {tuple(x.shape)}")
        return [self.features(level) for level in image_pyramid(x - 0.5, self.config.num_scales)]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.scale_features(x)
        fused = upsample_and_concat(feats, feats[0].shape[-2:])           # (N, S * 2w, H/4, W/4)
        logits = self.classifier(fused)                                   # (N, C, H/4, W/4)
        return {"out": F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)}  # (N, C, H, W)


def multiscale_net(config: MultiScaleConfig) -> MultiScaleNet:
    """The multi-scale network of ``config``."""
    return MultiScaleNet(config)


def single_scale_baseline(config: MultiScaleConfig) -> MultiScaleNet:
    """The same CNN on the full-resolution image only, its classifier widened to match the parameter count.

    The hidden width is chosen so that the baseline and ``multiscale_net(config)`` differ by as few
    parameters as possible (well under 1 % at the course's sizes).
    """
    target = count_parameters(MultiScaleNet(config))
    best, best_gap = config.hidden, None
    f = 2 * config.width
    # classifier params for hidden h: (f + 1) h + (h + 1) C; everything else is the same CNN
    other = target - ((config.num_scales * f + 1) * config.hidden + (config.hidden + 1) * config.num_classes)
    for h in range(1, 64 * config.hidden + 1):
        gap = abs(other + (f + 1) * h + (h + 1) * config.num_classes - target)
        if best_gap is None or gap < best_gap:
            best, best_gap = h, gap
    return MultiScaleNet(MultiScaleConfig(**{**config.__dict__, "num_scales": 1, "hidden": best}))


# ----------------------------------------------------------------------------- measuring


def empirical_receptive_field(model, in_channels: int = 3, size: int = 64, batch: int = 8, seed: int = 0) -> int:
    """Side (pixels) of the input window that reaches the centre output pixel, found by autograd.

    ``model`` maps Tensor[N, in_channels, size, size] to Tensor[N, C, size, size] (any callable).
    The gradient of the centre logits with respect to the input is nonzero exactly inside the
    receptive field (summed over a batch of random images so that max-pooling and ReLU cannot hide
    a pixel). Returns the larger of its height and width. Runs the model in eval mode.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, in_channels, size, size, generator=g, requires_grad=True)
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()  # BatchNorm in training mode mixes pixels through the batch statistics
    try:
        out = model(x)
    finally:
        if was_training:
            model.train()
    out = out["out"] if isinstance(out, dict) else out
    out[:, :, size // 2, size // 2].abs().sum().backward()
    hit = (x.grad.abs().sum(dim=(0, 1)) > 0).nonzero()
    if len(hit) == 0:
        return 0
    extent = hit.max(0).values - hit.min(0).values + 1
    return int(extent.max())


SIZE_BUCKETS = {"small": (0.0, 0.2), "medium": (0.2, 0.3), "large": (0.3, float("inf"))}


def size_bucket_targets(semantic: np.ndarray, instances: np.ndarray, areas: np.ndarray,
                        buckets: dict = SIZE_BUCKETS, ignore_index: int = IGNORE_INDEX) -> dict[str, np.ndarray]:
    """One target per object-size bucket: the pixels of objects of other sizes set to ``ignore_index``.

    An object's size is sqrt(visible area) / image side (Scene.areas). Background stays in every
    target, so each bucket's mIoU counts both missed object pixels and false alarms on background.
    semantic, instances: uint8[H, W]; areas: int[N]. Returns {bucket name: int64[H, W]}.
    """
    if semantic.shape != instances.shape:
        raise ValueError(f"semantic {semantic.shape} and instances {instances.shape} must have the same shape")
    side = np.sqrt(semantic.size)
    rel = np.sqrt(np.asarray(areas, dtype=np.float64)) / side
    out = {}
    for name, (lo, hi) in buckets.items():
        t = semantic.astype(np.int64).copy()
        for k, r in enumerate(rel, start=1):
            if not (lo <= r < hi):
                t[instances == k] = ignore_index
        out[name] = t
    return out


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 64) -> torch.Tensor:
    """Class probabilities of a segmentation model (``{"out": logits}``) for images float[N, 3, H, W]:
    float[N, C, H, W] on the CPU."""
    model.eval()
    outs = []
    for i in range(0, len(images), batch_size):
        outs.append(model(images[i:i + batch_size].to(device))["out"].float().softmax(1).cpu())
    return torch.cat(outs)


def report_by_size(pred: torch.Tensor, scenes, num_classes: int = NUM_CLASSES, buckets: dict = SIZE_BUCKETS) -> dict:
    """Metrics of label maps ``pred`` int[N, H, W] for scenes 0..N-1 of ``scenes`` (a CourseScenes).

    Returns {"all": {...}, "small": {...}, "medium": {...}, "large": {...}}; each holds miou,
    pixel_acc, boundary_acc (all) or miou and object_acc (share of the bucket's object pixels labelled
    with their class) for the size buckets.
    """
    from .metrics import BoundaryAccuracy, ConfusionMatrix

    if pred.dim() != 3 or len(pred) != len(scenes):
        raise ValueError(f"pred must be int[N, H, W] with N = len(scenes) = {len(scenes)}, got {tuple(pred.shape)}")
    overall, ba = ConfusionMatrix(num_classes), BoundaryAccuracy(2)
    per = {name: ConfusionMatrix(num_classes) for name in buckets}
    hits = {name: [0, 0] for name in buckets}
    for i in range(len(pred)):
        s = scenes.scene(i)
        target = torch.from_numpy(s.semantic.astype(np.int64))
        overall.update(pred[i], target)
        ba.update(pred[i], target)
        for name, t in size_bucket_targets(s.semantic, s.instances, s.areas, buckets).items():
            t = torch.from_numpy(t)
            per[name].update(pred[i], t)
            obj = (t != IGNORE_INDEX) & (t != 0)
            hits[name][0] += int((pred[i][obj] == t[obj]).sum())
            hits[name][1] += int(obj.sum())
    out = {"all": {**overall.compute(), "boundary_acc": ba.compute()}}
    for name in buckets:
        out[name] = {**per[name].compute(), "object_acc": hits[name][0] / max(hits[name][1], 1),
                     "pixels": hits[name][1]}
    return out


# ----------------------------------------------------------------------------- training


def class_weights(masks: torch.Tensor, num_classes: int, power: float = 0.5,
                  ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Class-frequency balancing of the loss (Farabet et al. §4): weight_c ∝ (1 / frequency_c) ** power.

    masks: int[N, H, W]. Classes that never occur get the largest weight of those that do. The weights are scaled
    so that their pixel-weighted mean is 1 (the loss keeps its usual size). Returns float32[num_classes].
    """
    m = masks[masks != ignore_index].reshape(-1).long()
    if m.numel() == 0:
        raise ValueError("class_weights: masks hold no labelled pixel")
    freq = torch.bincount(m, minlength=num_classes)[:num_classes].double() / m.numel()
    w = torch.where(freq > 0, freq.clamp(min=1e-12) ** -power, torch.zeros_like(freq))
    w = torch.where(freq > 0, w, w.max())
    w = w / (w * freq).sum()
    return w.float()
