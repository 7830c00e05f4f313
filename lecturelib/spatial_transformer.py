"""Spatial transformer networks (Jaderberg, Simonyan, Zisserman & Kavukcuoglu, "Spatial Transformer Networks",
NIPS 2015).

A spatial transformer has three parts:

1. a **localization network** looks at the input and predicts the parameters θ of a transformation, here an
   affine one, ``θ`` float[N, 2, 3], initialised to the identity (the paper's Section 3.1);
2. the **grid generator** maps every pixel of the output to a point of the input (Section 3.2, eq. 1):
   ``(x_in, y_in) = θ · (x_out, y_out, 1)``, in normalised coordinates where the image spans [-1, 1];
3. the **bilinear sampler** reads the input at those (fractional) points, the weighted sum of the four nearest
   pixels (Section 3.3, eq. 5). It is differentiable in the input *and* in the sampling points, so the loss of
   the network after it trains the localization network: the network learns where to look.

:func:`affine_grid` and :func:`grid_sample` are written here from scratch with plain tensor operations; the
tests and the notebook check them against ``F.affine_grid`` and ``F.grid_sample`` (bilinear, zero padding),
forward and backward. **align_corners=False** everywhere (PyTorch's default): -1 and +1 are the outer *edges*
of the first and last pixels, so pixel ``j`` of a side of ``W`` pixels has its centre at ``(2j + 1) / W - 1``;
the same pixel-edge convention as the course's boxes. ``align_corners=True`` (-1 and +1 at the first and last
pixel *centres*) is supported for comparison.

:class:`STNClassifier` is a small classifier that sees an ``out_size`` × ``out_size`` view of the input: with
``stn=True`` a learned spatial transformer chooses that view (a square window that moves and zooms, the paper's
attention transformation, :class:`LocalizationNet`); with ``stn=False`` the view is the whole input resampled at
the same size (θ fixed to the identity), by a classifier at least as large as the whole transformer model
(:func:`matched_width`). Models return ``{"out": logits float[N, num_classes], "theta": float[N, 2, 3]}``.
:func:`translation_gradient` measures where one gradient step would move each window and :func:`loss_towards_item`
the loss as a window slides onto the item (the notebook uses both to show why the window starts smaller than the
image).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

ALIGN_CORNERS = False


# ============================================================================= grid generator and sampler
def _check_theta(theta: torch.Tensor) -> None:
    if not isinstance(theta, torch.Tensor) or theta.dim() != 3 or tuple(theta.shape[1:]) != (2, 3):
        shape = tuple(theta.shape) if isinstance(theta, torch.Tensor) else type(theta).__name__
        raise ValueError(f"theta must be a float tensor [N, 2, 3] (one affine matrix per image), got {shape}; "
                         "for one matrix use theta[None]")
    if not theta.is_floating_point():
        raise ValueError(f"theta must be a floating-point tensor, got {theta.dtype}")


def normalized_coordinates(n: int, align_corners: bool = ALIGN_CORNERS, dtype=torch.float32,
                           device=None) -> torch.Tensor:
    """The normalised coordinates of the ``n`` pixel centres of one side, float[n].

    align_corners=False: ``(2j + 1) / n - 1`` (the edges of the side are -1 and +1);
    align_corners=True: ``2j / (n - 1) - 1`` (the first and last centres are -1 and +1; 0 for n = 1).
    """
    j = torch.arange(n, dtype=dtype, device=device)
    if align_corners:
        return j * (2 / (n - 1)) - 1 if n > 1 else torch.zeros(1, dtype=dtype, device=device)
    return (2 * j + 1) / n - 1


def affine_grid(theta: torch.Tensor, size, align_corners: bool = ALIGN_CORNERS) -> torch.Tensor:
    """The sampling grid of affine transformations (the grid generator), as ``F.affine_grid``.

    theta: float[N, 2, 3]; size: the output's (N, C, H, W). Returns float[N, H, W, 2]: for every output pixel
    (its centre, in normalised coordinates) the input point ``θ · (x, y, 1)``, as (x, y).
    Raises ValueError for theta of another shape or a size whose N differs.
    """
    _check_theta(theta)
    if len(size) != 4 or int(size[0]) != theta.shape[0]:
        raise ValueError(f"size must be (N, C, H, W) with N = {theta.shape[0]} (theta's), got {tuple(size)}")
    H, W = int(size[2]), int(size[3])
    ys = normalized_coordinates(H, align_corners, theta.dtype, theta.device)
    xs = normalized_coordinates(W, align_corners, theta.dtype, theta.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    base = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).reshape(1, H * W, 3)    # (1, HW, 3)
    return (base @ theta.transpose(1, 2)).reshape(theta.shape[0], H, W, 2)


def grid_sample(input: torch.Tensor, grid: torch.Tensor, align_corners: bool = ALIGN_CORNERS) -> torch.Tensor:
    """Bilinear sampling with zero padding (the sampler), as ``F.grid_sample(mode="bilinear", padding_mode="zeros")``.

    input: float[N, C, H, W]; grid: float[N, Ho, Wo, 2], points (x, y) in normalised coordinates. Returns
    float[N, C, Ho, Wo]: each output value is the sum of the four pixels around its point, weighted by
    ``(1 - |x - x_i|)(1 - |y - y_i|)`` in pixel units; pixels outside the input count as 0. Differentiable in
    ``input`` and in ``grid``. Raises ValueError for shapes that do not fit.
    """
    if input.dim() != 4 or grid.dim() != 4 or grid.shape[-1] != 2 or grid.shape[0] != input.shape[0]:
        raise ValueError(f"input must be [N, C, H, W] and grid [N, Ho, Wo, 2] with the same N, got "
                         f"{tuple(input.shape)} and {tuple(grid.shape)}")
    N, C, H, W = input.shape
    Ho, Wo = grid.shape[1:3]
    x, y = grid[..., 0], grid[..., 1]
    if align_corners:                          # normalised -> pixel index coordinates (centres at integers)
        px, py = (x + 1) * (W - 1) / 2, (y + 1) * (H - 1) / 2
    else:
        px, py = ((x + 1) * W - 1) / 2, ((y + 1) * H - 1) / 2
    x0, y0 = torch.floor(px), torch.floor(py)
    flat = input.reshape(N, C, H * W)
    out = input.new_zeros(N, C, Ho * Wo)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - (px - xi).abs()) * (1 - (py - yi).abs())                     # (N, Ho, Wo)
            inside = (xi >= 0) & (xi <= W - 1) & (yi >= 0) & (yi <= H - 1)
            index = (yi.clamp(0, H - 1) * W + xi.clamp(0, W - 1)).long().reshape(N, 1, Ho * Wo)
            values = flat.gather(2, index.expand(N, C, Ho * Wo))
            out = out + values * (weight * inside).reshape(N, 1, Ho * Wo)
    return out.reshape(N, C, Ho, Wo)


def transform(input: torch.Tensor, theta: torch.Tensor, out_size: int | tuple[int, int],
              align_corners: bool = ALIGN_CORNERS) -> torch.Tensor:
    """The spatial transformer's output: ``grid_sample(input, affine_grid(theta, ...))``, float[N, C, Ho, Wo]."""
    ho, wo = (out_size, out_size) if isinstance(out_size, int) else out_size
    grid = affine_grid(theta, (input.shape[0], input.shape[1], ho, wo), align_corners)
    return grid_sample(input, grid, align_corners)


