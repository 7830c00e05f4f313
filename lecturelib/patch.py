"""Patch classification (lesson 01): extract a patch, run a CNN, classify the centre pixel, repeat.

The patch CNN is built so that it can later be made fully convolutional
*exactly* (lesson 02, :mod:`lecturelib.fully_conv`): only valid (unpadded)
3x3 convolutions and 2x2 max pooling, sized so that one ``P x P`` patch ends
as a ``k x k`` feature map with nothing cropped by the pooling. Its receptive
field is then exactly the patch, and its output stride is ``2 ** stages``.

Centre convention: the patch of pixel ``(y, x)`` covers rows
``y - P // 2 ... y - P // 2 + P - 1`` (the same for columns), so for an odd
``P`` the pixel sits in the middle and for an even ``P`` just below/right of it.
Pixels outside the image are filled by reflect padding.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .metrics import IGNORE_INDEX
from .scenes import NUM_CLASSES


# ----------------------------------------------------------------------------- patches
def padding_for(patch_size: int) -> tuple[int, int]:
    """(before, after): rows/columns added above/left and below/right so every pixel has a full patch."""
    _check_patch_size(patch_size)
    before = patch_size // 2
    return before, patch_size - 1 - before


def pad_for_patches(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Reflect-pad images float[N, C, H, W] (or [C, H, W]) so that pixel (y, x)'s patch starts at (y, x).

    Returns float[N, C, H + P - 1, W + P - 1] (or without N).
    """
    before, after = padding_for(patch_size)
    if images.dim() not in (3, 4):
        raise ValueError(f"images must be [C, H, W] or [N, C, H, W], got shape {tuple(images.shape)}")
    h, w = images.shape[-2:]
    if max(before, after) >= min(h, w):
        raise ValueError(f"patch_size={patch_size} needs reflect padding of {max(before, after)} pixels, which "
                         f"must be smaller than the image side ({h}x{w}); use a smaller patch or a larger image")
    single = images.dim() == 3
    x = images[None] if single else images
    x = F.pad(x, (before, after, before, after), mode="reflect")
    return x[0] if single else x


def extract_patch(image: torch.Tensor, y: int, x: int, patch_size: int) -> torch.Tensor:
    """The patch centred on pixel (y, x) of image float[C, H, W]: float[C, P, P], reflect padding at borders."""
    if image.dim() != 3:
        raise ValueError(f"image must be [C, H, W], got shape {tuple(image.shape)}")
    h, w = image.shape[-2:]
    if not (0 <= y < h and 0 <= x < w):
        raise ValueError(f"pixel (y={y}, x={x}) is outside the {h}x{w} image")
    padded = pad_for_patches(image, patch_size)
    return padded[:, y:y + patch_size, x:x + patch_size]


def extract_patches(padded: torch.Tensor, index: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor,
                    patch_size: int) -> torch.Tensor:
    """Gather a batch of patches from padded images.

    padded (Tensor[N, C, H + P - 1, W + P - 1]): output of :func:`pad_for_patches`.
    index, ys, xs (Tensor[B]): image index and pixel of each patch's centre (original coordinates).
    Returns Tensor[B, C, P, P].
    """
    offsets = torch.arange(patch_size, device=padded.device)
    rows = ys.to(padded.device)[:, None] + offsets                       # (B, P)
    cols = xs.to(padded.device)[:, None] + offsets                       # (B, P)
    hwc = padded.permute(0, 2, 3, 1)                                     # (N, Hp, Wp, C)
    patches = hwc[index.to(padded.device)[:, None, None], rows[:, :, None], cols[:, None, :]]  # (B, P, P, C)
    return patches.permute(0, 3, 1, 2).contiguous()                      # (B, C, P, P)


