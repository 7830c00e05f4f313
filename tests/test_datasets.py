"""Your own semantic data: formats read or refused, pairing, validation when built, label resizing, VOC."""
import warnings

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from lecturelib.datasets import (
    VOC_CLASSES,
    DataFolder,
    SegmentationFolder,
    VOCScenes,
    folder_data,
    pad_collate,
    resize_pair,
    split_indices,
)
from lecturelib.files import read_image, read_label_map


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


def save_pair(root, name, image, mask):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    if str(name).lower().endswith((".tif", ".tiff")):
        tifffile.imwrite(root / "images" / name, image)
    else:
        Image.fromarray(image).save(root / "images" / name)
    Image.fromarray(mask).save(root / "masks" / (name.rsplit(".", 1)[0] + ".png"))


def blob_mask(size=(20, 30), label=1):
    m = np.zeros(size, np.uint8)
    m[size[0] // 4:size[0] // 2 + 1, size[1] // 4:size[1] // 2 + 1] = label
    return m


def test_folder_dataset_reads_pairs_and_resizes(tmp_path):
    make_folder(tmp_path)
    ds = SegmentationFolder(tmp_path, num_classes=4)
    assert len(ds) == 3 and ds.class_names == ("background", "class 1", "class 2", "class 3")
    img, mask = ds[1]
    assert img.shape == (3, 20, 30) and mask.shape == (20, 30) and mask.dtype == torch.int64
    assert img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
    assert set(mask.unique().tolist()) <= {0, 1, 2, 3, 255}
    img, mask = SegmentationFolder(tmp_path, num_classes=4, size=16)[0]
    assert img.shape == (3, 16, 16) and mask.shape == (16, 16)
    img, mask = SegmentationFolder(tmp_path, num_classes=4, size=(10, 12))[0]
    assert img.shape == (3, 10, 12) and mask.shape == (10, 12)


def test_folder_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="images"):
        SegmentationFolder(tmp_path / "none", num_classes=4)
    make_folder(tmp_path, max_label=5)
    with pytest.raises(ValueError, match="num_classes"):
        SegmentationFolder(tmp_path, num_classes=1)
    with pytest.raises(ValueError, match="num_classes=4; raise num_classes or map them to 255"):
        SegmentationFolder(tmp_path, num_classes=4)


# ----------------------------------------------------------------------------- fault 1: binary 0/255 masks
def binary_folder(root, values=(0, 255)):
    a = np.zeros((375, 500), np.uint8)
    a[100:200, 100:300] = values[1]
    save_pair(root, "cell.png", np.zeros((375, 500, 3), np.uint8), a)
    return a


def test_binary_0_255_masks_are_refused_with_the_fix(tmp_path):
    binary_folder(tmp_path)
    with pytest.raises(ValueError, match=r"only 0 and 255.*binary=True"):
        SegmentationFolder(tmp_path, num_classes=2)
    _, mask = SegmentationFolder(tmp_path, num_classes=2, binary=True)[0]
    assert mask.unique().tolist() == [0, 1] and int(mask.sum()) == 100 * 200
    with pytest.raises(ValueError, match="num_classes=2"):
        SegmentationFolder(tmp_path, num_classes=3, binary=True)


def test_binary_0_1_masks_need_no_option(tmp_path):
    binary_folder(tmp_path, values=(0, 1))
    _, mask = SegmentationFolder(tmp_path, num_classes=2)[0]
    assert int(mask.sum()) == 100 * 200


def test_masks_without_any_object_are_refused(tmp_path):
    save_pair(tmp_path, "empty.png", np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="all background"):
        SegmentationFolder(tmp_path, num_classes=2)


# ----------------------------------------------------------------------------- fault 2: image dtypes
def test_uint16_tiff_is_scaled_not_clipped(tmp_path):
    rng = np.random.default_rng(0)
    u16 = rng.integers(0, 4096, (375, 500, 3)).astype(np.uint16)
    u16[0, 0] = 4095
    save_pair(tmp_path, "a.tif", u16, blob_mask((375, 500)))
    image = SegmentationFolder(tmp_path, 2)[0][0]
    assert float((image == 1.0).float().mean()) == 0.0                 # PIL's convert("RGB") put 94 % here
    torch.testing.assert_close(image, torch.from_numpy(u16).permute(2, 0, 1).float() / 65535)
    image = SegmentationFolder(tmp_path, 2, intensity=(0, 4095))[0][0]
    torch.testing.assert_close(image, torch.from_numpy(u16).permute(2, 0, 1).float() / 4095)
    image = SegmentationFolder(tmp_path, 2, intensity="image")[0][0]
    assert float(image.min()) == 0.0 and float(image.max()) == 1.0
    with pytest.raises(ValueError, match=r"outside intensity=\(0, 1000\)"):
        SegmentationFolder(tmp_path, 2, intensity=(0, 1000))[0]


