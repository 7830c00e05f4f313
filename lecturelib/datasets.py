"""Your own data: a folder of images + PNG label maps, or PASCAL VOC already on disk.

Both return ``(image float32[3, H, W] in [0, 1], mask int64[H, W])`` like
:class:`lecturelib.scenes.CourseScenes` in semantic mode, so every lesson's
model, training loop and metric works on them unchanged.

Folder layout (VOC style)::

    root/images/0001.jpg   root/masks/0001.png   (same stem; the PNG holds class indices,
    root/images/0002.png   root/masks/0002.png    palette or greyscale; 255 = ignore)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from .metrics import IGNORE_INDEX

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def _resize_pair(image: torch.Tensor, mask: torch.Tensor, size: int | tuple[int, int] | None):
    if size is None:
        return image, mask
    hw = (size, size) if isinstance(size, int) else tuple(size)
    image = F.interpolate(image[None], size=hw, mode="bilinear", align_corners=False, antialias=True)[0]
    mask = F.interpolate(mask[None, None].float(), size=hw, mode="nearest")[0, 0].long()
    return image, mask


class SegmentationFolder(Dataset):
    """Images and PNG label maps paired by file stem.

    Args:
        root: folder holding ``images/`` and ``masks/`` (names configurable).
        num_classes: classes including background; labels must be < num_classes or 255.
        size: resize every pair to ``size`` (int or (H, W)); None keeps the original size.
    """

    def __init__(self, root: str | Path, num_classes: int, size: int | tuple[int, int] | None = None,
                 images: str = "images", masks: str = "masks"):
        root = Path(root)
        self.image_dir, self.mask_dir = root / images, root / masks
        for d, what in ((self.image_dir, "images"), (self.mask_dir, "masks")):
            if not d.is_dir():
                raise FileNotFoundError(f"SegmentationFolder: {d} does not exist; put the {what} in "
                                        f"{root}/{images if what == 'images' else masks}/ (see the docstring layout)")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2 (background included), got {num_classes!r}")
        masks_by_stem = {p.stem: p for p in self.mask_dir.glob("*.png")}
        self.pairs = [(p, masks_by_stem[p.stem]) for p in sorted(self.image_dir.iterdir())
                      if p.suffix.lower() in IMAGE_SUFFIXES and p.stem in masks_by_stem]
        if not self.pairs:
            raise FileNotFoundError(f"SegmentationFolder: no image in {self.image_dir} has a PNG mask with the "
                                    f"same name in {self.mask_dir}")
        self.num_classes, self.size = num_classes, size

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        img_path, mask_path = self.pairs[index]
        image = np.asarray(Image.open(img_path).convert("RGB"))
        mask_img = Image.open(mask_path)
        if mask_img.mode not in ("P", "L", "I", "I;16"):
            raise ValueError(f"{mask_path}: a label map must be a palette or greyscale PNG of class indices, "
                             f"got mode {mask_img.mode}")
        mask = np.asarray(mask_img).astype(np.int64)
        if mask.shape != image.shape[:2]:
            raise ValueError(f"{mask_path}: mask size {mask.shape} differs from image size {image.shape[:2]}")
        bad = (mask >= self.num_classes) & (mask != IGNORE_INDEX)
        if bad.any():
            raise ValueError(f"{mask_path}: labels {sorted(np.unique(mask[bad]))[:5]} are >= num_classes="
                             f"{self.num_classes}; raise num_classes or map them to 255 (ignore)")
        image_t = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255
        return _resize_pair(image_t, torch.from_numpy(mask), self.size)


VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")


class VOCScenes(Dataset):
    """torchvision's ``VOCSegmentation`` (never downloads) in the course's format: 21 classes, 255 = ignore.

    root: the folder that holds ``VOCdevkit/VOC2012``.
    """

    def __init__(self, root: str | Path, image_set: str = "val", year: str = "2012", size: int | None = 256):
        from torchvision.datasets import VOCSegmentation

        try:
            self.voc = VOCSegmentation(str(root), year=year, image_set=image_set, download=False)
        except RuntimeError as exc:
            raise FileNotFoundError(f"PASCAL VOC {year} not found under {root} (expected {root}/VOCdevkit/VOC{year}); "
                                    "download and extract it yourself, then pass its parent folder as root") from exc
        self.size = size
        self.num_classes = len(VOC_CLASSES)
        self.class_names = VOC_CLASSES

    def __len__(self) -> int:
        return len(self.voc)

    def __getitem__(self, index: int):
        image, mask = self.voc[index]
        image_t = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1).float() / 255
        mask_t = torch.from_numpy(np.asarray(mask).astype(np.int64))
        return _resize_pair(image_t, mask_t, self.size)
