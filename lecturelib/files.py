"""Reading your own images and label maps from disk, and pairing the files of several folders.

Images (:func:`read_image`): JPEG, PNG (8- or 16-bit), BMP and TIFF (read with ``tifffile``: any
integer or float dtype, channels last or planar), grey, RGB or RGBA (the alpha channel is dropped).
Every image becomes float32[3, H, W] in [0, 1]; how its values are scaled is stated by ``intensity``:

- ``"dtype"`` (default): integers divided by their type's maximum (uint8 by 255, uint16 by 65535,
  uint32 by 2**32 - 1), bool as 0 / 1, floats must already lie in [0, 1];
- ``"image"``: each image scaled by its own range, (x - min) / (max - min);
- ``(low, high)``: (x - low) / (high - low), e.g. ``(0, 4095)`` for 12-bit data in uint16 files.

Anything else (signed integers or out-of-range floats under ``"dtype"``, values outside ``(low, high)``,
stacks, more than 4 channels) raises ValueError naming the file and the fix; nothing is clipped.

Label maps (:func:`read_label_map`): palette (``P``), greyscale (``L``), 16-bit (``I;16``) or 1-bit PNGs,
and 2-D integer TIFFs, read as the integers they store. RGB masks (colours, not indices), JPEG masks
(lossy) and negative labels are refused.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
LABEL_SUFFIXES = (".png", ".tif", ".tiff")
TIFF_SUFFIXES = (".tif", ".tiff")
LABEL_MODES = ("P", "L", "I", "I;16", "I;16L", "I;16B", "1")
_PIL_RAW_MODES = ("I", "I;16", "I;16L", "I;16B", "F", "1")   # read as stored, not converted to 8-bit RGB


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in TIFF_SUFFIXES


def _tiff_array(path: Path, what: str) -> tuple[np.ndarray, str]:
    """The pixels of a one-series TIFF and its axes string (tifffile: Y, X rows and columns, S samples)."""
    with tifffile.TiffFile(path) as tif:
        if len(tif.series) != 1:
            raise ValueError(f"{path}: a TIFF with {len(tif.series)} image series; save one {what} per file")
        series = tif.series[0]
        return series.asarray(), series.axes


def _tiff_shape(path: Path) -> tuple[int, int]:
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes, shape = series.axes, series.shape
    return int(shape[axes.index("Y")]), int(shape[axes.index("X")])


def image_shape(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image or label file, read from its header only (cheap)."""
    path = Path(path)
    try:
        if _is_tiff(path):
            return _tiff_shape(path)
        with Image.open(path) as img:
            return img.size[1], img.size[0]
    except (OSError, ValueError, IndexError) as exc:
        raise ValueError(f"{path}: cannot read this file's header ({exc}); is it a valid image?") from exc


# ----------------------------------------------------------------------------- images
def _image_pixels(path: Path) -> np.ndarray:
    """The stored pixel array: [H, W] or [H, W, C] (channels last), any dtype."""
    if _is_tiff(path):
        arr, axes = _tiff_array(path, "image")
        if axes == "SYX":                                       # planar RGB: samples first
            arr = np.moveaxis(arr, 0, -1)
        elif axes not in ("YX", "YXS"):
            raise ValueError(f"{path}: a TIFF with axes {axes!r} and shape {arr.shape} (a stack or a volume?); "
                             "save one 2-D grey or RGB image per file")
        return arr
    with Image.open(path) as img:
        if img.mode not in _PIL_RAW_MODES:
            return np.asarray(img.convert("RGB"))
        arr = np.asarray(img)
        if img.format == "PNG" and arr.dtype.kind == "i":      # a 16-bit PNG that Pillow opened as 32-bit
            arr = arr.astype(np.uint16)
        return arr


