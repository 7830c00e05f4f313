"""Recurrent refinement (Pinheiro & Collobert, "Recurrent Convolutional Neural Networks for Scene Labeling",
ICML 2014).

One CNN, with the same weights at every iteration, takes the image *and its own
previous class-probability map* and outputs refined logits:

    p_0 = uniform,   logits_t = cnn([image, p_{t-1}]),   p_t = softmax(logits_t)

Each pass can only look a few tens of pixels around a pixel (three poolings),
but the probabilities it reads already summarise a window around every
neighbour, so the context grows with every iteration. The network is trained
unrolled over several iterations (a loss after each, gradients flowing through
all of them) and can be run for any number of iterations afterwards.

Models take images float[N, 3, H, W] in [0, 1] and return logits float[N, C, H, W].
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .metrics import IGNORE_INDEX, BoundaryAccuracy, ConfusionMatrix, labels_from_scores
from .multiscale import conv_features, pixel_classifier
from .scenes import NUM_CLASSES


@dataclass(frozen=True)
class RefinementConfig:
    """The recipe of lesson 04: sizes of a :class:`RecurrentRefiner` and how it trains.

    width: channels of the CNN's first convs; hidden: per-pixel classifier channels;
    train_iterations: how many times the CNN is unrolled during training; epochs, lr, batch_size:
    training; class_balance: power of the inverse-frequency class weights (0 = unweighted).
    """

    num_classes: int = NUM_CLASSES
    width: int = 16
    hidden: int = 64
    train_iterations: int = 3
    epochs: int = 6
    lr: float = 3e-3
    batch_size: int = 16
    class_balance: float = 0.5

    def __post_init__(self):
        for name in ("num_classes", "width", "hidden", "train_iterations", "epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < (2 if name == "num_classes" else 1):
                raise ValueError(f"RefinementConfig.{name} must be a positive int, got {v!r}")

    @classmethod
    def from_profile(cls, profile, **changes) -> "RefinementConfig":
        """The lesson's recipe for ``profile``; ``changes`` override fields (shown in the calling cell)."""
        base = dict(width=profile.width, hidden=4 * profile.width, train_iterations=3, epochs=profile.epochs + 4,
                    lr=1e-2, batch_size=max(8, profile.batch_size // 2))
        return cls(**{**base, **changes})


def refinement_features(in_channels: int, width: int) -> nn.Sequential:
    """Lesson 03's small CNN followed by a third pooling stage (max-pool 2, conv3×3 + BatchNorm + ReLU).

    Tensor[N, in_channels, H, W] -> Tensor[N, 2 * width, H // 8, W // 8]. Like the paper's per-iteration network,
    it pools, so one pass sees a window of a few tens of pixels: enough to tell many garments apart, not enough to
    see the largest items and their neighbours whole; the iterations add the rest of the context.
    """
    return nn.Sequential(*conv_features(in_channels, width), nn.MaxPool2d(2),
                         nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width),
                         nn.ReLU(inplace=True))


class RefinementCNN(nn.Module):
    """The CNN applied at every iteration: Tensor[N, 3 + C, H, W] (image + probabilities) -> logits [N, C, H, W]."""

    def __init__(self, num_classes: int, width: int, hidden: int, in_channels: int = 3):
        super().__init__()
        self.features = refinement_features(in_channels + num_classes, width)   # (N, 2w, H/8, W/8)
        self.classifier = pixel_classifier(2 * width, hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.features(x))                          # (N, C, H/8, W/8)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def refinement_step(cnn: nn.Module, image: torch.Tensor, prev_logits: torch.Tensor) -> torch.Tensor:
    """One iteration: ``cnn`` applied to the image stacked with the softmax of the previous logits.

    image (Tensor[N, 3, H, W]), prev_logits (Tensor[N, C, H, W]) -> logits Tensor[N, C, H, W].
    """
    if image.shape[0] != prev_logits.shape[0] or image.shape[-2:] != prev_logits.shape[-2:]:
        raise ValueError(f"refinement_step: image {tuple(image.shape)} and prev_logits {tuple(prev_logits.shape)} "
                         "must agree in N, H and W")
    probs = prev_logits.softmax(dim=1)                                     # (N, C, H, W)
    return cnn(torch.cat([image - 0.5, probs], dim=1))                     # (N, C, H, W)


class RecurrentRefiner(nn.Module):
    """Pinheiro & Collobert's recurrent CNN: the same :class:`RefinementCNN` applied ``iterations`` times.

    forward(x, iterations=None) -> {"out": the last iteration's logits} (``config.train_iterations`` by default;
    torchvision's output contract, like every segmentation model of the course);
    forward_all(x, iterations) -> the logits after every iteration, a list of ``iterations`` tensors.
    Iteration 1 starts from uniform probabilities (all-zero logits): it is the plain network.
    """

    def __init__(self, config: RefinementConfig = RefinementConfig(), in_channels: int = 3):
        super().__init__()
        self.config = config
        self.cnn = RefinementCNN(config.num_classes, config.width, config.hidden, in_channels)

    def initial_logits(self, x: torch.Tensor) -> torch.Tensor:
        """All-zero logits (uniform probabilities): Tensor[N, C, H, W]."""
        return x.new_zeros(x.shape[0], self.config.num_classes, *x.shape[-2:])

    def forward_all(self, x: torch.Tensor, iterations: int | None = None) -> list[torch.Tensor]:
        iterations = self.config.train_iterations if iterations is None else iterations
        if not isinstance(iterations, (int, np.integer)) or iterations < 1:
            raise ValueError(f"iterations must be an int >= 1 (1 = the plain network), got {iterations!r}")
        if x.dim() != 4 or min(x.shape[-2:]) < 8:
            raise ValueError(f"RecurrentRefiner: expected images [N, 3, H, W] with H, W >= 8 (the network pools three "
                             f"times), got {tuple(x.shape)}")
        logits = self.initial_logits(x)
        outs = []
        for _ in range(int(iterations)):
            logits = refinement_step(self.cnn, x, logits)                  # same weights every time
            outs.append(logits)
        return outs

    def forward(self, x: torch.Tensor, iterations: int | None = None) -> dict[str, torch.Tensor]:
        return {"out": self.forward_all(x, iterations)[-1]}


def unrolled_loss(logits_per_iteration: list[torch.Tensor], target: torch.Tensor,
                  ignore_index: int = IGNORE_INDEX, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over iterations of the pixel cross-entropy: every iteration must be a good labelling.

    ``weight`` (float[C]): optional class weights (see :func:`lecturelib.multiscale.class_weights`).
    """
    if not logits_per_iteration:
        raise ValueError("unrolled_loss: logits_per_iteration is empty; run at least one iteration")
    losses = [F.cross_entropy(lg, target, weight=weight, ignore_index=ignore_index) for lg in logits_per_iteration]
    return torch.stack(losses).mean()


@torch.no_grad()
def evaluate_iterations(model: RecurrentRefiner, loader, device: torch.device, num_classes: int,
                        iterations: int) -> list[dict]:
    """Metrics after iteration 1, 2, ..., ``iterations`` (one pass over ``loader``): a list of dicts with
    pixel_acc, iou, miou, boundary_acc."""
    model.eval()
    cms = [ConfusionMatrix(num_classes) for _ in range(iterations)]
    bas = [BoundaryAccuracy(2) for _ in range(iterations)]
    for images, targets in loader:
        for t, logits in enumerate(model.forward_all(images.to(device), iterations)):
            pred = labels_from_scores(logits).cpu()
            cms[t].update(pred, targets)
            bas[t].update(pred, targets)
    return [{**cm.compute(), "boundary_acc": ba.compute()} for cm, ba in zip(cms, bas)]


def flops_per_iteration(model: RecurrentRefiner, image_size: int, max_iterations: int = 3) -> list[int]:
    """Floating-point operations of one image through 1 .. max_iterations iterations (torch's FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device)
    model.eval()
    out = []
    for k in range(1, max_iterations + 1):
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x, iterations=k)
        out.append(int(counter.get_total_flops()))
    return out


def single_pass_config(config: RefinementConfig, iterations: int | None = None,
                       image_size: int = 64) -> RefinementConfig:
    """The equal-compute, non-recurrent baseline of ``config``: one pass of a wider network.

    Returns ``config`` with ``train_iterations=1`` and ``width`` and ``hidden`` scaled by the same factor, the
    integer width whose floating-point operations per image (at ``image_size``; the ratio hardly depends on
    it) come closest to ``iterations`` (default ``config.train_iterations``) iterations of ``config``'s network.
    It sees no previous prediction, so any gain of the recurrent model over it comes from the feedback
    loop, not from the extra compute.
    """
    iterations = config.train_iterations if iterations is None else iterations
    target = flops_per_iteration(RecurrentRefiner(config), image_size, iterations)[-1]
    best = None
    for width in range(config.width, 4 * config.width + 1):
        candidate = dataclasses.replace(config, width=width, train_iterations=1,
                                        hidden=max(1, round(config.hidden * width / config.width)))
        flops = flops_per_iteration(RecurrentRefiner(candidate), image_size, 1)[0]
        if best is None or abs(flops - target) < best[0]:
            best = (abs(flops - target), candidate)
        if flops > target:
            break
    return best[1]


def seconds_per_iteration(model: RecurrentRefiner, images: torch.Tensor, max_iterations: int = 3,
                          repeat: int = 3) -> list[float]:
    """Best wall time (s) of inference on ``images`` with 1 .. max_iterations iterations."""
    model.eval()
    times = []
    with torch.no_grad():
        for k in range(1, max_iterations + 1):
            model(images, iterations=k)           # warm-up
            best = float("inf")
            for _ in range(repeat):
                if images.is_cuda:
                    torch.cuda.synchronize()
                t = time.perf_counter()
                model(images, iterations=k)
                if images.is_cuda:
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - t)
            times.append(best)
    return times
