"""Fully convolutional networks with skip connections: FCN-32s, FCN-16s, FCN-8s (Long et al., CVPR 2015).

One VGG-like backbone (five conv blocks, each ending in a 2x2 max-pool, then fc6/fc7
as convolutions), three fusion heads:

    FCN-32s:  score(fc7)                                    -> upsample x32 -> crop
    FCN-16s:  up2(score(fc7)) + score(pool4)                -> upsample x16 -> crop
    FCN-8s:   up2(up2(score(fc7)) + score(pool4)) + score(pool3) -> upsample x8 -> crop

FCN's recipe, as in the paper: the upsampling layers are transposed convolutions
initialised to bilinear interpolation (the 2x ones learned, the final one fixed),
every score layer starts at zero (so a skip adds nothing until it has learned
something: FCN-16s initialised from a trained FCN-32s starts from its predictions),
and coarse maps are cropped to the size of the finer map they are added to.

Crop and offset: Caffe's FCN pads conv1 by 100 pixels and crops every upsampled map
at a layer-specific offset. Here the convolutions are "same"-padded and the pools use
``ceil_mode``, so cell i of a stride-s map covers input pixels [s*i, s*(i+1)) and all
maps are aligned at the top-left corner. Before each transposed convolution the score
map is padded by one cell (replicate), and the result is cropped at offset ``factor``:
the border is then interpolated exactly like ``F.interpolate(mode="bilinear")``. Every
map is finally cropped to the size it must match, so any input of at least 32 pixels
works (odd, even, non-square).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .scenes import NUM_CLASSES
from .upsampling import bilinear_upsampler

MIN_SIZE = 32  # five 2x2 pools: the coarsest map needs at least one full cell


# ----------------------------------------------------------------------------- functional pieces
def crop_to(x: torch.Tensor, size: tuple[int, int], offset: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Crop ``x`` (Tensor[N, C, H, W]) to ``size`` = (h, w) starting at ``offset`` = (top, left)."""
    h, w = int(size[0]), int(size[1])
    top, left = int(offset[0]), int(offset[1])
    if top < 0 or left < 0 or top + h > x.shape[-2] or left + w > x.shape[-1]:
        raise ValueError(f"crop_to: cannot crop a {tuple(x.shape[-2:])} map to {(h, w)} at offset {(top, left)}; "
                         "the map must cover the crop window (upsample more or crop less)")
    return x[..., top:top + h, left:left + w]


def fuse_skip(coarse: torch.Tensor, skip: torch.Tensor, up: nn.Module) -> torch.Tensor:
    """One FCN skip fusion: upsample the coarse scores 2x, crop them to the skip's size, add.

    coarse (Tensor[N, C, h, w]): class scores at stride 2s.
    skip (Tensor[N, C, H, W]): class scores at stride s from a shallower layer (H <= 2h, W <= 2w).
    up: a module that doubles height and width (e.g. :class:`Upsample` with factor 2).
    Returns Tensor[N, C, H, W].
    """
    upsampled = up(coarse)                        # (N, C, 2h, 2w)
    return crop_to(upsampled, skip.shape[-2:]) + skip  # (N, C, H, W)


class Upsample(nn.Module):
    """Transposed convolution (kernel 2f - f % 2, stride f) initialised as bilinear interpolation.

    forward(x (Tensor[N, C, h, w])) -> Tensor[N, C, f*h, f*w]: x is padded by one cell (replicate),
    upsampled, and cropped at offset f, so at initialisation the result equals
    ``F.interpolate(x, scale_factor=f, mode="bilinear", align_corners=False)`` everywhere.

    A learnable upsampler mixes channels (a full C x C kernel, bilinear on the diagonal, as in FCN).
    A fixed one stays bilinear for good, so its off-diagonal kernels stay zero: it is built as a
    grouped (per-channel) transposed convolution, the same function with C times fewer multiplications.
    """

    def __init__(self, channels: int, factor: int, learnable: bool = True):
        super().__init__()
        if not isinstance(factor, int) or factor < 1:
            raise ValueError(f"factor must be a positive int, got {factor!r}")
        self.factor = factor
        if learnable:
            self.up = bilinear_upsampler(channels, factor, learnable=True)
        else:
            full = bilinear_upsampler(1, factor, learnable=False)
            self.up = nn.ConvTranspose2d(channels, channels, full.kernel_size, stride=full.stride,
                                         padding=full.padding, output_padding=full.output_padding,
                                         groups=channels, bias=False)
            with torch.no_grad():
                self.up.weight.copy_(full.weight.expand(channels, 1, *full.kernel_size))
            self.up.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.factor
        h, w = x.shape[-2:]
        y = self.up(F.pad(x, (1, 1, 1, 1), mode="replicate"))  # (N, C, f*(h+2), f*(w+2))
        return crop_to(y, (f * h, f * w), offset=(f, f))


