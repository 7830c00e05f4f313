"""Instance data of your own: instance label images as torchvision detection targets, and a folder dataset.

An instance label image holds one integer id per pixel: 0 = background, each other id one instance
(ids need not be consecutive; 16-bit PNG or TIFF for more than 255 instances). :func:`instances_to_targets`
turns it (with each instance's class) into ``{"boxes", "labels", "masks"}``; :class:`InstanceFolder`
reads ``root/images`` + ``root/instances`` (+ ``root/classes``) as (image, target) pairs.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .datasets import check_num_classes, check_size, class_names_of, resize_pair, root_folders
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

CLASS_FILE_SUFFIXES = (".txt", ".csv")


def instances_to_targets(label_image, classes=None) -> dict:
    """An instance label image as a torchvision detection target.

    Args:
        label_image: int[H, W] (NumPy or tensor): 0 = background, each other id one instance (ids need not
            be consecutive).
        classes: the class (>= 1) of each instance: a dict {id: class}, a sequence in increasing id order,
            or None (every instance class 1).
    Returns:
        ``boxes`` float32[N, 4] (x0, y0, x1, y1 in pixel-edge coordinates: a mask whose columns run from 3 to
        7 has x0 = 3, x1 = 8, so no box is ever empty), ``labels`` int64[N], ``masks`` uint8[N, H, W], in
        increasing id order.
    Raises:
        ValueError: a label image that is not 2-D integers >= 0, or classes that do not match its ids.
    """
    lab = label_image.cpu().numpy() if isinstance(label_image, torch.Tensor) else np.asarray(label_image)
    if lab.ndim != 2 or lab.dtype.kind not in "biu":
        raise ValueError(f"label_image must be a 2-D integer array [H, W], got shape {lab.shape} and dtype "
                         f"{lab.dtype}")
    if lab.size and lab.min() < 0:
        raise ValueError(f"label_image holds negative ids ({int(lab.min())}); 0 is background, instances >= 1")
    ids = [int(v) for v in np.unique(lab) if v != 0]
    if classes is None:
        labels = [1] * len(ids)
    elif isinstance(classes, dict):
        table = {int(k): int(v) for k, v in classes.items()}
        missing, extra = sorted(set(ids) - set(table)), sorted(set(table) - set(ids))
        if missing or extra:
            raise ValueError(f"classes do not match the instance ids: no class for ids {missing[:10]}, classes for "
                             f"ids absent from the label image {extra[:10]}")
        labels = [table[i] for i in ids]
    else:
        labels = [int(c) for c in classes]
        if len(labels) != len(ids):
            raise ValueError(f"{len(labels)} classes for {len(ids)} instances; give one class per instance id, in "
                             "increasing id order")
    if any(c < 1 for c in labels):
        raise ValueError(f"instance classes must be >= 1 (0 is background), got {sorted(set(labels))[:10]}")
    H, W = lab.shape
    masks = np.stack([lab == i for i in ids]) if ids else np.zeros((0, H, W), bool)
    boxes = np.zeros((len(ids), 4), np.float32)
    for k, m in enumerate(masks):
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        boxes[k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return {"boxes": torch.from_numpy(boxes), "labels": torch.tensor(labels, dtype=torch.long).reshape(-1),
            "masks": torch.from_numpy(masks.astype(np.uint8))}


def read_instance_classes(path: str | Path) -> dict[int, int]:
    """A per-image class file: one line ``instance-id class`` per instance (spaces, tabs or a comma between;
    blank lines and lines starting with ``#`` skipped) -> {id: class}. Raises ValueError naming the line."""
    path = Path(path)
    table = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.replace(",", " ").split()
        try:
            ident, cls = (int(p) for p in parts)
        except ValueError:
            raise ValueError(f"{path} line {n}: expected two integers 'instance-id class', got {line!r}") from None
        if ident in table:
            raise ValueError(f"{path} line {n}: instance {ident} is listed twice")
        table[ident] = cls
    return table


class InstanceFolder(Dataset):
    """Images and instance label images paired by file name, as ``(image, target)`` detection pairs.

    ``root/images/<name>.*`` (as :class:`SegmentationFolder`), ``root/instances/<name>.png|tif`` (integer ids:
    0 = background, each other id one instance; 16-bit PNG or TIFF for more than 255 instances) and,
    optionally, ``root/classes/<name>.txt`` (:func:`read_instance_classes`). Without a ``classes/`` folder
    every instance is class 1 and num_classes must be 2.

    Returns ``(image float32[3, H, W] in [0, 1], target)`` with the target of :func:`instances_to_targets`
    (``boxes`` float32[N, 4], ``labels`` int64[N], ``masks`` uint8[N, H, W]).

    Args:
        num_classes: classes including background (instance classes are 1..num_classes-1).
        size: resize every item (int or (H, W)): image bilinear, ids nearest-exact; an instance that no pixel
            keeps is left out with a warning. None keeps each image's size (the detectors take images of
            any size; :class:`lecturelib.cascade.MaskCascade` pads them).
        class_names, intensity, strict, check: as :class:`lecturelib.datasets.SegmentationFolder`.

    Raises:
        FileNotFoundError: a missing folder, or no image with a label image of its name.
        ValueError: unpaired files (``strict``), unreadable or refused formats, an instance image of another
            size than its image, class files that do not match the ids, classes outside 1..num_classes-1.
    """

    kind = "InstanceFolder"

    def __init__(self, root: str | Path, num_classes: int = 2, size=None, images: str = "images",
                 instances: str = "instances", classes: str = "classes", *, class_names=None, intensity="dtype",
                 strict: bool = True, check: int | None = 64):
        root = Path(root)
        dirs = root_folders(root, "InstanceFolder", images=images, instances=instances)
        check_num_classes(num_classes)
        folders = {"images": (dirs["images"], IMAGE_SUFFIXES), "instances": (dirs["instances"], LABEL_SUFFIXES)}
        self.has_classes = (root / classes).is_dir()
        if self.has_classes:
            folders["classes"] = (root / classes, CLASS_FILE_SUFFIXES)
        elif num_classes != 2:
            raise ValueError(f"InstanceFolder: {root / classes} does not exist, so every instance is class 1: pass "
                             f"num_classes=2 (got {num_classes}) or add one class file per image there")
        self.items = pair_files(folders, strict=strict)
        self.num_classes, self.size, self.intensity = int(num_classes), check_size(size), intensity
        self.class_names = class_names_of(class_names, self.num_classes)
        self.image_sizes = []
        for item in self.items:
            check_label_header(item[1])
            hw, lhw = image_shape(item[0]), image_shape(item[1])
            if hw != lhw:
                raise ValueError(f"{item[1]}: instance image {lhw[0]}x{lhw[1]} differs from its image "
                                 f"{hw[0]}x{hw[1]}")
            self.image_sizes.append(hw)
        for i in evenly_spaced(len(self.items), check):
            self._labels_and_classes(i)

    def _labels_and_classes(self, index: int) -> tuple[np.ndarray, dict[int, int] | None]:
        item = self.items[index]
        labels = read_label_map(item[1])
        if not self.has_classes:
            return labels, None
        table = read_instance_classes(item[2])
        ids = {int(v) for v in np.unique(labels) if v != 0}
        missing, extra = sorted(ids - set(table)), sorted(set(table) - ids)
        bad = sorted({c for c in table.values() if not 1 <= c < self.num_classes})
        problems = ([f"no class for instance ids {missing[:10]}"] if missing else []) + \
                   ([f"ids {extra[:10]} are not in {item[1].name}"] if extra else []) + \
                   ([f"classes {bad[:10]} are outside 1..{self.num_classes - 1} (num_classes={self.num_classes})"]
                    if bad else [])
        if problems:
            raise ValueError(f"{item[2]}: {'; '.join(problems)}; write one line 'instance-id class' per instance "
                             "of the label image")
        return labels, table

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        item = self.items[index]
        image = read_image(item[0], self.intensity)
        labels, table = self._labels_and_classes(index)
        ids = torch.from_numpy(labels)
        if self.size is not None:
            before = {int(v) for v in np.unique(labels) if v != 0}
            image, ids = resize_pair(image, ids, self.size)
            kept = {int(v) for v in torch.unique(ids)}
            lost = sorted(before - kept)
            if lost:
                warnings.warn(f"{item[1]}: instances {lost[:10]} vanish when resized to {self.size[0]}x"
                              f"{self.size[1]}; they are left out", stacklevel=2)
            if table is not None:
                table = {k: v for k, v in table.items() if k in kept}
        return image, instances_to_targets(ids, table)


def instance_picture(masks, labels, scores=None, num_classes: int | None = None) -> np.ndarray:
    """A picture of instances for figures: each instance filled with its class's colour (:func:`lecturelib.viz.palette`,
    the colours of every class map in the course), a white line (1 px, inside the larger of the two) where one
    instance meets another, black where there is none. The edge against the background keeps the class colour (on
    items a dozen pixels wide a recoloured outline would change the colour one reads), and so does a sliver next to
    a larger instance. uint8[H, W, 3].

    masks: bool[N, H, W] (or float, inside where > 0.5); labels: int[N] classes (1..K-1); scores: float[N] or None
    (then the given order): the best-scored instance is drawn on top. Two touching items of one class stay two
    regions, told apart by the line between them. Raises ValueError when masks, labels and scores differ in number
    or a label is not a class number 1..num_classes - 1.
    """
    from .scenes import NUM_CLASSES
    from .viz import palette

    ms = torch.as_tensor(np.asarray(masks) if not isinstance(masks, torch.Tensor) else masks)
    if ms.dim() == 4 and ms.shape[1] == 1:
        ms = ms[:, 0]
    if ms.dim() != 3:
        raise ValueError(f"instance_picture: masks must be [N, H, W], got shape {tuple(ms.shape)}")
    ms = ms > 0.5 if ms.is_floating_point() else ms != 0
    labels = torch.as_tensor(labels).reshape(-1)
    if len(labels) != len(ms):
        raise ValueError(f"instance_picture: {len(ms)} masks but {len(labels)} labels")
    colours = palette(num_classes or NUM_CLASSES)
    if labels.is_floating_point() or (len(labels) and (labels.min() < 1 or labels.max() >= len(colours))):
        raise ValueError(f"instance_picture: labels must be whole class numbers 1..{len(colours) - 1} (0 is the "
                         f"background), got {labels.tolist()}; pass num_classes for more classes")
    if scores is not None and torch.as_tensor(scores).numel() != len(ms):
        raise ValueError(f"instance_picture: {len(ms)} masks but {torch.as_tensor(scores).numel()} scores")
    order = range(len(ms)) if scores is None else torch.as_tensor(scores).reshape(-1).argsort().tolist()
    ids = np.zeros(ms.shape[1:], dtype=np.int64)                     # 0 = nothing, k + 1 = instance k on top
    for k in order:                                                  # worst first, so the best ends on top
        ids[ms[k].numpy()] = k + 1
    out = np.zeros((*ids.shape, 3), dtype=np.uint8)
    for k in np.unique(ids[ids > 0]):
        out[ids == k] = colours[int(labels[k - 1])]
    # the line, 1 px: where two instances meet (4-neighbours), on the side of the larger one, so that a sliver of
    # an instance keeps its class colour rather than turning into line
    area = np.bincount(ids.ravel(), minlength=len(ms) + 1)
    rank = area * (len(ms) + 1) + np.arange(len(ms) + 1)            # larger area first, then the later instance
    line = np.zeros(ids.shape, dtype=bool)
    for a, b, sa, sb in ((ids[1:], ids[:-1], np.s_[1:], np.s_[:-1]), (ids[:, 1:], ids[:, :-1], np.s_[:, 1:],
                                                                       np.s_[:, :-1])):
        meet = (a != b) & (a > 0) & (b > 0)
        line[sa] |= meet & (rank[a] > rank[b])
        line[sb] |= meet & (rank[b] > rank[a])
    out[line] = 255
    return out