def sample_centres(masks: torch.Tensor, n: int, generator: torch.Generator, balanced: bool = True,
                   num_classes: int | None = None, ignore_index: int = IGNORE_INDEX):
    """Draw ``n`` patch centres from label maps int[N, H, W].

    balanced=True: every class present gets the same share of the draws (pixels of a class are
    drawn uniformly), so the rare item classes are seen as often as the background.
    balanced=False: pixels are drawn uniformly (the classes in their natural proportions).
    Returns (index, ys, xs, labels), each Tensor[n] (int64).
    """
    if masks.dim() != 3:
        raise ValueError(f"masks must be [N, H, W] label maps, got shape {tuple(masks.shape)}")
    if n < 1:
        raise ValueError(f"n must be >= 1 patch, got {n}")
    flat = masks.reshape(-1)
    valid = flat != ignore_index
    if num_classes is not None:
        valid &= flat < num_classes
    positions = valid.nonzero().squeeze(1)                                   # flat indices of labelled pixels
    if len(positions) == 0:
        raise ValueError("masks hold no labelled pixel to sample from")
    if balanced:
        # a class drawn uniformly among those present, then one of its pixels uniformly: a pixel of
        # class c is drawn with probability 1 / (classes present * pixels of c)
        labels = flat[positions].long()
        order = torch.argsort(labels, stable=True)
        positions = positions[order]
        present, counts = torch.unique_consecutive(labels[order], return_counts=True)
        offsets = torch.cumsum(counts, 0) - counts
        k = torch.randint(len(present), (n,), generator=generator)
        within = (torch.rand(n, generator=generator, dtype=torch.float64) * counts[k]).long().clamp_max(counts[k] - 1)
        pick = positions[offsets[k] + within]
    else:
        pick = positions[torch.randint(len(positions), (n,), generator=generator)]
    h, w = masks.shape[-2:]
    index, rest = pick // (h * w), pick % (h * w)
    ys, xs = rest // w, rest % w
    return index, ys, xs, flat[pick].long()