@pytest.mark.parametrize("name,array,want", [
    ("grey16.png", np.array([[0, 65535], [1000, 30000]], np.uint16), [[0, 1], [1000 / 65535, 30000 / 65535]]),
    ("grey8.png", np.array([[0, 255], [51, 102]], np.uint8), [[0, 1], [0.2, 0.4]]),
    ("float.tif", np.array([[0.0, 1.0], [0.25, 0.5]], np.float32), [[0, 1], [0.25, 0.5]]),
    ("planar.tif", np.array([[[0, 255], [0, 0]]] * 3, np.uint8), [[0, 1], [0, 0]]),
    ("rgba.png", np.dstack([np.array([[0, 255], [51, 0]], np.uint8)] * 3 + [np.zeros((2, 2), np.uint8)]),
     [[0, 1], [0.2, 0]]),
])
def test_image_formats_read_as_stated(tmp_path, name, array, want):
    path = tmp_path / name
    if name.endswith(".tif"):
        kwargs = {"photometric": "rgb", "planarconfig": "separate"} if name.startswith("planar") else {}
        tifffile.imwrite(path, array, **kwargs)
    else:
        Image.fromarray(array).save(path)
    image = read_image(path)
    assert image.shape == (3, 2, 2) and image.dtype == torch.float32
    torch.testing.assert_close(image, torch.tensor(want, dtype=torch.float32).expand(3, 2, 2))


@pytest.mark.parametrize("array,words", [
    (np.array([[-5, 3], [0, 1]], np.int16), "intensity='image'"),
    (np.array([[0.0, 3.0], [0.0, 1.0]], np.float32), r"\[0, 3\]"),
    (np.zeros((5, 6, 7), np.uint8), "a stack or a volume"),
    (np.zeros((6, 7, 5), np.uint8), "1, 3 or 4 channels"),
    (np.array([[0.0, np.nan], [0.0, 1.0]], np.float32), "NaN"),
])
def test_images_without_a_fixed_scale_are_refused(tmp_path, array, words):
    layout = {"photometric": "minisblack", "planarconfig": "contig"} if array.shape == (6, 7, 5) else \
        {"photometric": "minisblack"}
    tifffile.imwrite(tmp_path / "x.tif", array, **layout)
    with pytest.raises(ValueError, match=words):
        read_image(tmp_path / "x.tif")


# ----------------------------------------------------------------------------- fault 3: unpaired files
def test_unpaired_images_and_masks_are_listed(tmp_path):
    make_folder(tmp_path, n=2)
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "images" / "lonely.png")
    Image.fromarray(blob_mask()).save(tmp_path / "masks" / "orphan.png")
    with pytest.raises(ValueError, match=r"lonely.*orphan.*strict=False"):
        SegmentationFolder(tmp_path, num_classes=4)
    with pytest.warns(UserWarning, match=r"lonely.*orphan"):
        ds = SegmentationFolder(tmp_path, num_classes=4, strict=False)
    assert len(ds) == 2


def test_pairing_ignores_the_case_of_suffixes_and_hidden_files(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "A.JPG", format="JPEG")
    Image.fromarray(blob_mask((8, 8))).save(tmp_path / "masks" / "A.PNG", format="PNG")
    (tmp_path / "images" / ".DS_Store").write_bytes(b"\0")
    assert len(SegmentationFolder(tmp_path, num_classes=2)) == 1


