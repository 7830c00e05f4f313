"""Course scenes: Fashion-MNIST items composited on real photographs.

A scene is made by :func:`make_scene` from a NumPy generator seeded with
``(seed, split, index)``, so scene *i* of split *s* with seed *k* is the same on
every machine. Items are pasted in painter's order (later items occlude earlier
ones) with exact masks; some items are placed touching an item of the same
class, which the semantic mask merges and the instance mask keeps apart.

Labels: 0 = background, 1..10 = the Fashion-MNIST classes (``CLASS_NAMES``).
Boxes are ``(x0, y0, x1, y1)`` in pixel-edge coordinates: a mask whose columns
run from 3 to 7 inclusive has ``x0 = 3, x1 = 8``.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from torch.utils.data import Dataset

from .assets import data_file
from .metrics import IGNORE_INDEX  # noqa: F401  (the label of unlabelled pixels, re-exported)

CLASS_NAMES = ("background", "T-shirt/top", "trouser", "pullover", "dress", "coat",
               "sandal", "shirt", "sneaker", "bag", "ankle boot")
NUM_CLASSES = len(CLASS_NAMES)  # 11, background included
SPLITS = {"train": 0, "test": 1}
# Photographs and textures shipped inside scikit-image's wheel.
BACKGROUND_NAMES = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass",
                    "gravel", "hubble_deep_field", "immunohistochemistry", "moon", "rocket")
# Each photograph is cut in two: train crops come from the top rows, test crops from the rest.
TRAIN_ROWS = 0.7
ITEMS_FILE = "fashion_items.npz"


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are made. Sizes are in pixels or fractions of the image side."""

    size: int = 64
    min_items: int = 1
    max_items: int = 6
    min_scale: float = 0.22      # item side / image side
    max_scale: float = 0.75
    p_touch: float = 0.35        # chance that an item is placed touching one of the same class
    min_visible: float = 0.5     # every item keeps at least this share of its own area visible
    min_pixels: int = 12         # ... and at least this many pixels
    jitter: float = 0.25         # colour jitter strength of the background

    def __post_init__(self):
        if not isinstance(self.size, (int, np.integer)) or self.size < 16:
            raise ValueError(f"SceneConfig.size must be an int >= 16 pixels, got {self.size!r}")
        if not (1 <= self.min_items <= self.max_items <= 50):
            raise ValueError(f"need 1 <= min_items <= max_items <= 50, got min_items={self.min_items}, "
                             f"max_items={self.max_items}")
        if not (0 < self.min_scale <= self.max_scale <= 1):
            raise ValueError(f"need 0 < min_scale <= max_scale <= 1, got {self.min_scale}, {self.max_scale}")
        if not (0 <= self.p_touch <= 1) or not (0 <= self.min_visible <= 1):
            raise ValueError("p_touch and min_visible are probabilities/fractions in [0, 1]")


@dataclass
class Scene:
    """One scene as NumPy arrays.

    image (uint8[H, W, 3]), semantic (uint8[H, W]: 0 background, 1..10 classes),
    instances (uint8[H, W]: 0 background, k = k-th instance), labels (int64[N]),
    boxes (float32[N, 4], pixel-edge x0, y0, x1, y1), areas (int64[N], visible pixels).
    """

    image: np.ndarray
    semantic: np.ndarray
    instances: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def masks(self) -> np.ndarray:
        """bool[N, H, W], one mask per instance."""
        ids = np.arange(1, len(self.labels) + 1)
        return self.instances[None] == ids[:, None, None]


# ----------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class ItemBank:
    """Fashion-MNIST items of one split: intensity (float32[N, 28, 28] in [0, 1]), mask, class (1..10)."""

    intensity: np.ndarray
    masks: np.ndarray
    classes: np.ndarray

    def of_class(self, c: int) -> np.ndarray:
        return np.flatnonzero(self.classes == c)


def item_mask(intensity: np.ndarray, threshold: float = 0.08) -> np.ndarray:
    """Foreground of a Fashion-MNIST item: above a threshold, holes filled."""
    return ndimage.binary_fill_holes(intensity > threshold)


@lru_cache(maxsize=4)
def load_items(split: str) -> ItemBank:
    """The shipped items of ``split`` ('train' or 'test'), verified against data/MANIFEST."""
    _check_split(split)
    with np.load(data_file(ITEMS_FILE)) as z:
        images = z[f"{split}_images"].astype(np.float32) / 255.0
        labels = z[f"{split}_labels"].astype(np.int64)
    masks = np.stack([item_mask(im) for im in images])
    return ItemBank(intensity=images, masks=masks, classes=labels + 1)


@lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    import skimage.data

    loader = getattr(skimage.data, name, None)
    if loader is None:
        raise KeyError(f"unknown background {name!r}; choose from {BACKGROUND_NAMES}")
    img = np.asarray(loader())
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    if img.dtype != np.uint8:
        img = (255 * (img.astype(np.float64) / max(float(img.max()), 1e-8))).astype(np.uint8)
    return np.ascontiguousarray(img)