class PatchBatches:
    """An iterable of (patches float[B, C, P, P], centre labels int64[B]) drawn afresh at every pass.

    It plays the role of a DataLoader for :func:`lecturelib.training.train_one_epoch`.
    """

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, patch_size: int, n_patches: int,
                 batch_size: int, seed: int = 0, balanced: bool = True, num_classes: int | None = None):
        if images.dim() != 4 or masks.dim() != 3 or images.shape[0] != masks.shape[0] \
                or images.shape[-2:] != masks.shape[-2:]:
            raise ValueError(f"need images [N, C, H, W] and masks [N, H, W] of the same N, H, W; got "
                             f"{tuple(images.shape)} and {tuple(masks.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.padded = pad_for_patches(images, patch_size)
        self.masks, self.patch_size = masks, patch_size
        self.n_patches, self.batch_size, self.balanced, self.num_classes = n_patches, batch_size, balanced, num_classes
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(self.n_patches / self.batch_size)

    def __iter__(self):
        index, ys, xs, labels = sample_centres(self.masks, self.n_patches, self.generator, self.balanced,
                                               self.num_classes)
        for start in range(0, self.n_patches, self.batch_size):
            sl = slice(start, start + self.batch_size)
            yield extract_patches(self.padded, index[sl], ys[sl], xs[sl], self.patch_size), labels[sl]


# ----------------------------------------------------------------------------- the patch CNN
def _check_patch_size(patch_size) -> None:
    if not isinstance(patch_size, int) or isinstance(patch_size, bool) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive int, got {patch_size!r}")


def feature_size(patch_size: int, stages: int) -> int | None:
    """Side k of the last feature map for a P x P patch, or None if some pooling would crop a row.

    Each stage is a valid 3x3 convolution (side - 2) then 2x2 max pooling (side / 2).
    """
    side = patch_size
    for _ in range(stages):
        side -= 2
        if side < 2 or side % 2:
            return None
        side //= 2
    return side


def valid_patch_sizes(stages: int, up_to: int = 80) -> list[int]:
    """Patch sizes that a ``stages``-stage patch CNN covers exactly: ``2**stages * k + 2**(stages+1) - 2``."""
    return [p for p in range(1, up_to + 1) if feature_size(p, stages)]


@dataclass(frozen=True)
class PatchCNNConfig:
    """A patch CNN: ``stages`` x (3x3 valid conv, ReLU, 2x2 max pool), then FC -> ReLU -> FC.

    patch_size: side P of the input patch; must be one of :func:`valid_patch_sizes` (stages).
    width: channels of the first stage, doubled at each stage.
    hidden: units of the hidden fully-connected layer.
    """

    patch_size: int = 38
    num_classes: int = NUM_CLASSES
    width: int = 8
    hidden: int = 64
    stages: int = 3
    batch_norm: bool = True

    def __post_init__(self):
        _check_patch_size(self.patch_size)
        if not isinstance(self.stages, int) or self.stages < 1:
            raise ValueError(f"stages must be an int >= 1, got {self.stages!r}")
        if feature_size(self.patch_size, self.stages) is None:
            raise ValueError(f"patch_size={self.patch_size} does not fit a {self.stages}-stage patch CNN exactly "
                             f"(each stage: 3x3 valid conv, then 2x2 pooling of an even side); valid sizes: "
                             f"{valid_patch_sizes(self.stages)[:8]} ...")
        for name in ("num_classes", "width", "hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def stride(self) -> int:
        """Output stride once made fully convolutional: one factor 2 per pooling."""
        return 2 ** self.stages


def patch_cnn(config: PatchCNNConfig) -> nn.Sequential:
    """The patch classifier: float[B, 3, P, P] in [0, 1] -> class scores float[B, num_classes]."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    in_ch, side = 3, config.patch_size
    for s in range(config.stages):
        out_ch = config.width * 2 ** s
        layers[f"conv{s + 1}"] = nn.Conv2d(in_ch, out_ch, 3, bias=not config.batch_norm)  # valid: side - 2
        if config.batch_norm:
            layers[f"bn{s + 1}"] = nn.BatchNorm2d(out_ch)
        layers[f"relu{s + 1}"] = nn.ReLU(inplace=True)
        layers[f"pool{s + 1}"] = nn.MaxPool2d(2)                            # side / 2
        in_ch, side = out_ch, (side - 2) // 2
    layers["flatten"] = nn.Flatten()                                         # (B, C * k * k)
    layers["fc1"] = nn.Linear(in_ch * side * side, config.hidden)
    layers["relu_fc"] = nn.ReLU(inplace=True)
    layers["fc2"] = nn.Linear(config.hidden, config.num_classes)
    return nn.Sequential(layers)


def _num_outputs(model: nn.Module) -> int | None:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else None


# ----------------------------------------------------------------------------- dense labelling
def dense_scores_by_patches(model: nn.Module, image: torch.Tensor, patch_size: int, device: torch.device,
                            batch_size: int = 256, progress: bool = False) -> torch.Tensor:
    """Score every pixel of image float[3, H, W] by classifying its own patch: float[num_classes, H, W].

    The slide's loop: for every pixel, extract its P x P patch and run the CNN on it (in batches of
    ``batch_size`` patches). H * W forward passes of the patch classifier.
    """
    if image.dim() != 3:
        raise ValueError(f"image must be [C, H, W], got shape {tuple(image.shape)}; loop over a batch yourself")
    model.eval()
    h, w = image.shape[-2:]
    padded = pad_for_patches(image.to(device), patch_size)[None]          # (1, C, H+P-1, W+P-1)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)                                 # (H*W,) every pixel
    zero = torch.zeros_like(ys)                                             # all from image 0
    chunks = []
    with torch.no_grad():
        for start in tqdm(range(0, h * w, batch_size), desc="pixels", disable=not progress, leave=False):
            sl = slice(start, start + batch_size)
            patches = extract_patches(padded, zero[sl], ys[sl], xs[sl], patch_size)   # (B, C, P, P)
            chunks.append(model(patches).float().cpu())                              # (B, num_classes)
    scores = torch.cat(chunks)                                                        # (H*W, num_classes)
    return scores.t().reshape(-1, h, w)


@torch.no_grad()
def dense_labels_by_patches(model: nn.Module, images: torch.Tensor, patch_size: int, device: torch.device,
                            batch_size: int = 256, progress: bool = False) -> torch.Tensor:
    """Label maps int64[N, H, W] of images float[N, 3, H, W] by the per-pixel patch loop."""
    if images.dim() != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
    out = []
    for img in tqdm(images, desc=f"dense labelling (P={patch_size})", disable=not progress, leave=False):
        out.append(dense_scores_by_patches(model, img, patch_size, device, batch_size).argmax(0))
    return torch.stack(out)


# ----------------------------------------------------------------------------- redundant work
def conv_output_count(patch_size: int, stages: int, height: int, width: int) -> list[dict]:
    """Per stage: conv outputs (per channel) the per-pixel loop computes vs. the distinct ones among them.

    The loop computes, for each of the H * W patches, every conv output of the patch: a ``side x side``
    map at stage s. Neighbouring patches overlap, so they compute outputs at the same image position
    again. At stage s (jump J = 2**s pixels between outputs) the patch at row offset y covers rows
    ``y, y + J, ..., y + J (side - 1)``; over all y in 0..H-1 that is ``H + min(J, H) (side - 1)``
    distinct rows (and the same for columns).
    """
    if feature_size(patch_size, stages) is None:
        raise ValueError(f"patch_size={patch_size} does not fit a {stages}-stage patch CNN exactly")
    rows = []
    side = patch_size
    for s in range(stages):
        side -= 2                                  # valid 3x3 conv
        jump = 2 ** s
        computed = height * width * side * side
        distinct = (height + min(jump, height) * (side - 1)) * (width + min(jump, width) * (side - 1))
        rows.append({"stage": s + 1, "map_per_patch": side, "computed": computed, "distinct": distinct,
                     "redundant_fraction": 1 - distinct / computed})
        side //= 2                                 # 2x2 pooling
    return rows


# ----------------------------------------------------------------------------- the lesson's sizes
@dataclass(frozen=True)
class PatchLessonConfig:
    """The recipe of lessons 01-02 (one per profile, :meth:`from_profile`): model sizes and training.

    patch_sizes: the contexts compared (all fit a 2-stage patch CNN exactly). width / hidden / stages:
    the patch CNN. equal_params: give every patch size (near) the same number of parameters as the
    largest one at ``hidden`` units, by widening the hidden layer of the smaller patches (their last
    feature map is smaller, so their first fully-connected layer is smaller); the comparison of patch
    sizes is then one of context, not of capacity. n_patches: fresh class-balanced patches per epoch;
    epochs, batch_size, lr: training. eval_pixels: test pixels drawn uniformly for the metrics;
    dense_scenes: test scenes labelled densely.
    """

    num_classes: int = NUM_CLASSES
    patch_sizes: tuple[int, ...] = (10, 22, 38)
    stages: int = 2
    width: int = 8
    hidden: int = 64
    equal_params: bool = True
    n_patches: int = 20_480
    epochs: int = 3
    batch_size: int = 128
    lr: float = 5e-3
    eval_pixels: int = 16_384
    dense_scenes: int = 8

    @classmethod
    def from_profile(cls, profile, **changes) -> "PatchLessonConfig":
        base = dict(width=max(4, profile.width // 2), hidden=4 * profile.width, n_patches=40 * profile.n_train,
                    epochs=max(3, profile.epochs // 2), batch_size=4 * profile.batch_size,
                    eval_pixels=128 * profile.n_test, dense_scenes=max(4, profile.n_test // 16))
        return cls(**{**base, **changes})

    def hidden_for(self, patch_size: int) -> int:
        """Hidden units of the patch CNN for ``patch_size``: ``hidden``, or the parameter-matching width.

        With ``equal_params`` the hidden layer is widened until the model has as many parameters as the
        one of the largest patch size at ``hidden`` units (within one hidden unit's worth).
        """
        if not self.equal_params:
            return self.hidden
        channels = self.width * 2 ** (self.stages - 1)

        def per_unit(p):            # parameters one hidden unit adds: fc1 row + bias + fc2 column
            return channels * feature_size(p, self.stages) ** 2 + 1 + self.num_classes

        budget = self.hidden * per_unit(max(self.patch_sizes))
        return max(1, round(budget / per_unit(patch_size)))

    def model_config(self, patch_size: int) -> PatchCNNConfig:
        """The :class:`PatchCNNConfig` of the patch CNN for patches of side ``patch_size``."""
        return PatchCNNConfig(patch_size=patch_size, num_classes=self.num_classes, width=self.width,
                              hidden=self.hidden_for(patch_size), stages=self.stages)


@torch.no_grad()
def evaluate_sampled_pixels(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, patch_size: int,
                            device: torch.device, num_classes: int, n_pixels: int, seed: int = 0,
                            batch_size: int = 256) -> dict:
    """Metrics of the per-pixel classifier on ``n_pixels`` test pixels drawn uniformly from all images.

    Classifying a pixel is exactly what dense labelling does for that pixel, so this is an unbiased
    estimate of the dense-labelling confusion matrix, from many more scenes for the same cost.
    Returns pixel_acc, iou, miou, class_acc (from one confusion matrix).
    """
    from .metrics import ConfusionMatrix

    model.eval()
    batches = PatchBatches(images, masks, patch_size, n_pixels, batch_size, seed=seed, balanced=False)
    cm = ConfusionMatrix(num_classes)
    for patches, labels in batches:
        cm.update(model(patches.to(device)).argmax(1).cpu(), labels)
    return cm.compute()
