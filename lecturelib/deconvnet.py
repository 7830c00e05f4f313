"""DeconvNet (Noh, Hong & Han, ICCV 2015): an "upside-down VGG" decoder with max-unpooling.

The encoder is the VGG-like backbone of :mod:`lecturelib.fcn` (five conv blocks, each
followed by a 2x2 max-pool) whose pools also return their *switches*: the position of
the maximum inside every 2x2 window. The decoder mirrors it block by block:

    unpool (put each value back where its maximum came from, zeros elsewhere)
    -> "deconvolution" layers (3x3 transposed convolutions, stride 1) that densify the sparse map

so the output has the input's size without any interpolation. fc6/fc7 are 3x3 and 1x1
convolutions and the decoder starts with their mirror, a 3x3 transposed convolution.
(The paper's fc6 is a 7x7 "valid" convolution on 224-pixel inputs that leaves a 1x1 map;
"same" padding here keeps every input size of at least 32 pixels working.)
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .fcn import MIN_SIZE, VGGConfig, check_input, vgg_block


def max_unpool(values: torch.Tensor, indices: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Max-unpooling written as a scatter: the inverse of ``F.max_pool2d(..., return_indices=True)``.

    values (Tensor[N, C, h, w]): pooled values (or anything computed at the pooled size).
    indices (int64 Tensor[N, C, h, w]): the switches, flat positions ``row * W + col`` in the
        unpooled [H, W] plane of the same sample and channel.
    size: (H, W) of the map before pooling.
    Returns Tensor[N, C, H, W]: each value at its switch, zeros elsewhere (same as ``F.max_unpool2d``).
    """
    if values.shape != indices.shape:
        raise ValueError(f"max_unpool: values {tuple(values.shape)} and indices {tuple(indices.shape)} "
                         "must have the same shape (use the indices of the pooling that made values)")
    H, W = int(size[0]), int(size[1])
    n, c = values.shape[:2]
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= H * W):
        raise ValueError(f"max_unpool: indices must lie in [0, {H * W}) for size {(H, W)}; "
                         "pass the size of the map before pooling")
    out = values.new_zeros(n, c, H * W)                                   # (N, C, H*W)
    out = out.scatter(2, indices.reshape(n, c, -1), values.reshape(n, c, -1))
    return out.reshape(n, c, H, W)                                        # (N, C, H, W)


def deconv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    """A 3x3 transposed convolution (stride 1, padding 1: same size), BN and ReLU."""
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 3, stride=1, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def deconv_block(cin: int, cout: int, n: int) -> nn.Sequential:
    """The mirror of a VGG block: ``n`` deconvolution layers, the last one changing cin -> cout channels."""
    return nn.Sequential(*[deconv_bn_relu(cin, cout if i == n - 1 else cin) for i in range(n)])


class DeconvNet(nn.Module):
    """forward(x (Tensor[N, 3, H, W])) -> {"out": logits Tensor[N, num_classes, H, W]}."""

    def __init__(self, num_classes: int, config: VGGConfig | None = None):
        super().__init__()
        config = config or VGGConfig()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.config = config
        enc, cin = [], config.in_channels
        for b in range(5):
            enc.append(vgg_block(cin, config.channels(b), config.convs[b]))
            cin = config.channels(b)
        self.encoder = nn.ModuleList(enc)
        fc = config.width * config.fc_mult
        self.fc6 = nn.Sequential(nn.Conv2d(cin, fc, 3, padding=1), nn.ReLU(inplace=True))
        self.fc7 = nn.Sequential(nn.Conv2d(fc, fc, 1), nn.ReLU(inplace=True))
        self.deconv_fc6 = deconv_bn_relu(fc, cin)
        # decoder block b mirrors encoder block b: channels(b) -> channels(b - 1) (the first keeps its width)
        self.decoder = nn.ModuleList(
            deconv_block(config.channels(b), config.channels(max(b - 1, 0)), config.convs[b]) for b in range(5))
        self.score = nn.Conv2d(config.channels(0), num_classes, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_input(x, "DeconvNet", MIN_SIZE)
        switches, sizes = [], []
        for block in self.encoder:
            x = block(x)
            sizes.append(x.shape[-2:])
            x, idx = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)   # (N, C_b, ceil(h/2), ceil(w/2))
            switches.append(idx)
        x = self.deconv_fc6(self.fc7(self.fc6(x)))                                # (N, C_4, H/32, W/32)
        for b in reversed(range(5)):
            x = max_unpool(x, switches[b], sizes[b])                              # (N, C_b, 2h, 2w): sparse
            x = self.decoder[b](x)                                                # dense, C_(b-1) channels
        return {"out": self.score(x)}                                             # (N, K, H, W)


def deconvnet(num_classes: int, width: int = 16, in_channels: int = 3,
              config: VGGConfig | None = None) -> DeconvNet:
    """DeconvNet on the same VGG-like encoder as :func:`lecturelib.fcn.fcn32s` (same ``width`` / ``config``)."""
    return DeconvNet(num_classes, config or VGGConfig(width=width, in_channels=in_channels))
