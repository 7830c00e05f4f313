"""Learnable upsampling initialised as bilinear interpolation (FCN's recipe, Long et al. CVPR 2015)."""
from __future__ import annotations

import torch
import torch.nn as nn


def bilinear_kernel(in_channels: int, out_channels: int, kernel_size: int) -> torch.Tensor:
    """Weight float32[in_channels, out_channels, k, k] of a ``ConvTranspose2d`` that upsamples bilinearly.

    Channel i is mapped to channel i with a separable triangle ("tent") filter; other pairs get 0.
    With stride f, use kernel_size = 2f - f % 2 and padding = ceil((f - 1) / 2) (or crop).
    """
    if kernel_size < 1:
        raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
    if in_channels < 1 or out_channels < 1:
        raise ValueError(f"channel counts must be >= 1, got in={in_channels}, out={out_channels}")
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float64)
    filt1d = 1 - (og - center).abs() / factor
    filt = filt1d[:, None] * filt1d[None, :]
    weight = torch.zeros(in_channels, out_channels, kernel_size, kernel_size, dtype=torch.float64)
    for i in range(min(in_channels, out_channels)):
        weight[i, i] = filt
    return weight.float()


def bilinear_upsampler(channels: int, factor: int, learnable: bool = True) -> nn.ConvTranspose2d:
    """A ``ConvTranspose2d`` (no bias) that multiplies height and width by ``factor``, bilinear at init.

    Output size is exactly ``factor *`` input size: kernel 2f - f % 2, stride f, padding ceil((f-1)/2),
    output_padding chosen to make up the difference.
    """
    if not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be a positive int, got {factor!r}")
    k = 2 * factor - factor % 2
    pad = (factor - 1 + 1) // 2
    # out = (n - 1) f - 2 pad + k + output_padding  ==  n f   =>  output_padding = 2 pad + f - k
    out_pad = 2 * pad + factor - k
    up = nn.ConvTranspose2d(channels, channels, k, stride=factor, padding=pad, output_padding=out_pad, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, channels, k))
    up.weight.requires_grad_(learnable)
    return up
