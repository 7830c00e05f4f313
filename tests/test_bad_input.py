"""Bad input across the public API: a clear error that names the argument and the fix."""
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

import lecturelib
from lecturelib import assets
from lecturelib.metrics import BoundaryAccuracy, ConfusionMatrix, boundary_band
from lecturelib.scenes import CourseScenes, SceneConfig, course_scene, load_items
from lecturelib.tasks import SemanticTask, logits_of
from lecturelib.training import TrainConfig, evaluate, load_checkpoint
from lecturelib.upsampling import bilinear_kernel, bilinear_upsampler
from lecturelib.viz import colorize, overlay, palette

CASES = [
    # (callable, exception type, words the message must contain)
    (lambda: lecturelib.get_profile("fast"), ValueError, ["'fast'", "quick", "LECTURELIB_PROFILE"]),
    (lambda: lecturelib.get_profile(3), ValueError, ["profile"]),
    (lambda: lecturelib.setup(seed=-1, verbose=False), ValueError, ["seed", "non-negative"]),
    (lambda: lecturelib.setup(device="tpu", verbose=False), ValueError, ["device", "cpu"]),
    (lambda: lecturelib.PROFILES["quick"].scaled(imagesize=32), ValueError, ["imagesize", "image_size"]),
    (lambda: CourseScenes("val"), ValueError, ["split", "train"]),
    (lambda: CourseScenes("train", n=-3), ValueError, ["n must be", "non-negative"]),
    (lambda: CourseScenes("train", n=2.5), ValueError, ["n must be"]),
    (lambda: CourseScenes("train", n=4, size=8), ValueError, ["size", ">= 16"]),
    (lambda: CourseScenes("train", n=4, mode="panoptic"), ValueError, ["mode", "instance"]),
    (lambda: CourseScenes("train", n=4, seed=-1), ValueError, ["seed"]),
    (lambda: CourseScenes("train", n=4)[7], IndexError, ["out of range", "4 scenes"]),
    (lambda: SceneConfig(min_items=4, max_items=2), ValueError, ["min_items", "max_items"]),
    (lambda: SceneConfig(min_scale=0.9, max_scale=0.5), ValueError, ["min_scale"]),
    (lambda: course_scene("train", -1), ValueError, ["index", "non-negative"]),
    (lambda: ConfusionMatrix(1), ValueError, ["num_classes", ">= 2"]),
    (lambda: ConfusionMatrix(3).update(torch.rand(2, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long)),
     ValueError, ["integer label maps", "argmax"]),
    (lambda: ConfusionMatrix(3).update(torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(2, 5, 4, dtype=torch.long)),
     ValueError, ["shape", "resize"]),
    (lambda: ConfusionMatrix(3).update(torch.zeros(4, dtype=torch.long), torch.full((4,), 7)),
     ValueError, ["outside 0..2", "num_classes"]),
    (lambda: boundary_band(torch.zeros(2, 2, 4, 4, dtype=torch.long)), ValueError, ["[H, W]"]),
    (lambda: BoundaryAccuracy(width=0), ValueError, ["width", ">= 1"]),
    (lambda: TrainConfig(epochs=-1), ValueError, ["epochs"]),
    (lambda: TrainConfig(lr=0), ValueError, ["lr", "positive"]),
    (lambda: logits_of({"aux": torch.zeros(1)}), ValueError, ["'out'"]),
    (lambda: load_checkpoint("/nonexistent/model.pt", nn.Linear(2, 2)), FileNotFoundError, ["model.pt", "train first"]),
    (lambda: bilinear_kernel(3, 3, 0), ValueError, ["kernel_size"]),
    (lambda: bilinear_upsampler(3, 0), ValueError, ["factor"]),
    (lambda: palette(0), ValueError, ["num_classes"]),
    (lambda: colorize(np.zeros((2, 3, 4))), ValueError, ["2-D label map"]),
    (lambda: overlay(np.zeros((8, 8, 3), np.uint8), np.zeros((4, 4))), ValueError, ["mask shape", "image size"]),
    (lambda: overlay(np.zeros((8, 8)), np.zeros((8, 8))), ValueError, ["image must be"]),
    (lambda: lecturelib.show_source(42), ValueError, ["show_source"]),
]


@pytest.mark.parametrize("fn,exc,words", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_clear_error(fn, exc, words):
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    for w in words:
        assert w in msg, f"message {msg!r} should mention {w!r}"


def test_evaluate_rejects_a_model_whose_output_is_too_small():
    class Coarse(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)

        def forward(self, x):
            return {"out": self.conv(x)}

    model = Coarse()
    data = (torch.rand(2, 3, 16, 16), torch.zeros(2, 16, 16, dtype=torch.long))
    task = SemanticTask(SimpleNamespace(num_classes=4), data, data)
    with pytest.raises(ValueError, match="upsample the logits"):
        evaluate(model, task, "cpu")
    with pytest.raises(ValueError, match="must return {'out': logits}"):
        evaluate(model.conv, task, "cpu")
    with pytest.raises(ValueError, match="no test set"):
        evaluate(model, SemanticTask(SimpleNamespace(num_classes=4), data), "cpu")


@pytest.fixture
def data_copy(tmp_path, monkeypatch):
    src = assets.data_dir()
    dst = tmp_path / "data"
    shutil.copytree(src, dst)
    monkeypatch.setenv(assets.ENV_DATA_DIR, str(dst))
    load_items.cache_clear()
    yield dst
    load_items.cache_clear()


def test_missing_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(assets.ENV_DATA_DIR, str(tmp_path / "nowhere"))
    load_items.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="does not exist.*git checkout -- data/"):
            course_scene("train", 0)
    finally:
        load_items.cache_clear()


def test_missing_data_file(data_copy):
    (data_copy / "fashion_items.npz").unlink()
    with pytest.raises(FileNotFoundError, match="fashion_items.npz is missing.*build_fashion_subset.py"):
        course_scene("train", 0)


def test_corrupted_data_file(data_copy):
    path = data_copy / "fashion_items.npz"
    raw = bytearray(path.read_bytes())
    raw[1000] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="fashion_items.npz is corrupted.*git checkout -- data/"):
        course_scene("train", 0)
    assert assets.verify_all(data_copy)


def test_missing_manifest(data_copy):
    (data_copy / "MANIFEST").unlink()
    with pytest.raises(FileNotFoundError, match="MANIFEST is missing"):
        course_scene("train", 0)


def test_shipped_data_verifies():
    assert assets.verify_all() == []