def _rgb(arr: np.ndarray, path: Path) -> np.ndarray:
    """[H, W] or [H, W, 1 | 2 | 3 | 4] -> [H, W, 3] (grey repeated, alpha dropped)."""
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] in (1, 2):
        return np.repeat(arr[..., :1], 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return arr[..., :3]
    raise ValueError(f"{path}: pixel array of shape {arr.shape} is not a grey, RGB or RGBA image; the models "
                     "take 3 channels: save one image per file with 1, 3 or 4 channels")


def scale_intensity(arr: np.ndarray, where: str, intensity="dtype") -> np.ndarray:
    """float32 array in [0, 1] from pixel values ``arr`` of any dtype, as ``intensity`` says (see the module).

    Raises ValueError naming ``where`` and the fix when the values do not fit the rule.
    """
    if arr.dtype == bool:
        return arr.astype(np.float32)
    values = arr.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"{where}: the image holds NaN or infinite values; replace them before training")
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if isinstance(intensity, str) and intensity == "image":
        return ((values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)).astype(np.float32)
    if isinstance(intensity, (tuple, list)) and len(intensity) == 2:
        low, high = float(intensity[0]), float(intensity[1])
        if not high > low:
            raise ValueError(f"intensity=(low, high) needs high > low, got {tuple(intensity)}")
        if lo < low or hi > high:
            raise ValueError(f"{where}: values span [{lo:g}, {hi:g}], outside intensity=({low:g}, {high:g}); "
                             "widen the range or pass intensity='image'")
        return ((values - low) / (high - low)).astype(np.float32)
    if not (isinstance(intensity, str) and intensity == "dtype"):
        raise ValueError(f"intensity must be 'dtype', 'image' or a pair (low, high), got {intensity!r}")
    if np.issubdtype(arr.dtype, np.unsignedinteger):
        return (values / np.iinfo(arr.dtype).max).astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating) and lo >= 0 and hi <= 1:
        return values.astype(np.float32)
    raise ValueError(f"{where}: {arr.dtype} pixel values spanning [{lo:g}, {hi:g}] have no fixed scale to [0, 1]; "
                     "pass intensity='image' (each image by its own range) or intensity=(low, high)")


def read_image(path: str | Path, intensity="dtype") -> torch.Tensor:
    """One image file -> float32[3, H, W] in [0, 1] (see the module for the formats and ``intensity``).

    Raises ValueError naming the file for an unreadable file, an unsupported layout or values that
    ``intensity`` cannot scale.
    """
    path = Path(path)
    try:
        arr = _image_pixels(path)
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"{path}: cannot read this image ({exc})") from exc
    rgb = _rgb(arr, path)
    if rgb.dtype == np.uint8 and isinstance(intensity, str) and intensity == "dtype":
        scaled = torch.from_numpy(rgb.copy()).float() / 255
    else:
        scaled = torch.from_numpy(np.ascontiguousarray(scale_intensity(rgb, str(path), intensity)))
    return scaled.permute(2, 0, 1).contiguous()


# ----------------------------------------------------------------------------- label maps
def label_array(img: Image.Image, where: str) -> np.ndarray:
    """The class indices of a PIL label image (palette, greyscale, 16-bit or 1-bit): int64[H, W].

    Raises ValueError naming ``where`` for colour images (RGB masks hold colours, not indices).
    """
    _check_label_mode(img.mode, where)
    return np.asarray(img).astype(np.int64)


def _check_label_mode(mode: str, where: str) -> None:
    if mode not in LABEL_MODES:
        raise ValueError(f"{where}: a label map must be a palette ('P'), greyscale ('L'), 16-bit ('I;16') or "
                         f"1-bit PNG of integer labels, got mode {mode!r}; an RGB mask holds colours, not "
                         "indices: convert each colour to its class index (or keep VOC's palette PNGs as they are)")


def check_label_header(path: str | Path) -> None:
    """Refuse a label file by its header alone (cheap): wrong PNG mode, non-2-D or non-numeric TIFF."""
    path = Path(path)
    try:
        if _is_tiff(path):
            with tifffile.TiffFile(path) as tif:
                axes, dtype = tif.series[0].axes, np.dtype(tif.series[0].dtype)
            if axes != "YX" or dtype.kind not in "buif":
                raise ValueError(f"{path}: a label TIFF must be one 2-D integer image, got axes {axes!r}, "
                                 f"dtype {dtype}")
            return
        with Image.open(path) as img:
            _check_label_mode(img.mode, str(path))
    except (OSError, IndexError) as exc:
        raise ValueError(f"{path}: cannot read this label file ({exc}); is it a valid PNG or TIFF?") from exc