# ============================================================================= θ in words
def theta_from(scale: float = 1.0, rotation: float = 0.0, tx: float = 0.0, ty: float = 0.0) -> torch.Tensor:
    """θ float32[2, 3] of a zoom, a rotation and a shift: ``[[s cos a, -s sin a, tx], [s sin a, s cos a, ty]]``.

    scale: the side of the window the output shows, as a share of the input's side (0.5 = zoom in 2×);
    rotation: degrees; on the screen (y pointing down) a positive angle turns the window clockwise, so the
    output shows the content turned counter-clockwise;
    tx, ty: the window's centre in normalised coordinates (-1 .. 1 is the whole input).
    Raises ValueError for a scale that is not positive or values that are not finite.
    """
    values = {"scale": scale, "rotation": rotation, "tx": tx, "ty": ty}
    for name, v in values.items():
        if not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(float(v)):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
    if not scale > 0:
        raise ValueError(f"scale must be positive (the window's side as a share of the input's), got {scale}")
    a = math.radians(float(rotation))
    s = float(scale)
    return torch.tensor([[s * math.cos(a), -s * math.sin(a), float(tx)],
                         [s * math.sin(a), s * math.cos(a), float(ty)]], dtype=torch.float32)


def window_corners(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Where the output's four outer corners fall in the input, in pixel-edge coordinates: float[N, 4, 2] (x, y),
    in the order top-left, top-right, bottom-right, bottom-left (align_corners=False)."""
    _check_theta(theta)
    corners = torch.tensor([[-1.0, -1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]],
                           dtype=theta.dtype, device=theta.device)
    norm = corners @ theta.transpose(1, 2)                                       # (N, 4, 2) in [-1, 1] units
    scale = torch.tensor([width / 2, height / 2], dtype=theta.dtype, device=theta.device)
    return (norm + 1) * scale


def window_box(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The box around the input region the output shows: float[N, 4] (x0, y0, x1, y1), pixel-edge coordinates,
    the bounds of :func:`window_corners` (a rotated window gets the box around it)."""
    c = window_corners(theta, height, width)
    return torch.cat([c.min(dim=1).values, c.max(dim=1).values], dim=1)


# ============================================================================= the networks
def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@dataclass(frozen=True)
class STNConfig:
    """The recipe of lesson 09's spatial-transformer models.

    num_classes: item classes (10: no background); image_size: input side; out_size: side of the view the
    classifier sees (the transformer's output; 24 of 64: the whole image at this size leaves a small item a few
    pixels, a window on it keeps its detail); width: the classifier's first channels (then 2×, 4×); loc_width: the
    localization net's first channels; initial_scale: the window's side at the start, as a share of the image's
    (the zoom the localization net starts from, :class:`LocalizationNet`); epochs, lr, batch_size: training.
    """

    num_classes: int = 10
    image_size: int = 64
    out_size: int = 24
    width: int = 16
    loc_width: int = 8
    initial_scale: float = 0.6
    epochs: int = 8
    lr: float = 2e-3
    batch_size: int = 32

    def __post_init__(self):
        for name in ("num_classes", "image_size", "out_size", "width", "loc_width", "epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"STNConfig.{name} must be a positive int, got {v!r}")
        if self.image_size % 8 or self.out_size % 4:
            raise ValueError(f"STNConfig: image_size must be a multiple of 8 and out_size of 4, got "
                             f"{self.image_size} and {self.out_size}")
        if not (isinstance(self.initial_scale, (int, float)) and 0 < self.initial_scale <= 1):
            raise ValueError(f"STNConfig.initial_scale must be in (0, 1] (the window's side as a share of the "
                             f"image's), got {self.initial_scale!r}")

    @classmethod
    def from_profile(cls, profile, **changes) -> "STNConfig":
        """The lesson's recipe for ``profile``; ``changes`` override fields."""
        out = 3 * profile.image_size // 8                     # 24 of 64 px
        base = dict(image_size=profile.image_size, out_size=out - out % 4, width=profile.width,
                    loc_width=max(4, profile.width // 2), epochs=4 * profile.epochs, lr=2e-3,
                    batch_size=profile.batch_size)
        return cls(**{**base, **changes})


class LocalizationNet(nn.Module):
    """The localization network: image float[N, 3, S, S] -> θ float[N, 2, 3] = [[s, 0, tx], [0, s, ty]].

    θ is the paper's *attention* transformation (Jaderberg et al., Section 3.1: isotropic scale and translation, a
    square window that may move and zoom). The image is average-pooled by 2 and goes through three conv + BatchNorm
    + ReLU stages (max-pool after the first two) to a coarse map of (S/8)² cells that together see the whole image.
    A 1×1 convolution scores every cell; the softmax of the scores over the cells weights the cells' centres, and
    their weighted mean is the window's centre (tx, ty) (a "soft argmax": the same detector at every cell, so what
    it learns at one place holds at all). The zoom comes from the globally pooled map:
    ``s = initial_scale · exp(ZOOM_STEP · u)``.

    Both heads start at zero: a fresh net puts a window of side ``initial_scale`` at the centre of every image.
    Not at the identity (the whole image): for a classifier that learns on whole images, moving that window barely
    lowers the loss and zooming raises it (the notebook measures it), so the gradient holds the window where it is;
    a smaller window cuts the items it half covers, and moving it towards them lowers the loss.
    :meth:`locate` also returns the cells' weights float[N, S/8, S/8].
    """

    ZOOM_STEP = 0.1

    def __init__(self, image_size: int, width: int, initial_scale: float = 0.6):
        super().__init__()
        w = width
        self.features = nn.Sequential(nn.AvgPool2d(2), *_conv(3, w), nn.MaxPool2d(2), *_conv(w, 2 * w),
                                      nn.MaxPool2d(2), *_conv(2 * w, 2 * w))
        self.score = nn.Conv2d(2 * w, 1, 1)
        self.zoom = nn.Linear(2 * w, 1)
        for layer in (self.score, self.zoom):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.initial_scale = float(initial_scale)
        cells = image_size // 8
        centres = normalized_coordinates(cells)
        gy, gx = torch.meshgrid(centres, centres, indexing="ij")
        self.register_buffer("centres", torch.stack([gx.flatten(), gy.flatten()], dim=1), persistent=False)

    def locate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(θ float[N, 2, 3], the cells' weights float[N, S/8, S/8], summing to 1 per image)."""
        f = self.features(x - 0.5)
        n, _, h, w = f.shape
        weights = torch.softmax(self.score(f).flatten(1).float(), dim=1)                 # (N, cells)
        centre = weights @ self.centres                                                  # (N, 2): tx, ty
        scale = self.initial_scale * torch.exp(self.ZOOM_STEP * self.zoom(f.float().mean(dim=(2, 3)))[:, 0])
        zero = torch.zeros_like(scale)
        theta = torch.stack([torch.stack([scale, zero, centre[:, 0]], dim=1),
                             torch.stack([zero, scale, centre[:, 1]], dim=1)], dim=1)
        return theta, weights.view(n, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.locate(x)[0]


def view_classifier(num_classes: int, width: int) -> nn.Sequential:
    """The classifier of a view: three conv stages (width, 2×, 4× channels; max-pool after the first two),
    global average pooling and a linear layer. float[N, 3, s, s] -> logits float[N, num_classes]."""
    w = width
    return nn.Sequential(*_conv(3, w), nn.MaxPool2d(2), *_conv(w, 2 * w), nn.MaxPool2d(2), *_conv(2 * w, 4 * w),
                         *_conv(4 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, num_classes))


def matched_width(config: STNConfig) -> int:
    """The classifier width of the model without a transformer: the smallest width (≥ ``config.width``) whose
    classifier has at least as many parameters as the transformer model (classifier + localization net), so
    that the comparison is not about size."""
    target = sum(p.numel() for p in STNClassifier(config, stn=True).parameters())
    width = config.width
    while sum(p.numel() for p in view_classifier(config.num_classes, width).parameters()) < target:
        width += 1
    return width


class STNClassifier(nn.Module):
    """A classifier of an ``out_size`` view of the input, with or without a spatial transformer choosing the view.

    forward(x float[N, 3, S, S]) -> {"out": logits float[N, num_classes], "theta": float[N, 2, 3],
    "view": float[N, 3, out_size, out_size]}. ``stn=False``: θ is the identity (a buffer, not learned), so the
    view is the whole image resampled at ``out_size``; ``width`` (default ``config.width``) sets its classifier's
    width (:func:`matched_width`).
    """

    def __init__(self, config: STNConfig, stn: bool = True, width: int | None = None):
        super().__init__()
        self.config, self.stn = config, stn
        self.localization = (LocalizationNet(config.image_size, config.loc_width, config.initial_scale)
                             if stn else None)
        self.register_buffer("identity", torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), persistent=False)
        self.classifier = view_classifier(config.num_classes, width or config.width)

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        if self.localization is None:
            return self.identity.to(x.dtype).expand(x.shape[0], 2, 3)
        return self.localization(x)

    def forward(self, x: torch.Tensor) -> dict:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"STNClassifier takes images [N, 3, H, W], got {tuple(x.shape)}")
        theta = self.theta(x)
        view = transform(x, theta.float(), self.config.out_size)
        return {"out": self.classifier(view - 0.5), "theta": theta, "view": view}


def stn_classifier(config: STNConfig) -> STNClassifier:
    """The classifier with a learned spatial transformer."""
    return STNClassifier(config, stn=True)


def plain_classifier(config: STNConfig) -> STNClassifier:
    """The same classifier without it, widened to at least the transformer model's parameters
    (:func:`matched_width`): the whole image at ``out_size``."""
    return STNClassifier(config, stn=False, width=matched_width(config))


# ============================================================================= why the identity does not learn
def translation_gradient(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, theta: torch.Tensor,
                         out_size: int) -> torch.Tensor:
    """-∂loss/∂(tx, ty) float[N, 2]: the direction in which each image's window would move after one gradient
    step, for ``classifier`` (logits of a view ``- 0.5``) reading windows ``theta`` float[N, 2, 3]."""
    _check_theta(theta)
    theta = theta.detach().float().clone().requires_grad_()
    logits = classifier(transform(images, theta, out_size) - 0.5)
    loss = nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
    (grad,) = torch.autograd.grad(loss, theta)
    return -grad[:, :, 2]


def towards_item_share(step: torch.Tensor, theta: torch.Tensor, boxes: torch.Tensor, image_size: int) -> float:
    """The share of windows whose step ``step`` float[N, 2] (:func:`translation_gradient`) points towards the item
    (a positive dot product with the vector from the window's centre to the box's centre; 0.5 = chance)."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / image_size - 1            # pixel-edge box -> normalised centre
    towards = centre - theta[:, :, 2].detach()
    return float(((step * towards).sum(dim=1) > 0).float().mean())


@torch.no_grad()
def loss_towards_item(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor,
                      scale: float, fractions, out_size: int) -> list[float]:
    """The mean cross-entropy of ``classifier`` when a square window of side ``scale`` (share of the image's) slides
    from the image's centre to the item's: one value per fraction of the way in ``fractions`` (0 = centred on the
    image, 1 = centred on the item's box). images float[N, 3, S, S], labels int64[N], boxes float[N, 4] pixel-edge."""
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    centre = (boxes[:, :2] + boxes[:, 2:]) / images.shape[-1] - 1
    losses = []
    for f in fractions:
        theta = torch.zeros(len(images), 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = float(scale)
        theta[:, :, 2] = float(f) * centre
        logits = classifier(transform(images, theta, out_size) - 0.5)
        losses.append(float(nn.functional.cross_entropy(logits.float(), labels)))
    return losses