@lru_cache(maxsize=None)
def background_region(name: str, split: str) -> Image.Image:
    """The part of photograph ``name`` that ``split`` may crop from (train: top 70 %, test: the rest)."""
    _check_split(split)
    img = _photo(name)
    cut = int(round(img.shape[0] * TRAIN_ROWS))
    part = img[:cut] if split == "train" else img[cut:]
    return Image.fromarray(np.ascontiguousarray(part))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")


# ----------------------------------------------------------------------------- making a scene
def scene_rng(split: str, index: int, seed: int) -> np.random.Generator:
    """The generator that makes scene ``index`` of ``split`` with ``seed``."""
    _check_split(split)
    if index < 0 or seed < 0:
        raise ValueError(f"index and seed must be non-negative, got index={index}, seed={seed}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS[split], int(index)]))


def _background(rng: np.random.Generator, split: str, size: int, jitter: float) -> np.ndarray:
    name = BACKGROUND_NAMES[rng.integers(len(BACKGROUND_NAMES))]
    region = background_region(name, split)
    w, h = region.size
    side = rng.uniform(0.35, 1.0) * min(w, h)
    x0 = rng.uniform(0, w - side)
    y0 = rng.uniform(0, h - side)
    crop = region.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
    bg = np.asarray(crop, dtype=np.float32) / 255.0
    if rng.random() < 0.5:
        bg = bg[:, ::-1]
    brightness, contrast, saturation = 1 + jitter * rng.uniform(-1, 1, size=3)
    gray = bg.mean(axis=2, keepdims=True)
    bg = gray + saturation * (bg - gray)
    bg = bg.mean() + contrast * (bg - bg.mean())
    return np.clip(bg * brightness, 0, 1)


def _resized_item(items: ItemBank, k: int, side: int, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    inten = Image.fromarray(items.intensity[k], mode="F").resize((side, side), Image.BILINEAR)
    soft = Image.fromarray(items.masks[k].astype(np.float32), mode="F").resize((side, side), Image.BILINEAR)
    inten, mask = np.asarray(inten), np.asarray(soft) >= 0.5
    if flip:
        inten, mask = inten[:, ::-1], mask[:, ::-1]
    return inten, mask


def _tint(rng: np.random.Generator) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.45, 1.0), rng.uniform(0.65, 1.0))
    return np.array([r, g, b], dtype=np.float32)


def make_scene(rng: np.random.Generator, items: ItemBank, split: str, config: SceneConfig = SceneConfig()) -> Scene:
    """Compose one scene. Pure function of ``rng``'s state, the items and the config."""
    S = config.size
    image = _background(rng, split, S, config.jitter)
    semantic = np.zeros((S, S), np.uint8)
    instances = np.zeros((S, S), np.uint8)
    placed: list[dict] = []          # per instance: class, full-mask area, box of its full mask
    n_items = int(rng.integers(config.min_items, config.max_items + 1))
    for _ in range(n_items):
        touch = placed and rng.random() < config.p_touch
        for _attempt in range(12):
            if touch:
                ref = placed[int(rng.integers(len(placed)))]
                cls = ref["cls"]
            else:
                cls = int(rng.integers(1, NUM_CLASSES))
            k = int(rng.choice(items.of_class(cls)))
            side = max(8, int(round(rng.uniform(config.min_scale, config.max_scale) * S)))
            side = min(side, S)
            inten, mask = _resized_item(items, k, side, flip=bool(rng.random() < 0.5))
            if touch:  # next to the reference item: shifted by most of its width or height
                ry, rx, rs = ref["y"], ref["x"], ref["side"]
                direction = int(rng.integers(4))
                shift = rng.uniform(0.55, 0.9) * (rs + side) / 2
                dy, dx = [(0, shift), (0, -shift), (shift, 0), (-shift, 0)][direction]
                y = int(round(ry + (rs - side) / 2 + dy + rng.uniform(-0.15, 0.15) * side))
                x = int(round(rx + (rs - side) / 2 + dx + rng.uniform(-0.15, 0.15) * side))
                y, x = int(np.clip(y, 0, S - side)), int(np.clip(x, 0, S - side))
            else:
                y, x = int(rng.integers(0, S - side + 1)), int(rng.integers(0, S - side + 1))
            full = np.zeros((S, S), bool)
            full[y:y + side, x:x + side] = mask
            if full.sum() < config.min_pixels:
                continue
            ok = True
            for idx, p in enumerate(placed, start=1):
                still = ((instances == idx) & ~full).sum()
                if still < max(config.min_visible * p["area"], config.min_pixels):
                    ok = False
                    break
            if ok:
                break
        else:
            continue  # no valid place found for this item: the scene has one item fewer
        color = _tint(rng)
        patch = (0.3 + 0.7 * inten)[..., None] * color
        region = image[y:y + side, x:x + side]
        region[mask] = patch[mask]
        semantic[full] = cls
        instances[full] = len(placed) + 1
        placed.append({"cls": cls, "area": int(full.sum()), "y": y, "x": x, "side": side})
    labels = np.array([p["cls"] for p in placed], np.int64)
    boxes = np.zeros((len(placed), 4), np.float32)
    areas = np.zeros(len(placed), np.int64)
    for i in range(len(placed)):
        ys, xs = np.nonzero(instances == i + 1)
        boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        areas[i] = len(ys)
    img8 = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    return Scene(image=img8, semantic=semantic, instances=instances, labels=labels, boxes=boxes, areas=areas)


