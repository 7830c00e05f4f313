"""One small item in clutter: the spatial-transformer lesson's data (after the paper's cluttered MNIST).

Jaderberg et al. place one MNIST digit at a random position of a larger image and add clutter, random pieces cut
from other digits, so that a classifier must find the digit before it can name it. Here the digit is a course
item: a Fashion-MNIST item, small (``min_side``..``max_side`` pixels of a ``size`` image), grey on black as the
paper's digits, over ``fragments`` square pieces cut from other items. (On the course's tinted items over
photographs, the classifiers of lesson 09 stayed near chance within their training budget.) Item i of a split
with a seed is the same on every machine (:func:`clutter_rng`); train and test use disjoint items
(:mod:`lecturelib.scenes`).

Labels are the item's class 0..9 (``CLASS_NAMES[label + 1]``: no background class); boxes are the item's
visible mask's box in pixel-edge coordinates (x0, y0, x1, y1).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .scenes import SPLITS, ItemBank, _check_split, _resized_item, load_items, to_tensor_image


@dataclass(frozen=True)
class ClutterConfig:
    """Sizes in pixels: image side, the item's side range, the number and side of the clutter pieces."""

    size: int = 64
    min_side: int = 16
    max_side: int = 22
    fragments: int = 6
    fragment_side: int = 8

    def __post_init__(self):
        if not (8 <= self.min_side <= self.max_side <= self.size):
            raise ValueError(f"need 8 <= min_side <= max_side <= size, got {self.min_side}, {self.max_side}, "
                             f"{self.size}")
        if self.fragments < 0 or not (1 <= self.fragment_side <= self.min_side):
            raise ValueError(f"need fragments >= 0 and 1 <= fragment_side <= min_side, got {self.fragments}, "
                             f"{self.fragment_side}")


@dataclass
class ClutteredItem:
    """image uint8[S, S, 3], label (0..9), box float32[4] (pixel-edge), mask bool[S, S] (the item's pixels)."""

    image: np.ndarray
    label: int
    box: np.ndarray
    mask: np.ndarray


def clutter_rng(split: str, index: int, seed: int) -> np.random.Generator:
    """The generator that makes item ``index`` of ``split`` with ``seed`` (a stream apart from the scenes')."""
    _check_split(split)
    if index < 0 or seed < 0:
        raise ValueError(f"index and seed must be non-negative, got index={index}, seed={seed}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS[split], int(index), 9]))


def make_cluttered(rng: np.random.Generator, items: ItemBank, split: str,
                   config: ClutterConfig = ClutterConfig()) -> ClutteredItem:
    """Compose one image: black, clutter pieces, then the item on top. Pure function of ``rng``."""
    S = config.size
    image = np.zeros((S, S, 3), np.float32)
    f = config.fragment_side
    for _ in range(config.fragments):
        k = int(rng.integers(len(items.classes)))
        side = int(rng.integers(config.min_side, config.max_side + 1))
        inten, mask = _resized_item(items, k, side, flip=bool(rng.random() < 0.5))
        ys, xs = np.nonzero(mask)
        cy = int(np.clip(ys[rng.integers(len(ys))] - f // 2, 0, side - f))      # a piece that holds some item
        cx = int(np.clip(xs[rng.integers(len(xs))] - f // 2, 0, side - f))
        piece, piece_mask = inten[cy:cy + f, cx:cx + f], mask[cy:cy + f, cx:cx + f]
        y, x = int(rng.integers(0, S - f + 1)), int(rng.integers(0, S - f + 1))
        region = image[y:y + f, x:x + f]
        region[piece_mask] = np.repeat(piece[..., None], 3, axis=2)[piece_mask]
    cls = int(rng.integers(1, 11))
    k = int(rng.choice(items.of_class(cls)))
    side = int(rng.integers(config.min_side, config.max_side + 1))
    inten, mask = _resized_item(items, k, side, flip=bool(rng.random() < 0.5))
    y, x = int(rng.integers(0, S - side + 1)), int(rng.integers(0, S - side + 1))
    region = image[y:y + side, x:x + side]
    region[mask] = np.repeat(inten[..., None], 3, axis=2)[mask]
    full = np.zeros((S, S), bool)
    full[y:y + side, x:x + side] = mask
    ys, xs = np.nonzero(full)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    img8 = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    return ClutteredItem(image=img8, label=cls - 1, box=box, mask=full)


def cluttered_item(split: str, index: int, seed: int = 0, config: ClutterConfig = ClutterConfig()) -> ClutteredItem:
    """Item ``index`` of ``split`` made with ``seed``: identical on every machine."""
    return make_cluttered(clutter_rng(split, index, seed), load_items(split), split, config)


def cluttered_set(split: str, n: int, size: int = 64, seed: int = 0,
                  config: ClutterConfig | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` items of ``split`` as tensors: images float32[n, 3, size, size] in [0, 1], labels int64[n] (0..9),
    boxes float32[n, 4] (pixel-edge). The item sides scale with ``size`` (the defaults are for 64 px)."""
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if config is None:
        r = size / 64
        config = ClutterConfig(size=size, min_side=max(8, round(16 * r)), max_side=max(8, round(22 * r)),
                               fragment_side=max(1, round(8 * r)))
    made = [cluttered_item(split, i, seed, config) for i in range(n)]
    if not made:
        return torch.zeros(0, 3, size, size), torch.zeros(0, dtype=torch.long), torch.zeros(0, 4)
    return (torch.stack([to_tensor_image(m.image) for m in made]),
            torch.tensor([m.label for m in made], dtype=torch.long),
            torch.from_numpy(np.stack([m.box for m in made])))


def cluttered_tensors(profile, split: str, workers: int = 0, seed: int = 0):
    """The split of ``profile`` (its image size, n_train or n_test) as :func:`cluttered_set` tensors; ``workers``
    is accepted for the command line's data interface (the items are quick to make in one process)."""
    n = profile.n_train if split == "train" else profile.n_test
    return cluttered_set(split, n, profile.image_size, seed)