def test_pairing_names_the_problems(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for name in ("a.png", "a.jpg", "b.png"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / name)
    with pytest.raises(ValueError, match="several files share a name"):
        SegmentationFolder(tmp_path, num_classes=2)
    (tmp_path / "images" / "a.jpg").unlink()
    Image.fromarray(blob_mask((8, 8))).save(tmp_path / "masks" / "a.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "masks" / "b.jpg")
    with pytest.raises(ValueError, match=r"b\.jpg, not read here.*\.png, \.tif"):
        SegmentationFolder(tmp_path, num_classes=2)


# ----------------------------------------------------------------------------- fault 4: label resizing
def test_labels_resize_with_exact_pixel_centres():
    labels = torch.zeros(16, 16, dtype=torch.long)
    labels[:, 0:5] = 1                                    # the object covers columns 0-4
    image, resized = resize_pair(labels[None].repeat(3, 1, 1).float(), labels, 4)
    assert resized[0].tolist() == [1, 0, 0, 0]            # source columns 2, 6, 10, 14 (PIL's NEAREST)
    assert image[0, 0].tolist() == pytest.approx([0.964, 0.281, 0, 0], abs=1e-3)
    pil = np.asarray(Image.fromarray(labels.numpy().astype(np.uint8)).resize((4, 4), Image.NEAREST))
    assert resized.tolist() == pil.tolist()


# ----------------------------------------------------------------------------- fault 5: VOC masks validated
def fake_voc(root, mask_mode="P"):
    voc = root / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True)
    Image.fromarray(np.zeros((375, 500, 3), np.uint8)).save(voc / "JPEGImages" / "x.jpg")
    m = np.zeros((375, 500), np.uint8)
    m[50:100, 50:150] = 15                                    # a person
    m[49, 50:150] = 255
    mask = Image.fromarray(m, mode="L").convert("P")
    (mask.convert("RGB") if mask_mode == "RGB" else mask).save(voc / "SegmentationClass" / "x.png")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("x\n")


def test_voc_route_explains_missing_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="VOCdevkit/VOC2012"):
        VOCScenes(tmp_path)


def test_voc_masks_are_validated_like_folder_masks(tmp_path):
    fake_voc(tmp_path, "RGB")
    with pytest.raises(ValueError, match=r"x\.png.*mode 'RGB'.*colours, not indices"):
        VOCScenes(tmp_path, size=None)
    fake_voc(tmp_path / "ok")
    voc = VOCScenes(tmp_path / "ok", size=None)
    image, mask = voc[0]
    assert mask.shape == (375, 500) and set(mask.unique().tolist()) == {0, 15, 255}
    assert voc.class_names == VOC_CLASSES and voc.num_classes == 21
    image, mask = VOCScenes(tmp_path / "ok")[0]
    assert image.shape == (3, 256, 256) and mask.shape == (256, 256)


# ----------------------------------------------------------------------------- fault 6: checked when built
def test_bad_labels_are_found_when_built_with_plain_numbers(tmp_path):
    save_pair(tmp_path, "a.png", np.zeros((8, 8, 3), np.uint8), blob_mask((8, 8), label=3))
    with pytest.raises(ValueError, match=r"labels \[3\] are >= num_classes=3"):
        SegmentationFolder(tmp_path, num_classes=3)


@pytest.mark.parametrize("size", [0, -4, (8, 0), 2.5, "64"])
def test_bad_sizes_are_refused_when_built(tmp_path, size):
    save_pair(tmp_path, "a.png", np.zeros((8, 8, 3), np.uint8), blob_mask((8, 8)))
    with pytest.raises(ValueError, match="size must be None"):
        SegmentationFolder(tmp_path, num_classes=2, size=size)


def test_mixed_sizes_warn_with_the_fix_and_pad_collate_stacks_them(tmp_path):
    save_pair(tmp_path, "a.png", np.zeros((375, 500, 3), np.uint8), blob_mask((375, 500)))
    save_pair(tmp_path, "b.png", np.zeros((500, 333, 3), np.uint8), blob_mask((500, 333)))
    with pytest.warns(UserWarning, match=r"375x500.*size=.*pad_collate"):
        ds = SegmentationFolder(tmp_path, num_classes=2)
    images, masks = pad_collate([ds[0], ds[1]])
    assert images.shape == (2, 3, 500, 500) and masks.shape == (2, 500, 500)
    assert (masks[0, 375:] == 255).all() and (masks[1, :, 333:] == 255).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SegmentationFolder(tmp_path, num_classes=2, size=64)