def score_layer(in_channels: int, num_classes: int) -> nn.Conv2d:
    """A 1x1 convolution to class scores, initialised to zero (FCN's score-layer recipe)."""
    conv = nn.Conv2d(in_channels, num_classes, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def check_input(x: torch.Tensor, name: str = "FCN", min_size: int = MIN_SIZE) -> None:
    """Raise ValueError unless ``x`` is a float batch [N, 3, H, W] with H, W >= ``min_size``."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected images Tensor[N, C, H, W], got {shape}; "
                         "add a batch dimension with x[None] for a single image")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected float images in [0, 1], got dtype {x.dtype}; use x.float() / 255")
    h, w = x.shape[-2:]
    if h < min_size or w < min_size:
        raise ValueError(f"{name}: input {h}x{w} is smaller than {min_size}x{min_size} pixels (five 2x2 poolings "
                         f"need at least {min_size}); resize or pad the images to at least {min_size} pixels")


# ----------------------------------------------------------------------------- backbone
@dataclass(frozen=True)
class VGGConfig:
    """A VGG-like backbone: block b has ``convs[b]`` 3x3 conv-BN-ReLU layers with ``width * mult[b]`` channels,
    then a 2x2 max-pool; fc6/fc7 are 3x3 and 1x1 convolutions with ``width * fc_mult`` channels."""

    width: int = 16
    in_channels: int = 3
    convs: tuple[int, ...] = (1, 1, 1, 1, 1)
    mult: tuple[int, ...] = (1, 2, 4, 8, 8)
    fc_mult: int = 16
    dropout: float = 0.0

    def __post_init__(self):
        if not isinstance(self.width, int) or self.width < 1:
            raise ValueError(f"width must be a positive int (channels of the first block), got {self.width!r}")
        if not isinstance(self.in_channels, int) or self.in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {self.in_channels!r}")
        if len(self.convs) != 5 or len(self.mult) != 5 or min(self.convs) < 1:
            raise ValueError("convs and mult must list five blocks (VGG's five pools), each with >= 1 conv")

    def channels(self, block: int) -> int:
        return self.width * self.mult[block]


def conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    """k x k convolution ("same" padding), batch norm, ReLU: Tensor[N, cin, H, W] -> Tensor[N, cout, H, W]."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def vgg_block(cin: int, cout: int, n: int) -> nn.Sequential:
    """``n`` conv-BN-ReLU layers (3x3, same padding): Tensor[N, cin, H, W] -> Tensor[N, cout, H, W]."""
    return nn.Sequential(*[conv_bn_relu(cin if i == 0 else cout, cout) for i in range(n)])


class VGGBackbone(nn.Module):
    """forward(x (Tensor[N, 3, H, W])) -> {"pool3": stride 8, "pool4": stride 16, "fc7": stride 32} feature maps.

    Pools use ``ceil_mode=True``: a stride-s map has ceil(H / s) x ceil(W / s) cells.
    """

    def __init__(self, config: VGGConfig | None = None):
        super().__init__()
        config = config or VGGConfig()
        self.config = config
        blocks, cin = [], config.in_channels
        for b in range(5):
            blocks.append(vgg_block(cin, config.channels(b), config.convs[b]))
            cin = config.channels(b)
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        fc = config.width * config.fc_mult
        self.fc6 = nn.Sequential(conv_bn_relu(cin, fc, 3), nn.Dropout2d(config.dropout))
        self.fc7 = nn.Sequential(conv_bn_relu(fc, fc, 1), nn.Dropout2d(config.dropout))
        self.out_channels = {"pool3": config.channels(2), "pool4": config.channels(3), "fc7": fc}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = {}
        for b, block in enumerate(self.blocks):
            x = self.pool(block(x))           # (N, C_b, ceil(H / 2^(b+1)), ...)
            if b == 2:
                feats["pool3"] = x            # stride 8
            elif b == 3:
                feats["pool4"] = x            # stride 16
        feats["fc7"] = self.fc7(self.fc6(x))  # (N, fc, ceil(H / 32), ceil(W / 32))
        return feats


# ----------------------------------------------------------------------------- fusion heads
class FCNHead(nn.Module):
    """FCN's fusion head for output stride 32, 16 or 8.

    forward(feats, size) -> logits Tensor[N, num_classes, *size]. ``feats`` is the backbone's dict.
    """

    def __init__(self, channels: dict[str, int], num_classes: int, stride: int):
        super().__init__()
        if stride not in (32, 16, 8):
            raise ValueError(f"stride must be 32, 16 or 8 (FCN-32s/16s/8s), got {stride!r}")
        self.stride = stride
        self.score_fr = score_layer(channels["fc7"], num_classes)
        if stride <= 16:
            self.score_pool4 = score_layer(channels["pool4"], num_classes)
            self.up2_fr = Upsample(num_classes, 2, learnable=True)
        if stride == 8:
            self.score_pool3 = score_layer(channels["pool3"], num_classes)
            self.up2_pool4 = Upsample(num_classes, 2, learnable=True)
        self.up_final = Upsample(num_classes, stride, learnable=False)

    def forward(self, feats: dict[str, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        score = self.score_fr(feats["fc7"])                                     # (N, K, H/32, W/32)
        if self.stride <= 16:
            score = fuse_skip(score, self.score_pool4(feats["pool4"]), self.up2_fr)   # (N, K, H/16, W/16)
        if self.stride == 8:
            score = fuse_skip(score, self.score_pool3(feats["pool3"]), self.up2_pool4)  # (N, K, H/8, W/8)
        return crop_to(self.up_final(score), size)                              # (N, K, H, W)


class FCN(nn.Module):
    """Backbone + fusion head; forward(x (Tensor[N, 3, H, W])) -> {"out": logits Tensor[N, K, H, W]}."""

    def __init__(self, backbone: VGGBackbone, head: FCNHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def stride(self) -> int:
        return self.head.stride

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_input(x, f"FCN-{self.stride}s", MIN_SIZE)
        return {"out": self.head(self.backbone(x), x.shape[-2:])}


def fcn(stride: int, num_classes: int, width: int = 16, in_channels: int = 3,
        config: VGGConfig | None = None) -> FCN:
    """FCN with output stride 32, 16 or 8 on a VGG-like backbone.

    The backbone is built first and the heads' new layers afterwards (all zero or bilinear),
    so with the same seed the three variants share their backbone initialisation.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if config is None:
        config = VGGConfig(width=width, in_channels=in_channels)
    backbone = VGGBackbone(config)
    return FCN(backbone, FCNHead(backbone.out_channels, num_classes, stride))


def fcn32s(num_classes: int, width: int = 16, in_channels: int = 3, config: VGGConfig | None = None) -> FCN:
    """FCN-32s: scores from fc7 only, upsampled 32x (fixed bilinear)."""
    return fcn(32, num_classes, width, in_channels, config)


def fcn16s(num_classes: int, width: int = 16, in_channels: int = 3, config: VGGConfig | None = None) -> FCN:
    """FCN-16s: fc7 scores upsampled 2x (learned) plus pool4 scores, upsampled 16x."""
    return fcn(16, num_classes, width, in_channels, config)


def fcn8s(num_classes: int, width: int = 16, in_channels: int = 3, config: VGGConfig | None = None) -> FCN:
    """FCN-8s: the FCN-16s fusion upsampled 2x (learned) plus pool3 scores, upsampled 8x."""
    return fcn(8, num_classes, width, in_channels, config)


def transfer_weights(source: FCN, target: FCN) -> FCN:
    """Staged training (FCN's recipe): copy every parameter ``target`` shares with ``source`` (same name, shape).

    E.g. FCN-16s initialised from a trained FCN-32s: backbone and score_fr are copied and the new
    score_pool4 stays zero, so the fused stride-16 scores are the 2x-upsampled FCN-32s scores and the
    copy starts out predicting what ``source`` predicts (up to x2-then-x16 versus x32 interpolation).
    """
    src = source.state_dict()
    dst = target.state_dict()
    shared = {k: v for k, v in src.items() if k in dst and dst[k].shape == v.shape and "up_final" not in k}
    missing = [k for k in dst if k.startswith("backbone.") and k not in shared]
    if missing:
        raise ValueError(f"transfer_weights: the two models share no backbone parameters ({missing[0]} differs); "
                         "build both with the same width and config")
    target.load_state_dict(shared, strict=False)
    return target


# ----------------------------------------------------------------------------- the lesson's recipe
@dataclass(frozen=True)
class SkipLessonConfig:
    """The recipe of lesson 06, shared by FCN-32s/16s/8s and DeconvNet: one backbone width, one budget.

    width: channels of the backbone's first block (:class:`VGGConfig`). epochs, batch_size, lr: the
    training every model of the lesson gets (AdamW, one-cycle). class_balance: power of the
    inverse-frequency class weights of the loss (as in lessons 03-04; 0 = unweighted): unweighted, the
    coarse FCN-32s settles on predicting background almost everywhere, since background is most pixels.
    """

    num_classes: int = NUM_CLASSES
    width: int = 16
    epochs: int = 18
    batch_size: int = 16
    lr: float = 5e-3
    class_balance: float = 0.5

    @classmethod
    def from_profile(cls, profile, **changes) -> "SkipLessonConfig":
        """The lesson's recipe for ``profile``; ``changes`` override fields (shown in the calling cell)."""
        base = dict(width=profile.width, epochs=3 * profile.epochs, batch_size=max(8, profile.batch_size // 2))
        return cls(**{**base, **changes})

    def vgg(self) -> VGGConfig:
        """The backbone every model of the lesson shares."""
        return VGGConfig(width=self.width)


# ----------------------------------------------------------------------------- what a stride can represent
@torch.no_grad()
def stride_oracle(masks: torch.Tensor, stride: int, num_classes: int) -> torch.Tensor:
    """The best an output stride allows: labels -> class shares per stride x stride cell -> FCN's bilinear upsampling.

    masks (int64 Tensor[N, H, W]): ground-truth label maps (0 .. num_classes - 1).
    Returns int64 Tensor[N, H, W]: the argmax of the cell-wise class frequencies, upsampled with the same fixed
    bilinear :class:`Upsample` the FCN heads use. A network whose scores live on a stride-``stride`` grid can
    hardly do better than this, however well it is trained.
    """
    if masks.dim() != 3 or masks.is_floating_point():
        raise ValueError(f"stride_oracle: masks must be int64 label maps [N, H, W], got {masks.dtype} "
                         f"{tuple(masks.shape)}")
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be a positive int, got {stride!r}")
    if int(masks.min()) < 0 or int(masks.max()) >= num_classes:
        raise ValueError(f"stride_oracle: labels must lie in 0..{num_classes - 1} (no ignore pixels), "
                         f"got {int(masks.min())}..{int(masks.max())}")
    onehot = F.one_hot(masks, num_classes).permute(0, 3, 1, 2).float()            # (N, K, H, W)
    shares = F.avg_pool2d(onehot, stride, stride, ceil_mode=True)                  # (N, K, H/s, W/s)
    up = Upsample(num_classes, stride, learnable=False)(shares)                    # (N, K, ~H, ~W)
    return crop_to(up, masks.shape[-2:]).argmax(1)                                 # (N, H, W)