def course_scene(split: str, index: int, seed: int = 0, config: SceneConfig = SceneConfig()) -> Scene:
    """Scene ``index`` of ``split`` made with ``seed``: identical on every machine."""
    return make_scene(scene_rng(split, index, seed), load_items(split), split, config)


# ----------------------------------------------------------------------------- torch datasets
def to_tensor_image(image: np.ndarray) -> torch.Tensor:
    """uint8[H, W, 3] -> float32[3, H, W] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)


class CourseScenes(Dataset):
    """The course-scenes dataset.

    Args:
        split: 'train' or 'test' (disjoint items and background crops).
        n: number of scenes.
        size: image side in pixels (>= 16).
        seed: dataset seed; scene i is a function of (split, i, seed) only.
        mode: 'semantic' -> ``(image float32[3,H,W], mask int64[H,W])``;
              'instance' -> ``(image, target)`` with torchvision's detection target keys
              ``boxes`` float32[N,4], ``labels`` int64[N], ``masks`` uint8[N,H,W] (plus ``semantic``).
        config: a :class:`SceneConfig` for everything else (its ``size`` is replaced by ``size``).
        cache: keep made scenes in memory.
    """

    def __init__(self, split: str = "train", n: int = 512, size: int = 64, seed: int = 0,
                 mode: str = "semantic", config: SceneConfig | None = None, cache: bool = True):
        _check_split(split)
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
            raise ValueError(f"n must be a non-negative int (number of scenes), got {n!r}")
        if mode not in ("semantic", "instance"):
            raise ValueError(f"mode must be 'semantic' or 'instance', got {mode!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        base = config or SceneConfig()
        self.config = SceneConfig(**{**base.__dict__, "size": size})
        self.split, self.n, self.seed, self.mode, self.cache = split, int(n), int(seed), mode, cache
        self.num_classes = NUM_CLASSES
        self.class_names = CLASS_NAMES
        self._scenes: dict[int, Scene] = {}

    @classmethod
    def from_profile(cls, profile, split: str = "train", seed: int = 0, mode: str = "semantic",
                     **kwargs) -> "CourseScenes":
        n = profile.n_train if split == "train" else profile.n_test
        return cls(split=split, n=n, size=profile.image_size, seed=seed, mode=mode, **kwargs)

    def __len__(self) -> int:
        return self.n

    def scene(self, index: int) -> Scene:
        if not isinstance(index, (int, np.integer)) or not (-self.n <= index < self.n):
            raise IndexError(f"scene index {index!r} out of range for {self.n} scenes")
        index = int(index) % self.n
        if index in self._scenes:
            return self._scenes[index]
        s = course_scene(self.split, index, self.seed, self.config)
        if self.cache:
            self._scenes[index] = s
        return s

    def __getitem__(self, index: int):
        s = self.scene(index)
        image = to_tensor_image(s.image)
        semantic = torch.from_numpy(s.semantic.astype(np.int64))
        if self.mode == "semantic":
            return image, semantic
        target = {
            "boxes": torch.from_numpy(s.boxes).reshape(-1, 4),
            "labels": torch.from_numpy(s.labels),
            "masks": torch.from_numpy(s.masks.astype(np.uint8)),
            "semantic": semantic,
        }
        return image, target

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split as two tensors: images float32[N,3,H,W], masks int64[N,H,W]."""
        if self.n == 0:
            S = self.config.size
            return torch.zeros(0, 3, S, S), torch.zeros(0, S, S, dtype=torch.long)
        pairs = [(to_tensor_image(s.image), torch.from_numpy(s.semantic.astype(np.int64)))
                 for s in (self.scene(i) for i in range(self.n))]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def __repr__(self) -> str:
        return (f"CourseScenes(split={self.split!r}, n={self.n}, size={self.config.size}, "
                f"seed={self.seed}, mode={self.mode!r})")


def collate_instances(batch):
    """For DataLoaders of ``mode='instance'``: a list of images and a list of targets."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def touching_same_class(scene: Scene) -> list[tuple[int, int]]:
    """Pairs (a, b) of instance indices of the same class whose masks touch (4-neighbourhood).

    The semantic mask shows such a pair as one region; only the instance mask keeps them apart.
    """
    masks = scene.masks
    pairs = []
    for a in range(len(masks)):
        grown = ndimage.binary_dilation(masks[a])  # cross-shaped structuring element: 4-neighbours
        for b in range(a + 1, len(masks)):
            if scene.labels[a] == scene.labels[b] and (grown & masks[b]).any():
                pairs.append((a, b))
    return pairs