def test_masks_of_another_size_than_their_image_are_refused_when_built(tmp_path):
    save_pair(tmp_path, "a.png", np.zeros((8, 9, 3), np.uint8), blob_mask((8, 8)))
    with pytest.raises(ValueError, match="a.png is 8x8, its image 8x9"):
        SegmentationFolder(tmp_path, num_classes=2)


@pytest.mark.parametrize("save,words", [
    (lambda p: Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(p.with_suffix(".png")), "mode 'RGB'"),
    (lambda p: tifffile.imwrite(p.with_suffix(".tif"), np.full((4, 4), -1, np.int16)), "negative"),
    (lambda p: tifffile.imwrite(p.with_suffix(".tif"), np.full((4, 4), 0.5, np.float32)), "non-integer"),
])
def test_label_files_that_are_not_integer_maps_are_refused(tmp_path, save, words):
    save(tmp_path / "m")
    path = next(tmp_path.iterdir())
    with pytest.raises(ValueError, match=words):
        read_label_map(path)


def test_label_formats_read_as_the_stored_integers(tmp_path):
    ids = np.array([[0, 300], [65535, 7]], np.uint16)
    Image.fromarray(ids).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "a.tif", ids.astype(np.int32))
    Image.fromarray(np.array([[True, False], [False, True]])).save(tmp_path / "b.png")
    assert read_label_map(tmp_path / "a.png").tolist() == ids.tolist()
    assert read_label_map(tmp_path / "a.tif").tolist() == ids.tolist()
    assert read_label_map(tmp_path / "b.png").tolist() == [[1, 0], [0, 1]]


def test_class_names_come_with_the_dataset(tmp_path):
    make_folder(tmp_path)
    names = tmp_path / "names.txt"
    names.write_text("# background first\nbackground\nsky\n\nroad\ncar\n")
    assert SegmentationFolder(tmp_path, 4, class_names=names).class_names == ("background", "sky", "road", "car")
    with pytest.raises(ValueError, match="3 class names for num_classes=4"):
        SegmentationFolder(tmp_path, 4, class_names=["a", "b", "c"])


# ----------------------------------------------------------------------------- the command line's data
def test_split_is_seeded_and_covers_everything():
    train, val = split_indices(10, 0.2, seed=0)
    assert sorted(train + val) == list(range(10)) and len(val) == 2 and (train, val) == split_indices(10, 0.2, 0)
    assert split_indices(3, 0.01)[1] != [] and split_indices(3, 1.0) == ([], [0, 1, 2])
    assert split_indices(1, 0.5) == ([0], [])


def test_folder_data_gives_tensors_and_refuses_mixed_sizes(tmp_path):
    make_folder(tmp_path, n=5)
    train, val, facts = folder_data("semantic", DataFolder(tmp_path, 4, val_fraction=0.4))
    assert train[0].shape == (3, 3, 20, 30) and val[1].shape == (2, 20, 30)
    assert facts["n_train"] == 3 and facts["largest_side"] == 30
    save_pair(tmp_path, "big.png", np.zeros((40, 30, 3), np.uint8), blob_mask((40, 30)))
    with pytest.raises(ValueError, match="--image-size"):
        folder_data("semantic", DataFolder(tmp_path, 4))
    train, _, facts = folder_data("semantic", DataFolder(tmp_path, 4, size=16))
    assert train[0].shape[-2:] == (16, 16) and facts["largest_side"] == 16


def test_check_samples_label_values_and_every_item_is_checked_on_load(tmp_path):
    for i in range(4):
        save_pair(tmp_path, f"{i}.png", np.zeros((8, 8, 3), np.uint8), blob_mask((8, 8), label=9 if i == 3 else 1))
    ds = SegmentationFolder(tmp_path, num_classes=2, check=1)              # checks 0.png only
    with pytest.raises(ValueError, match=r"3\.png: labels \[9\]"):
        ds[3]
    with pytest.raises(ValueError, match=r"3\.png: labels \[9\]"):
        SegmentationFolder(tmp_path, num_classes=2, check=None)


def test_unreadable_files_are_named(tmp_path):
    save_pair(tmp_path, "a.png", np.zeros((8, 8, 3), np.uint8), blob_mask((8, 8)))
    (tmp_path / "masks" / "a.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"a\.png: cannot read"):
        SegmentationFolder(tmp_path, num_classes=2)
