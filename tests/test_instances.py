"""Instance data of your own: label images as detection targets, the instance folder."""
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from lecturelib.instances import InstanceFolder, instances_to_targets, read_instance_classes
from lecturelib.proposals import masks_to_boxes


def label_image():
    lab = np.zeros((20, 30), np.uint16)
    lab[2:5, 3] = 7                        # one pixel wide
    lab[10:15, 10:20] = 300                # an id above 255
    lab[16:18, 25:28] = 2
    return lab


def test_instances_to_targets_in_the_detection_format():
    t = instances_to_targets(label_image(), {7: 1, 300: 2, 2: 3})
    assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64 and t["masks"].dtype == torch.uint8
    assert t["labels"].tolist() == [3, 1, 2]                                      # increasing ids 2, 7, 300
    assert t["boxes"].tolist() == [[25, 16, 28, 18], [3, 2, 4, 5], [10, 10, 20, 15]]
    assert t["masks"].shape == (3, 20, 30) and t["masks"].sum((1, 2)).tolist() == [6, 3, 50]
    assert torch.equal(t["boxes"], masks_to_boxes(t["masks"].bool()))           # the course's pixel-edge boxes
    assert instances_to_targets(label_image(), [3, 1, 2])["labels"].tolist() == [3, 1, 2]
    assert instances_to_targets(label_image())["labels"].tolist() == [1, 1, 1]
    empty = instances_to_targets(torch.zeros(4, 5, dtype=torch.long))
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 4, 5)


@pytest.mark.parametrize("label,classes,words", [
    (label_image(), {7: 1, 300: 2}, r"no class for ids \[2\]"),
    (label_image(), {7: 1, 300: 2, 2: 1, 9: 1}, r"absent from the label image \[9\]"),
    (label_image(), [1, 2], "3 instances"),
    (label_image(), {7: 0, 300: 2, 2: 1}, ">= 1"),
    (np.zeros((2, 3, 4), np.uint8), None, "2-D integer"),
    (np.full((3, 3), 0.5), None, "2-D integer"),
    (np.array([[-1, 0]]), None, "negative"),
])
def test_instances_to_targets_refuses_what_does_not_fit(label, classes, words):
    with pytest.raises(ValueError, match=words):
        instances_to_targets(label, classes)


def make_instance_folder(root, n=3, size=(24, 32), classes=True):
    for d in ("images", "instances") + (("classes",) if classes else ()):
        (root / d).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, size + (3,), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        lab = np.zeros(size, np.uint16)
        lab[2:10, 3:12] = 5
        lab[12:20, 14:30] = 9
        tifffile.imwrite(root / "instances" / f"{i}.tif", lab)
        if classes:
            (root / "classes" / f"{i}.txt").write_text("# id class\n5 1\n9, 2\n")


def test_instance_folder_reads_pairs_with_classes(tmp_path):
    make_instance_folder(tmp_path)
    ds = InstanceFolder(tmp_path, num_classes=3, class_names=["bg", "cell", "nucleus"])
    image, target = ds[0]
    assert image.shape == (3, 24, 32) and target["labels"].tolist() == [1, 2]
    assert target["boxes"].tolist() == [[3, 2, 12, 10], [14, 12, 30, 20]] and ds.class_names[2] == "nucleus"
    image, target = InstanceFolder(tmp_path, num_classes=3, size=12)[0]
    assert image.shape == (3, 12, 12) and target["masks"].shape == (2, 12, 12)


def test_instance_folder_without_classes_is_one_class(tmp_path):
    make_instance_folder(tmp_path, classes=False)
    assert InstanceFolder(tmp_path)[1][1]["labels"].tolist() == [1, 1]
    with pytest.raises(ValueError, match="num_classes=2"):
        InstanceFolder(tmp_path, num_classes=3)


def test_instance_folder_checks_classes_and_pairs_when_built(tmp_path):
    make_instance_folder(tmp_path)
    (tmp_path / "classes" / "1.txt").write_text("5 1\n9 7\n")
    with pytest.raises(ValueError, match=r"1\.txt: classes \[7\] are outside 1\.\.2"):
        InstanceFolder(tmp_path, num_classes=3)
    (tmp_path / "classes" / "1.txt").write_text("5 1\n")
    with pytest.raises(ValueError, match=r"no class for instance ids \[9\]"):
        InstanceFolder(tmp_path, num_classes=3)
    (tmp_path / "classes" / "1.txt").unlink()
    with pytest.raises(ValueError, match=r"have no partner: 1"):
        InstanceFolder(tmp_path, num_classes=3)


def test_vanishing_instances_are_left_out_with_a_warning(tmp_path):
    make_instance_folder(tmp_path, n=1)
    lab = np.zeros((24, 32), np.uint16)
    lab[2:10, 3:12] = 5
    lab[20, 30] = 9                                    # one pixel: gone at 4 x 4
    tifffile.imwrite(tmp_path / "instances" / "0.tif", lab)
    with pytest.warns(UserWarning, match=r"instances \[9\] vanish"):
        _, target = InstanceFolder(tmp_path, num_classes=3, size=4)[0]
    assert target["labels"].tolist() == [1]


def test_class_file_errors_name_the_line(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("1 2\nthree 4\n")
    with pytest.raises(ValueError, match="line 2"):
        read_instance_classes(path)
    path.write_text("1 2\n1 3\n")
    with pytest.raises(ValueError, match="listed twice"):
        read_instance_classes(path)