def read_label_map(path: str | Path) -> np.ndarray:
    """A label file (PNG or TIFF of integers, 2-D) -> int64[H, W], the values as stored.

    Raises ValueError naming the file for colour or lossy masks, non-integer or negative values.
    """
    path = Path(path)
    if path.suffix.lower() not in LABEL_SUFFIXES:
        raise ValueError(f"{path}: label maps are read from PNG or TIFF files only ({path.suffix} is lossy or not "
                         "a label format); save the labels as PNG")
    if _is_tiff(path):
        arr, axes = _tiff_array(path, "label map")
        if axes != "YX":
            raise ValueError(f"{path}: a label TIFF must be one 2-D image, got axes {axes!r} and shape {arr.shape}")
        if arr.dtype.kind == "f":
            if not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
                raise ValueError(f"{path}: a float label TIFF with non-integer values; labels are integers")
        elif arr.dtype.kind not in "bui":
            raise ValueError(f"{path}: label TIFF of dtype {arr.dtype}; save integer labels")
        labels = arr.astype(np.int64)
    else:
        try:
            with Image.open(path) as img:
                labels = label_array(img, str(path))
        except OSError as exc:
            raise ValueError(f"{path}: cannot read this label map ({exc})") from exc
    if labels.size and labels.min() < 0:
        raise ValueError(f"{path}: negative labels ({int(labels.min())}); labels are 0 (background) and up")
    return labels


# ----------------------------------------------------------------------------- pairing
def _listing(folder: Path, suffixes: tuple[str, ...]) -> tuple[dict[str, Path], list[Path]]:
    """{stem: file} of the files in ``folder`` with one of ``suffixes`` (any case; hidden files skipped) and
    the other visible files. Two files with the same stem raise ValueError."""
    found, other, clashes = {}, [], []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        if p.suffix.lower() not in suffixes:
            other.append(p)
        elif p.stem in found:
            clashes.append((found[p.stem].name, p.name))
        else:
            found[p.stem] = p
    if clashes:
        raise ValueError(f"{folder}: several files share a name: {clashes[:5]}; keep one file per name")
    return found, other


def _names(stems, n: int = 8) -> str:
    stems = sorted(stems)
    return ", ".join(stems[:n]) + (f" and {len(stems) - n} more" if len(stems) > n else "")


def pair_files(folders: dict[str, tuple[Path, tuple[str, ...]]], strict: bool = True) -> list[tuple[Path, ...]]:
    """Files of several folders paired by name: one tuple per stem found in every folder, sorted by stem.

    ``folders``: {role: (folder, accepted suffixes)}; a file's suffix is compared in any case (``.PNG`` and
    ``.png`` alike) and files whose names start with ``.`` are skipped. Two files with one stem in a folder
    raise ValueError. Unpaired files raise ValueError listing them (``strict``), or are left out with a
    warning listing them (``strict=False``). No pair at all raises FileNotFoundError.
    """
    listings = {role: _listing(folder, suffixes) for role, (folder, suffixes) in folders.items()}
    common = set.intersection(*(set(found) for found, _ in listings.values()))
    problems = []
    for role, (found, other) in listings.items():
        folder = folders[role][0]
        alone = set(found) - common
        if alone:
            problems.append(f"{len(alone)} file(s) in {folder} have no partner: {_names(alone)}")
        misfits = [p.name for p in other if any(p.stem in f for f, _ in listings.values())]
        if misfits:
            problems.append(f"{folder} also holds {_names(misfits)}, not read here (accepted: "
                            f"{', '.join(folders[role][1])})")
    everything = set.union(*(set(found) for found, _ in listings.values()))
    lower = {}
    for stem in everything - common:
        lower.setdefault(stem.lower(), []).append(stem)
    cased = [names for names in lower.values() if len(names) > 1]
    if cased:
        problems.append(f"names that differ only in case (pairing is exact): {cased[:5]}")
    if problems and strict:
        raise ValueError("unpaired files (files are paired by name without the suffix): " + "; ".join(problems)
                         + ". Add or rename the missing files, or pass strict=False to leave them out")
    if problems:
        warnings.warn("left out unpaired files: " + "; ".join(problems), stacklevel=3)
    if not common:
        where = ", ".join(str(folder) for folder, _ in folders.values())
        raise FileNotFoundError(f"no file name appears in all of {where}; a pair is files with the same name "
                                "without the suffix (e.g. images/0001.jpg and masks/0001.png)")
    return [tuple(listings[role][0][stem] for role in folders) for stem in sorted(common)]


def evenly_spaced(n: int, k: int | None) -> list[int]:
    """``k`` indices spread evenly over range(n) (all of them when ``k`` is None or >= n)."""
    if k is None or k >= n:
        return list(range(n))
    if k < 1:
        return []
    return sorted({math.floor(i * n / k) for i in range(k)})
