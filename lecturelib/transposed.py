"""Transposed convolution three ways: scatter, gather and matrix (lesson 05).

All three compute exactly what ``F.conv_transpose2d`` computes:

* :func:`conv_transpose_scatter` -- "input gives weight for filter, sum where output
  overlaps": every input value scales the kernel, and the scaled kernel is added into
  the output where it lands (a Python loop over the input pixels).
* :func:`conv_transpose_gather` -- an ordinary stride-1 convolution over the
  zero-inserted input, padded by ``dilation * (k - 1) - padding`` on each side, with the
  spatially flipped kernel and input/output channels swapped (vectorised).
* :func:`conv_transpose_matrix` -- write the *forward* convolution as a matrix ``C``
  (:func:`conv_matrix`); the transposed convolution is multiplication by ``C.T``.
* :func:`conv_transpose_autograd` -- the gradient of ``F.conv2d`` with respect to its
  input: "the same as the backward pass of a normal convolution".

Weights use PyTorch's ``ConvTranspose2d`` layout ``[C_in, C_out / groups, kH, kW]``, which
is also the ``Conv2d`` layout ``[C_out', C_in' / groups, kH, kW]`` of the convolution it
transposes (that convolution maps ``C_out`` channels back to ``C_in``).

The module also holds the helpers of the lesson's last part: overlap-count maps,
a checkerboard-energy measure and two small upsamplers (transposed convolution versus
resize-then-convolve) trained on course scenes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .metrics import psnr  # noqa: F401  (lesson 05 reports it: T.psnr)


# ----------------------------------------------------------------------------- sizes
def pair(value, name: str = "value") -> tuple[int, int]:
    """An int or a pair of ints -> (height value, width value). Raises ValueError naming ``name`` otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def conv_output_size(n: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Side of a convolution's output: ``floor((n + 2p - d(k - 1) - 1) / s) + 1``."""
    _check_int(n, "input size n", 1)
    _check_int(kernel_size, "kernel_size", 1)
    _check_int(stride, "stride", 1)
    _check_int(padding, "padding", 0)
    _check_int(dilation, "dilation", 1)
    span = dilation * (kernel_size - 1) + 1
    if n + 2 * padding < span:
        raise ValueError(f"the kernel (span {span} = dilation*(kernel_size-1)+1) does not fit in the padded input "
                         f"(n + 2*padding = {n + 2 * padding}); use a smaller kernel or dilation or more padding")
    return (n + 2 * padding - span) // stride + 1


def conv_transpose_output_size(n: int, kernel_size: int, stride: int = 1, padding: int = 0,
                               output_padding: int = 0, dilation: int = 1) -> int:
    """Side of a transposed convolution's output.

    ``out = (n - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1``

    The scattered kernels cover ``(n - 1) * stride + dilation * (kernel_size - 1) + 1`` cells (the
    "full" output); ``padding`` crops that many cells from each side, ``output_padding`` adds cells at
    the bottom/right. Raises ``ValueError`` for settings PyTorch rejects.
    """
    _check_int(n, "input size n", 1)
    _check_int(kernel_size, "kernel_size", 1)
    _check_int(stride, "stride", 1)
    _check_int(padding, "padding", 0)
    _check_int(output_padding, "output_padding", 0)
    _check_int(dilation, "dilation", 1)
    if output_padding >= max(stride, dilation):
        raise ValueError(f"output_padding ({output_padding}) must be smaller than stride ({stride}) or dilation "
                         f"({dilation}): it only picks one of the input sizes that a stride-{stride} convolution "
                         f"maps to the same output size")
    out = (n - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1
    if out < 1:
        full = (n - 1) * stride + dilation * (kernel_size - 1) + 1 + output_padding   # output_padding included
        raise ValueError(f"padding={padding} crops {2 * padding} cells from a {full}-cell full output, leaving an "
                         f"output of {out} cells; use padding <= {(full - 1) // 2}")
    return out


def gather_padding(kernel_size: int, padding: int, dilation: int = 1) -> int:
    """Padding of the gather view: ``dilation * (kernel_size - 1) - padding`` (negative means: crop)."""
    return dilation * (kernel_size - 1) - padding


@dataclass(frozen=True)
class _Geometry:
    stride: tuple[int, int]
    padding: tuple[int, int]
    output_padding: tuple[int, int]
    dilation: tuple[int, int]
    kernel: tuple[int, int]
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    groups: int


def _geometry(x: torch.Tensor, weight: torch.Tensor, stride, padding, output_padding, dilation, groups) -> _Geometry:
    """Validate the arguments shared by every view; return the per-axis settings and sizes."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a Tensor[N, C_in, H, W], got {getattr(x, 'shape', type(x).__name__)}; "
                         "add a batch dimension with x[None]")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        raise ValueError(f"weight must be a Tensor[C_in, C_out/groups, kH, kW], got "
                         f"{getattr(weight, 'shape', type(weight).__name__)}")
    _check_int(groups, "groups", 1)
    if x.shape[1] != weight.shape[0]:
        raise ValueError(f"x has {x.shape[1]} channels but weight expects {weight.shape[0]} "
                         f"(weight layout is [C_in, C_out/groups, kH, kW])")
    if x.shape[1] % groups:
        raise ValueError(f"groups={groups} must divide the {x.shape[1]} input channels")
    s, p = pair(stride, "stride"), pair(padding, "padding")
    op, d = pair(output_padding, "output_padding"), pair(dilation, "dilation")
    k = (int(weight.shape[2]), int(weight.shape[3]))
    in_hw = (int(x.shape[2]), int(x.shape[3]))
    out_hw = tuple(conv_transpose_output_size(in_hw[a], k[a], s[a], p[a], op[a], d[a]) for a in range(2))
    return _Geometry(s, p, op, d, k, in_hw, out_hw, groups)


def _add_bias(y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    if bias is None:
        return y
    if bias.shape != (y.shape[1],):
        raise ValueError(f"bias must have shape ({y.shape[1]},), one value per output channel; got {tuple(bias.shape)}")
    return y + bias[None, :, None, None]


# ----------------------------------------------------------------------------- view (a): scatter
def conv_transpose_scatter(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1,
                           padding=0, output_padding=0, dilation=1, groups: int = 1) -> torch.Tensor:
    """Transposed convolution by scattering: each input value scales the kernel; overlaps are summed.

    Args:
        x (Tensor[N, C_in, H, W]), weight (Tensor[C_in, C_out/groups, kH, kW]), bias (Tensor[C_out] or None).
    Returns:
        Tensor[N, C_out, H_out, W_out], equal to ``F.conv_transpose2d`` with the same arguments.
    """
    g = _geometry(x, weight, stride, padding, output_padding, dilation, groups)
    (sh, sw), (ph, pw), (dh, dw), (kh, kw) = g.stride, g.padding, g.dilation, g.kernel
    N, C_in, H, W = x.shape
    G = groups
    c_out_g = weight.shape[1]
    # the "full" output: every scattered kernel fits; output_padding adds cells at the bottom/right
    full_h = (H - 1) * sh + dh * (kh - 1) + 1 + g.output_padding[0]
    full_w = (W - 1) * sw + dw * (kw - 1) + 1 + g.output_padding[1]
    full = x.new_zeros(N, G, c_out_g, full_h, full_w)
    xg = x.reshape(N, G, C_in // G, H, W)
    wg = weight.reshape(G, C_in // G, c_out_g, kh, kw)
    for i in range(H):
        for j in range(W):
            # input pixel (i, j) of every channel scales its kernel: (N, G, C_out/G, kH, kW)
            scaled = torch.einsum("ngc,gcdab->ngdab", xg[:, :, :, i, j], wg)
            # ... and lands at rows i*s, i*s + d, ..., columns j*s, j*s + d, ...
            full[:, :, :, i * sh: i * sh + dh * (kh - 1) + 1: dh, j * sw: j * sw + dw * (kw - 1) + 1: dw] += scaled
    # padding crops the full output on every side
    out_h, out_w = g.out_hw
    y = full[:, :, :, ph: ph + out_h, pw: pw + out_w].reshape(N, G * c_out_g, out_h, out_w)
    return _add_bias(y, bias)


# ----------------------------------------------------------------------------- view (b): gather
def zero_insert(x: torch.Tensor, stride=2) -> torch.Tensor:
    """Put ``stride - 1`` zeros between neighbouring pixels: Tensor[N, C, H, W] -> [N, C, (H-1)s+1, (W-1)s+1]."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a Tensor[N, C, H, W], got {getattr(x, 'shape', type(x).__name__)}")
    sh, sw = pair(stride, "stride")
    if sh < 1 or sw < 1:
        raise ValueError(f"stride must be >= 1, got {stride!r}")
    N, C, H, W = x.shape
    z = x.new_zeros(N, C, (H - 1) * sh + 1, (W - 1) * sw + 1)
    z[:, :, ::sh, ::sw] = x
    return z


def gather_input(x: torch.Tensor, kernel_size, stride=1, padding=0, output_padding=0, dilation=1) -> torch.Tensor:
    """The input the gather view convolves: zero-inserted, then padded by ``d(k-1) - p`` on every side
    (plus ``output_padding`` at the bottom/right). Negative padding crops. Tensor[N, C, H', W']."""
    kh, kw = pair(kernel_size, "kernel_size")
    (ph, pw), (oph, opw), (dh, dw) = pair(padding, "padding"), pair(output_padding, "output_padding"), \
        pair(dilation, "dilation")
    z = zero_insert(x, stride)
    qh, qw = gather_padding(kh, ph, dh), gather_padding(kw, pw, dw)
    return F.pad(z, (qw, qw + opw, qh, qh + oph))  # F.pad crops where the padding is negative


def conv_transpose_gather(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1,
                          padding=0, output_padding=0, dilation=1, groups: int = 1,
                          skip_zeros: bool = False) -> torch.Tensor:
    """Transposed convolution by gathering: a stride-1 convolution of the zero-inserted, padded input
    with the flipped kernel (channels swapped). Vectorised: windows by ``Tensor.unfold``, one ``einsum``.

    With ``skip_zeros=True`` the products with inserted zeros (a share 1 - 1/s² of them) are skipped: output
    cells of the same phase (row mod s, column mod s) meet the input through the same kernel taps, so each
    phase is a small stride-1 gather over the original input (:func:`_gather_by_phase`). Same result, s² times
    less arithmetic; it brings the gather view close to ``F.conv_transpose2d``'s speed, though not level with
    it (lesson 05 times both).

    Args:
        x (Tensor[N, C_in, H, W]), weight (Tensor[C_in, C_out/groups, kH, kW]), bias (Tensor[C_out] or None).
    Returns:
        Tensor[N, C_out, H_out, W_out], equal to ``F.conv_transpose2d``.
    """
    g = _geometry(x, weight, stride, padding, output_padding, dilation, groups)
    if skip_zeros:
        return _add_bias(_gather_by_phase(x, weight, g), bias)
    (dh, dw), (kh, kw) = g.dilation, g.kernel
    N, C_in = x.shape[:2]
    G = groups
    z = gather_input(x, g.kernel, g.stride, g.padding, g.output_padding, g.dilation)  # (N, C_in, H', W')
    # every kH x kW window (spaced by the dilation) of z: (N, C_in, H_out, W_out, kH, kW)
    windows = z.unfold(2, dh * (kh - 1) + 1, 1).unfold(3, dw * (kw - 1) + 1, 1)[..., ::dh, ::dw]
    windows = windows.reshape(N, G, C_in // G, *windows.shape[2:])
    flipped = weight.flip(-2, -1).reshape(G, C_in // G, weight.shape[1], kh, kw)
    y = torch.einsum("ngchwab,gcdab->ngdhw", windows, flipped)
    return _add_bias(y.reshape(N, -1, *g.out_hw), bias)


def _phase_taps(r: int, stride: int, padding: int, dilation: int, k: int) -> list[tuple[int, int]]:
    """(tap t, input offset c) of the taps that reach output cells o = r + stride*m: input m + c."""
    return [(t, (r + padding - dilation * t) // stride) for t in range(k)
            if (r + padding - dilation * t) % stride == 0]


def _gather_by_phase(x: torch.Tensor, weight: torch.Tensor, g: _Geometry) -> torch.Tensor:
    """The gather view without the inserted zeros: one contraction per output phase, no loop over pixels."""
    N, C_in, H, W = x.shape
    G, c_out_g = g.groups, weight.shape[1]
    (sh, sw), (ph, pw), (dh, dw), (kh, kw) = g.stride, g.padding, g.dilation, g.kernel
    out_h, out_w = g.out_hw
    # pad the input once so that every tap's shifted window exists (the padding is zeros: no contribution)
    lo_h, hi_h = dh * (kh - 1) // sh + 1, max(0, out_h // sh + (ph + sh) // sh + 1 - H)
    lo_w, hi_w = dw * (kw - 1) // sw + 1, max(0, out_w // sw + (pw + sw) // sw + 1 - W)
    xp = F.pad(x, (lo_w, hi_w, lo_h, hi_h)).reshape(N, G, C_in // G, H + lo_h + hi_h, W + lo_w + hi_w)
    wg = weight.reshape(G, C_in // G, c_out_g, kh, kw)
    y = x.new_zeros(N, G, c_out_g, out_h, out_w)
    for rh in range(min(sh, out_h)):
        mh = len(range(rh, out_h, sh))                       # output rows rh, rh + s, ... read input rows m + c
        for rw in range(min(sw, out_w)):
            mw = len(range(rw, out_w, sw))
            taps = [(th, ch, tw, cw) for th, ch in _phase_taps(rh, sh, ph, dh, kh)
                    for tw, cw in _phase_taps(rw, sw, pw, dw, kw)]
            if not taps:
                continue
            # (N, G, C_in/G, taps, mh, mw): the input under every tap of this phase
            windows = torch.stack([xp[..., lo_h + ch: lo_h + ch + mh, lo_w + cw: lo_w + cw + mw]
                                   for _, ch, _, cw in taps], dim=3)
            taps_w = torch.stack([wg[:, :, :, th, tw] for th, _, tw, _ in taps], dim=2)   # (G, C_in/G, taps, C_out/G)
            y[..., rh::sh, rw::sw] = torch.einsum("ngcthw,gctd->ngdhw", windows, taps_w)
    return y.reshape(N, G * c_out_g, out_h, out_w)


# ----------------------------------------------------------------------------- view (c): matrix
def conv_matrix(weight: torch.Tensor, in_size, stride=1, padding=0, dilation=1, groups: int = 1,
                out_size=None) -> torch.Tensor:
    """The convolution ``F.conv2d(·, weight, stride, padding, dilation, groups)`` as an explicit matrix C.

    Args:
        weight (Tensor[C_out, C_in/groups, kH, kW]): conv2d weight.
        in_size: input (H, W) (or an int).
        out_size: output (H_out, W_out); default: the convolution's own output size. A smaller value keeps
            only the first rows/columns of outputs (used when the transposed convolution had output_padding).
    Returns:
        Tensor[C_out * H_out * W_out, C_in * H * W] with ``C @ x.flatten() == conv2d(x).flatten()``
        for a single image x (Tensor[C_in, H, W]).
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        raise ValueError(f"weight must be a Tensor[C_out, C_in/groups, kH, kW], got "
                         f"{getattr(weight, 'shape', type(weight).__name__)}")
    _check_int(groups, "groups", 1)
    H, W = pair(in_size, "in_size")
    (sh, sw), (ph, pw), (dh, dw) = pair(stride, "stride"), pair(padding, "padding"), pair(dilation, "dilation")
    C_out, c_in_g, kh, kw = weight.shape
    if C_out % groups:
        raise ValueError(f"groups={groups} must divide the {C_out} output channels of the convolution")
    C_in = c_in_g * groups
    if out_size is None:
        out_size = (conv_output_size(H, kh, sh, ph, dh), conv_output_size(W, kw, sw, pw, dw))
    Ho, Wo = pair(out_size, "out_size")
    # dense [C_out, C_in, kH, kW] weight: zero between channels of different groups
    dense = weight.new_zeros(C_out, C_in, kh, kw)
    c_out_g = C_out // groups
    for grp in range(groups):
        dense[grp * c_out_g:(grp + 1) * c_out_g, grp * c_in_g:(grp + 1) * c_in_g] = \
            weight[grp * c_out_g:(grp + 1) * c_out_g]
    # every (output position, kernel tap) pair and the input position it reads
    oi, oj, a, b = torch.meshgrid(torch.arange(Ho), torch.arange(Wo), torch.arange(kh), torch.arange(kw),
                                  indexing="ij")
    ii, jj = oi * sh - ph + a * dh, oj * sw - pw + b * dw
    inside = (ii >= 0) & (ii < H) & (jj >= 0) & (jj < W)
    oi, oj, a, b, ii, jj = (t[inside] for t in (oi, oj, a, b, ii, jj))
    C = weight.new_zeros(Ho, Wo, H, W, C_out, C_in)
    C[oi, oj, ii, jj] = dense.permute(2, 3, 0, 1)[a, b]      # each (oi, oj, ii, jj) is hit at most once
    return C.permute(4, 0, 1, 5, 2, 3).reshape(C_out * Ho * Wo, C_in * H * W)


def conv_transpose_matrix(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1,
                          padding=0, output_padding=0, dilation=1, groups: int = 1) -> torch.Tensor:
    """Transposed convolution as ``C.T @ x``, C being the matrix of the convolution it transposes.

    The convolution maps an image of the transposed convolution's *output* size back to the input size,
    with the same weight tensor, so ``C`` has shape [C_in*H*W, C_out*H_out*W_out].
    """
    g = _geometry(x, weight, stride, padding, output_padding, dilation, groups)
    N = x.shape[0]
    C = conv_matrix(weight, g.out_hw, g.stride, g.padding, g.dilation, groups, out_size=g.in_hw)
    y = x.reshape(N, -1) @ C            # (N, C_in*H*W) @ (C_in*H*W, C_out*H_out*W_out) == (C.T @ x.T).T
    return _add_bias(y.reshape(N, -1, *g.out_hw), bias)


def conv_transpose_autograd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1,
                            padding=0, output_padding=0, dilation=1, groups: int = 1) -> torch.Tensor:
    """Transposed convolution as the gradient of ``F.conv2d`` with respect to its input.

    For ``z`` of the output size, ``conv2d(z)`` has the input's size; the gradient of
    ``<conv2d(z), x>`` with respect to ``z`` is ``C.T @ x``: the transposed convolution of x.
    """
    g = _geometry(x, weight, stride, padding, output_padding, dilation, groups)
    N = x.shape[0]
    with torch.enable_grad():
        z = torch.zeros(N, weight.shape[1] * groups, *g.out_hw, dtype=x.dtype, device=x.device, requires_grad=True)
        y = F.conv2d(z, weight.detach(), None, g.stride, g.padding, g.dilation, groups)
        H, W = g.in_hw
        (grad,) = torch.autograd.grad((y[:, :, :H, :W] * x.detach()).sum(), z)
    return _add_bias(grad, bias)


VIEWS = {
    "scatter": conv_transpose_scatter,
    "gather": conv_transpose_gather,
    "gather_skip_zeros": lambda *args: conv_transpose_gather(*args, skip_zeros=True),
    "matrix": conv_transpose_matrix,
    "autograd": conv_transpose_autograd,
}


def conv_transpose(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
                   output_padding=0, dilation=1, groups: int = 1, view: str = "gather") -> torch.Tensor:
    """Transposed convolution computed by one of the views ``'scatter'``, ``'gather'``, ``'matrix'``, ``'autograd'``."""
    if view not in VIEWS:
        raise KeyError(f"unknown view {view!r}; choose one of {sorted(VIEWS)}")
    return VIEWS[view](x, weight, bias, stride, padding, output_padding, dilation, groups)


# ----------------------------------------------------------------------------- checkerboard artifacts
def overlap_counts(in_size: int, kernel_size: int, stride: int = 1, padding: int = 0, output_padding: int = 0,
                   dilation: int = 1) -> torch.Tensor:
    """How many (input pixel, kernel tap) pairs write into each output cell: int64[H_out, W_out].

    The transposed convolution of an all-ones input with an all-ones kernel. Uneven counts
    (kernel size not divisible by the stride) are the root of checkerboard artifacts.
    """
    ones = torch.ones(1, 1, in_size, in_size, dtype=torch.float64)
    k = torch.ones(1, 1, kernel_size, kernel_size, dtype=torch.float64)
    counts = conv_transpose_scatter(ones, k, None, stride, padding, output_padding, dilation)
    return counts[0, 0].round().long()


def checkerboard_energy(images: torch.Tensor, period: int = 2) -> float:
    """Share of an image batch's energy that depends on the pixel's position modulo ``period``.

    For every image and channel, average the pixels of each of the ``period x period`` phases
    (rows i mod period, columns j mod period); the variance of those phase means, relative to the
    variance of the pixels, is the checkerboard energy (0 for artifact-free natural images, on average).

    Args:
        images (Tensor[N, C, H, W]) with H and W divisible by ``period``.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a Tensor[N, C, H, W], got {getattr(images, 'shape', type(images).__name__)}")
    N, C, H, W = images.shape
    if H % period or W % period:
        raise ValueError(f"H and W ({H}, {W}) must be divisible by period={period}; crop the images first")
    x = images.double()
    phases = x.reshape(N, C, H // period, period, W // period, period).mean(dim=(2, 4))  # (N, C, p, p)
    phase_var = phases.var(dim=(2, 3), unbiased=False)
    pixel_var = x.var(dim=(2, 3), unbiased=False).clamp_min(1e-12)
    return float((phase_var / pixel_var).mean())


def downsample(images: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Average-pool by ``factor``: Tensor[N, C, H, W] -> [N, C, H/f, W/f]."""
    if images.shape[-1] % factor or images.shape[-2] % factor:
        raise ValueError(f"image size {tuple(images.shape[-2:])} must be divisible by factor={factor}")
    return F.avg_pool2d(images, factor)


class DeconvUpsampler(nn.Module):
    """x2 upsampler: two 3x3 convolutions, then a transposed convolution (kernel 3, stride 2: uneven overlap).

    Tensor[N, 3, H, W] -> Tensor[N, 3, 2H, 2W].
    """

    def __init__(self, width: int = 16, kernel_size: int = 3):
        super().__init__()
        if kernel_size < 2:
            raise ValueError(f"kernel_size must be >= 2 for a x2 transposed convolution, got {kernel_size}")
        pad = (kernel_size - 1) // 2
        # output_padding makes the output exactly 2x: (n-1)*2 - 2*pad + k + op == 2n
        op = 2 * pad + 2 - kernel_size
        if not 0 <= op < 2:
            raise ValueError(f"kernel_size={kernel_size} cannot give an exact x2 output")
        self.features = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(width, 3, kernel_size, stride=2, padding=pad, output_padding=op)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.features(x))  # (N, 3, 2H, 2W)


class ResizeConvUpsampler(nn.Module):
    """x2 upsampler: the same two convolutions, then nearest-neighbour resize and a 3x3 convolution
    (Odena et al., Distill 2016). Tensor[N, 3, H, W] -> Tensor[N, 3, 2H, 2W]."""

    def __init__(self, width: int = 16, mode: str = "nearest"):
        super().__init__()
        if mode not in ("nearest", "bilinear"):
            raise ValueError(f"mode must be 'nearest' or 'bilinear', got {mode!r}")
        self.mode = mode
        self.features = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.conv = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        h = F.interpolate(h, scale_factor=2, mode=self.mode)  # (N, width, 2H, 2W)
        return self.conv(h)


@dataclass(frozen=True)
class UpsamplerConfig:
    """The recipe of lesson 05's x2 upsamplers: their width and how they train.

    width: channels of the two convolutions before the upsampling layer. crop: training images are the
    top-left crop x crop of each scene (smaller inputs, faster steps; None: whole scenes).
    epochs, batch_size, lr: training with Adam at a constant learning rate on the mean squared error.
    """

    width: int = 16
    crop: int | None = 32
    epochs: int = 10
    batch_size: int = 32
    lr: float = 3e-3
    optimizer: str = "adam"
    schedule: str = "constant"

    def __post_init__(self):
        if self.width < 1 or self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"UpsamplerConfig needs width, epochs, batch_size >= 1 and lr > 0; got {self}")
        if self.crop is not None and (self.crop < 2 or self.crop % 2):
            raise ValueError(f"UpsamplerConfig.crop must be an even side >= 2 or None, got {self.crop}")

    @classmethod
    def from_profile(cls, profile, **changes) -> "UpsamplerConfig":
        """About 25 x the profile's epochs in optimizer steps, on crops of half the scene side."""
        steps_per_epoch = max(1, profile.n_train // profile.batch_size)
        base = dict(width=profile.width, crop=profile.image_size // 2, batch_size=profile.batch_size,
                    epochs=math.ceil(25 * profile.epochs / steps_per_epoch))
        return cls(**{**base, **changes})


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 64) -> torch.Tensor:
    """Run ``model`` over ``images`` in batches (eval mode); returns a CPU tensor."""
    model.eval()
    outs = [model(images[i:i + batch_size].to(device)).cpu() for i in range(0, images.shape[0], batch_size)]
    return torch.cat(outs)
