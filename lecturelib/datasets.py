"""Your own data: folders of images with label maps or instance label images, and PASCAL VOC on disk.

Semantic data (:class:`SegmentationFolder`, :class:`VOCScenes`) returns ``(image float32[3, H, W] in
[0, 1], mask int64[H, W])`` like :class:`lecturelib.scenes.CourseScenes` in semantic mode, so every
lesson's model, training loop and metric works on it unchanged. Instance data
(:class:`lecturelib.instances.InstanceFolder`) returns ``(image, target)`` in torchvision's detection
format, like ``CourseScenes(mode="instance")``. :func:`folder_data` loads either for the command line.

Folder layouts (files are paired by name without the suffix; the suffix may be in any case)::

    root/images/0001.jpg   root/masks/0001.png      SegmentationFolder: class indices, 255 = ignore
    root/images/0001.tif   root/instances/0001.png  lecturelib.instances.InstanceFolder: 0 = background,
                           root/classes/0001.txt    each other id one instance; optional class file: one line
                                                    "instance-id class" per instance

Formats read and refused: :mod:`lecturelib.files`. Every file's header (format, size) is checked when a
dataset is built, the values of a sample of label files too (``check`` files, evenly spread; None: all),
and every item again when it is loaded.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .files import (
    IMAGE_SUFFIXES,
    LABEL_SUFFIXES,
    check_label_header,
    evenly_spaced,
    image_shape,
    pair_files,
    read_image,
    read_label_map,
)
from .metrics import IGNORE_INDEX

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")


# ----------------------------------------------------------------------------- sizes and names
def check_size(size) -> tuple[int, int] | None:
    """``size`` as (H, W): None, a positive int (a square) or a pair of positive ints; else ValueError."""
    if size is None:
        return None
    pair = (size, size) if isinstance(size, (int, np.integer)) and not isinstance(size, bool) else size
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in pair)):
        raise ValueError(f"size must be None (keep each image's size), a positive int or a pair (H, W) of "
                         f"positive ints, got {size!r}")
    return int(pair[0]), int(pair[1])


def resize_labels(labels: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """A label map int64[H, W] resized to ``hw`` by nearest neighbour with exact pixel centres
    (``nearest-exact``, like PIL's NEAREST): the labels stay aligned with a bilinearly resized image."""
    return F.interpolate(labels[None, None].double(), size=hw, mode="nearest-exact")[0, 0].long()


def resize_pair(image: torch.Tensor, mask: torch.Tensor, size) -> tuple[torch.Tensor, torch.Tensor]:
    """image float[3, H, W] (bilinear, antialiased) and mask int64[H, W] (:func:`resize_labels`) resized to
    ``size`` (None: unchanged)."""
    hw = check_size(size)
    if hw is None:
        return image, mask
    image = F.interpolate(image[None], size=hw, mode="bilinear", align_corners=False, antialias=True)[0]
    return image, resize_labels(mask, hw)


def class_names_of(class_names, num_classes: int) -> tuple[str, ...]:
    """The names of ``num_classes`` classes, background first: from a sequence, from a text file (one name per
    line; blank lines and lines starting with ``#`` skipped) or, for None, ("background", "class 1", ...).

    Raises ValueError when the number of names differs from ``num_classes``.
    """
    if class_names is None:
        return ("background",) + tuple(f"class {c}" for c in range(1, num_classes))
    if isinstance(class_names, (str, Path)):
        path = Path(class_names)
        if not path.is_file():
            raise FileNotFoundError(f"class names file {path} does not exist; write one class name per line, "
                                    "background first")
        lines = [ln.strip() for ln in path.read_text().splitlines()]
        names = tuple(ln for ln in lines if ln and not ln.startswith("#"))
        where = str(path)
    else:
        names, where = tuple(str(n) for n in class_names), "class_names"
    if len(names) != num_classes:
        raise ValueError(f"{where}: {len(names)} class names for num_classes={num_classes}; give one name per "
                         "class, background first")
    return names


def check_num_classes(num_classes) -> None:
    """Refuse (ValueError) a ``num_classes`` that is not an int >= 2."""
    if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2 (background included), got {num_classes!r}")


def root_folders(root: Path, kind: str, **folders: str) -> dict[str, Path]:
    """{what: root / name} for each ``what=name``; FileNotFoundError naming the first missing folder."""
    out = {}
    for what, name in folders.items():
        d = root / name
        if not d.is_dir():
            raise FileNotFoundError(f"{kind}: {d} does not exist; put the {what} in {root}/{name}/ "
                                    f"(see the layout in lecturelib.datasets)")
        out[what] = d
    return out


def warn_mixed_sizes(kind: str, sizes: list[tuple[int, int]], size) -> None:
    """Warn, with the fix, when images of several sizes will not be resized (a DataLoader cannot stack them)."""
    distinct = sorted(set(sizes))
    if size is None and len(distinct) > 1:
        shown = ", ".join(f"{h}x{w}" for h, w in distinct[:4]) + (" ..." if len(distinct) > 4 else "")
        warnings.warn(f"{kind}: the images have {len(distinct)} different sizes ({shown}); a DataLoader cannot "
                      "stack them: pass size= to resize every item, or collate_fn=lecturelib.datasets.pad_collate "
                      "(semantic pairs) to pad each batch", stacklevel=3)


# ----------------------------------------------------------------------------- semantic labels
def semantic_labels(mask: np.ndarray, num_classes: int, where: str, binary: bool = False) -> np.ndarray:
    """The training labels of a label map int64[H, W]: unchanged, checked < ``num_classes`` or 255 (ignore);
    with ``binary``, 0 -> 0 and every other value -> 1 (masks saved as 0/1, 0/255 or 0/65535).

    Raises ValueError naming ``where`` and listing the offending labels as plain numbers.
    """
    if binary:
        return (mask != 0).astype(np.int64)
    bad = (mask >= num_classes) & (mask != IGNORE_INDEX)
    if bad.any():
        values = [int(v) for v in np.unique(mask[bad])[:5]]
        raise ValueError(f"{where}: labels {values} are >= num_classes={num_classes}; raise num_classes or map "
                         f"them to 255 (ignore)")
    return mask


class LabelledImages(Dataset):
    """Pairs (image file, label file) checked when built, read as ``(image float32[3, H, W], mask int64[H, W])``.

    The one reading and validation path of :class:`SegmentationFolder` and :class:`VOCScenes`.

    Args:
        pairs: (image path, label path) per item.
        num_classes: classes including background; labels must be < num_classes or 255 (ignore).
        size: resize every pair to ``size`` (int or (H, W)): image bilinear, labels nearest-exact;
            None keeps each item's size.
        binary: masks of two values (0 and anything else, e.g. 0/255): 0 -> background, the rest -> class 1
            (needs num_classes = 2). Without it, a folder whose masks hold only 0 and 255 is refused (255
            means "ignore": every object would be ignored).
        class_names: names of the classes (sequence or a text file, background first).
        intensity: how image values are scaled to [0, 1] (:mod:`lecturelib.files`).
        check: label files whose values are checked when the dataset is built (evenly spread; None: all).

    Raises:
        ValueError: a file of a wrong format, image and mask sizes that differ, labels >= num_classes, masks
            that look binary (0/255) without ``binary``, no labelled object in any checked mask.
    """

    kind = "LabelledImages"

    def __init__(self, pairs, num_classes: int, size=None, *, binary: bool = False, class_names=None,
                 intensity="dtype", check: int | None = 64):
        check_num_classes(num_classes)
        self.size = check_size(size)
        if binary and num_classes != 2:
            raise ValueError(f"binary=True makes two classes (background, object); pass num_classes=2, "
                             f"got {num_classes}")
        self.pairs = [(Path(i), Path(m)) for i, m in pairs]
        self.num_classes, self.binary, self.intensity = int(num_classes), binary, intensity
        self.class_names = class_names_of(class_names, self.num_classes)
        self.image_sizes = self._check_headers()
        self._check_values(check)
        warn_mixed_sizes(self.kind, self.image_sizes, self.size)

    def _check_headers(self) -> list[tuple[int, int]]:
        sizes, differ = [], []
        for image_path, mask_path in self.pairs:
            check_label_header(mask_path)
            hw, mhw = image_shape(image_path), image_shape(mask_path)
            if hw != mhw:
                differ.append(f"{mask_path.name} is {mhw[0]}x{mhw[1]}, its image {hw[0]}x{hw[1]}")
            sizes.append(hw)
        if differ:
            raise ValueError(f"{self.kind}: {len(differ)} mask(s) differ in size from their image: "
                             f"{'; '.join(differ[:5])}; a mask must label every pixel of its image")
        return sizes

    def _check_values(self, check: int | None) -> None:
        seen: set[int] = set()
        for i in evenly_spaced(len(self.pairs), check):
            mask = read_label_map(self.pairs[i][1])
            semantic_labels(mask, self.num_classes, str(self.pairs[i][1]), self.binary)
            seen.update(int(v) for v in np.unique(mask))
        if self.binary or not seen:
            return
        objects = {v for v in seen if 0 < v < self.num_classes}
        if not objects and IGNORE_INDEX in seen:
            raise ValueError(f"{self.kind}: the checked masks hold only 0 and 255; 255 means 'ignore', so every "
                             "object would be ignored. Binary masks saved as 0/255? Pass binary=True (255 -> class "
                             "1), or label the objects 1..num_classes-1")
        if not objects:
            raise ValueError(f"{self.kind}: every checked mask is all background (0): nothing to learn; are the "
                             "labels stored in these files?")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        image_path, mask_path = self.pairs[index]
        image = read_image(image_path, self.intensity)
        mask = read_label_map(mask_path)
        if mask.shape != tuple(image.shape[1:]):
            raise ValueError(f"{mask_path}: mask size {tuple(mask.shape)} differs from image size "
                             f"{tuple(image.shape[1:])}")
        labels = semantic_labels(mask, self.num_classes, str(mask_path), self.binary)
        return resize_pair(image, torch.from_numpy(labels), self.size)


class SegmentationFolder(LabelledImages):
    """Images and label maps paired by file name: ``root/images/<name>.*`` with ``root/masks/<name>.png|tif``.

    Returns ``(image float32[3, H, W] in [0, 1], mask int64[H, W])``. Images: JPEG, PNG, BMP, TIFF
    (:mod:`lecturelib.files`); masks: palette, greyscale or 16-bit PNG, or integer TIFF, of class indices
    (255 = ignore). Every image must have a mask and every mask an image: unpaired files raise ValueError
    listing them, or are left out with a warning when ``strict=False``.

    Args:
        root: folder holding ``images/`` and ``masks/`` (names configurable).
        num_classes: classes including background; labels must be < num_classes or 255.
        size, binary, class_names, intensity, check: see :class:`LabelledImages`.
    """

    kind = "SegmentationFolder"

    def __init__(self, root: str | Path, num_classes: int, size=None, images: str = "images", masks: str = "masks",
                 *, binary: bool = False, class_names=None, intensity="dtype", strict: bool = True,
                 check: int | None = 64):
        root = Path(root)
        dirs = root_folders(root, "SegmentationFolder", images=images, masks=masks)
        self.image_dir, self.mask_dir = dirs["images"], dirs["masks"]
        check_num_classes(num_classes)
        pairs = pair_files({"images": (self.image_dir, IMAGE_SUFFIXES), "masks": (self.mask_dir, LABEL_SUFFIXES)},
                           strict=strict)
        super().__init__(pairs, num_classes, size, binary=binary, class_names=class_names, intensity=intensity,
                         check=check)


class VOCScenes(LabelledImages):
    """PASCAL VOC segmentation already on disk (never downloaded), read like :class:`SegmentationFolder`:
    21 classes (:data:`VOC_CLASSES`), 255 = ignore, masks checked the same way.

    root: the folder that holds ``VOCdevkit/VOC<year>``. size: resize every pair (default 256 x 256;
    None keeps each image's size).
    """

    kind = "VOCScenes"

    def __init__(self, root: str | Path, image_set: str = "val", year: str = "2012", size=256, *,
                 intensity="dtype", check: int | None = 64):
        from torchvision.datasets import VOCSegmentation

        try:
            self.voc = VOCSegmentation(str(root), year=year, image_set=image_set, download=False)
        except RuntimeError as exc:
            raise FileNotFoundError(f"PASCAL VOC {year} not found under {root} (expected {root}/VOCdevkit/VOC{year}); "
                                    "download and extract it yourself, then pass its parent folder as root") from exc
        super().__init__(list(zip(self.voc.images, self.voc.masks)), len(VOC_CLASSES), size,
                         class_names=VOC_CLASSES, intensity=intensity, check=check)


def pad_collate(batch):
    """Collate (image float[3, H, W], mask int64[H, W]) pairs of different sizes: each padded at the bottom and
    right to the batch's largest size (image with 0, mask with 255 = ignore). Returns images float[B, 3, H, W]
    and masks int64[B, H, W]."""
    H = max(image.shape[-2] for image, _ in batch)
    W = max(image.shape[-1] for image, _ in batch)
    images = torch.zeros(len(batch), 3, H, W, dtype=batch[0][0].dtype)
    masks = torch.full((len(batch), H, W), IGNORE_INDEX, dtype=torch.long)
    for k, (image, mask) in enumerate(batch):
        images[k, :, :image.shape[-2], :image.shape[-1]] = image
        masks[k, :mask.shape[-2], :mask.shape[-1]] = mask
    return images, masks


# ----------------------------------------------------------------------------- the command line's data
def split_indices(n: int, val_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """A seeded split of range(n): (train, validation) index lists; at least one validation item when
    ``val_fraction`` > 0 (and n >= 2), all of them when it is 1."""
    if not 0 <= val_fraction <= 1:
        raise ValueError(f"val_fraction must lie in [0, 1], got {val_fraction}")
    if val_fraction == 1:
        n_val = n
    elif val_fraction == 0 or n < 2:
        n_val = 0
    else:
        n_val = min(n - 1, max(1, round(n * val_fraction)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[n_val:]), sorted(order[:n_val])


def _stack_pairs(dataset, indices, root) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [dataset[i] for i in indices]
    shapes = sorted({tuple(image.shape[1:]) for image, _ in pairs})
    if len(shapes) > 1:
        raise ValueError(f"{root}: the images have different sizes ({', '.join(f'{h}x{w}' for h, w in shapes[:4])}"
                         "); pass --image-size S (size=S) to resize every pair to S x S")
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


@dataclass(frozen=True)
class DataFolder:
    """A user's folder as a run's data (``python -m lecturelib.train MODEL --data ROOT``).

    root: the folder (images/ + masks/, or images/ + instances/ [+ classes/]). num_classes: background
    included. class_names: a sequence or a text file (:func:`class_names_of`). size: resize every item to
    it (int or (H, W); None: each item's own size). val_fraction: share held out for validation, in [0, 1]
    (1: everything, for evaluation). binary: masks of 0 and one other value (:func:`semantic_labels`).
    split_seed: seeds the split. Raises ValueError for settings out of range.
    """

    root: Path
    num_classes: int
    class_names: object = None
    size: object = None
    val_fraction: float = 0.2
    binary: bool = False
    split_seed: int = 0

    def __post_init__(self):
        check_num_classes(self.num_classes)
        check_size(self.size)
        if not 0 <= self.val_fraction <= 1:
            raise ValueError(f"val_fraction must lie in [0, 1], got {self.val_fraction}")

    def about(self) -> dict:
        """The settings as plain values (for ``recipe.json``); ``DataFolder(**about)`` rebuilds it."""
        return {"root": str(self.root), "num_classes": self.num_classes,
                "class_names": None if self.class_names is None else (
                    str(self.class_names) if isinstance(self.class_names, (str, Path)) else list(self.class_names)),
                "size": self.size, "val_fraction": self.val_fraction, "binary": self.binary,
                "split_seed": self.split_seed}


def folder_data(kind: str, folder: DataFolder) -> tuple:
    """A user's folder split for a task: ``(train, validation, facts)``.

    kind "semantic": a :class:`SegmentationFolder`, each part as tensors (images float32[N, 3, H, W], masks
    int64[N, H, W]); the images must share one size, or set ``folder.size``. kind "instance": an
    :class:`InstanceFolder`, each part a list of (image, target) pairs. A part with no item is None.
    ``facts``: class_names, n_train, n_val and largest_side (pixels) of the data as loaded.
    """
    if kind == "semantic":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="SegmentationFolder: the images have")
            dataset = SegmentationFolder(folder.root, folder.num_classes, folder.size, binary=folder.binary,
                                         class_names=folder.class_names)
    elif kind == "instance":
        from .instances import InstanceFolder

        if folder.binary:
            raise ValueError("binary applies to semantic masks, not to instance label images")
        dataset = InstanceFolder(folder.root, folder.num_classes, folder.size, class_names=folder.class_names)
    else:
        raise ValueError(f"kind must be 'semantic' or 'instance', got {kind!r}")
    train_idx, val_idx = split_indices(len(dataset), folder.val_fraction, folder.split_seed)

    def part(indices):
        if not indices:
            return None
        if kind == "semantic":
            return _stack_pairs(dataset, indices, folder.root)
        return [dataset[i] for i in indices]

    sides = [max(hw) for hw in dataset.image_sizes] if dataset.size is None else [max(dataset.size)]
    facts = {"class_names": list(dataset.class_names), "n_train": len(train_idx), "n_val": len(val_idx),
             "largest_side": max(sides)}
    return part(train_idx), part(val_idx), facts
