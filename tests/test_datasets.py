import numpy as np
import pytest
import torch
from PIL import Image

from lecturelib.datasets import SegmentationFolder, VOCScenes


def make_folder(root, n=3, size=(20, 30), max_label=3):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, size + (3,), dtype=np.uint8)).save(root / "images" / f"{i:03d}.jpg")
        mask = rng.integers(0, max_label + 1, size).astype(np.uint8)
        mask[0, 0] = 255
        img = Image.fromarray(mask, mode="L").convert("P")
        img.save(root / "masks" / f"{i:03d}.png")
    Image.fromarray(np.zeros(size + (3,), np.uint8)).save(root / "images" / "unpaired.png")


def test_folder_dataset_reads_pairs_and_resizes(tmp_path):
    make_folder(tmp_path)
    ds = SegmentationFolder(tmp_path, num_classes=4)
    assert len(ds) == 3
    img, mask = ds[1]
    assert img.shape == (3, 20, 30) and mask.shape == (20, 30) and mask.dtype == torch.int64
    assert set(mask.unique().tolist()) <= {0, 1, 2, 3, 255}
    img, mask = SegmentationFolder(tmp_path, num_classes=4, size=16)[0]
    assert img.shape == (3, 16, 16) and mask.shape == (16, 16)


def test_folder_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="images"):
        SegmentationFolder(tmp_path / "none", num_classes=4)
    make_folder(tmp_path, max_label=5)
    with pytest.raises(ValueError, match="num_classes"):
        SegmentationFolder(tmp_path, num_classes=1)
    with pytest.raises(ValueError, match="num_classes=4; raise num_classes or map them to 255"):
        SegmentationFolder(tmp_path, num_classes=4)[0]


def test_voc_route_explains_missing_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="VOCdevkit/VOC2012"):
        VOCScenes(tmp_path)
