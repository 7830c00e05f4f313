"""Your own folder end to end on tiny generated data: python -m lecturelib.train --data, then evaluate --run."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from lecturelib import evaluate as E
from lecturelib import train as T

TINY = ["--profile", "quick", "--width", "4", "--batch-size", "4", "--epochs", "1", "--no-progress"]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def semantic_folder(root, n=10, size=(32, 48), seed=0):
    """Images with a bright square (class 1) and a dark bar (class 2) on noise; 16-bit TIFF images."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        image = rng.integers(0, 20000, size + (3,)).astype(np.uint16)
        mask = np.zeros(size, np.uint8)
        y, x = rng.integers(2, 14), rng.integers(2, 30)
        image[y:y + 8, x:x + 8] = 60000
        mask[y:y + 8, x:x + 8] = 1
        image[24:28, 5:40, 0] = 40000
        mask[24:28, 5:40] = 2
        tifffile.imwrite(root / "images" / f"im{i:02d}.tif", image)
        Image.fromarray(mask).save(root / "masks" / f"im{i:02d}.png")
    (root / "names.txt").write_text("background\nsquare\nbar\n")
    return root


def instance_folder(root, n=6, size=(32, 32)):
    for d in ("images", "instances", "classes"):
        (root / d).mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        image = rng.integers(0, 60, size + (3,)).astype(np.uint8)
        ids = np.zeros(size, np.uint8)
        ids[4:14, 3:15], ids[18:28, 16:30] = 1, 2
        image[ids == 1] = (220, 40, 40)
        image[ids == 2] = (40, 40, 220)
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        Image.fromarray(ids).save(root / "instances" / f"{i}.png")
        (root / "classes" / f"{i}.txt").write_text("1 1\n2 2\n")
    return root


def test_semantic_folder_trains_and_evaluates(tmp_path, capsys):
    data = semantic_folder(tmp_path / "data")
    run = tmp_path / "run"
    args = ["fcn8s", "--data", str(data), "--num-classes", "3", "--class-names", str(data / "names.txt"),
            "--steps", "2", "--val-fraction", "0.2", "--out", str(run)] + TINY
    assert T.main(args) == 0
    about = json.loads((run / "recipe.json").read_text())
    assert about["recipe"]["num_classes"] == 3 and about["profile"]["image_size"] == 48     # the largest side
    assert about["data"]["n_train"] == 8 and about["data"]["n_val"] == 2
    assert about["data"]["class_names"] == ["background", "square", "bar"]
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 2 and np.isfinite(record["miou"])

    capsys.readouterr()
    assert E.main(["--run", str(run)]) == 0                        # the run's own validation split
    own = json.loads(capsys.readouterr().out)
    assert own["model"] == "fcn8s" and own["data"] == str(data) and set(own["iou"]) == {"background", "square", "bar"}
    assert own["miou"] == pytest.approx(record["miou"], abs=1e-6)
    other = semantic_folder(tmp_path / "other", n=3, seed=5)
    assert E.main(["--run", str(run / "last.pt"), "--data", str(other)]) == 0
    assert np.isfinite(json.loads(capsys.readouterr().out)["pixel_acc"])


def test_semantic_folder_resized_for_a_patch_model(tmp_path):
    data = semantic_folder(tmp_path / "data", n=6)
    run = tmp_path / "run"
    args = ["patch_p10", "--data", str(data), "--num-classes", "3", "--image-size", "16", "--steps", "1",
            "--out", str(run)] + TINY
    assert T.main(args) == 0
    about = json.loads((run / "recipe.json").read_text())
    assert about["profile"]["image_size"] == 16 and about["data"]["size"] == 16


@pytest.mark.parametrize("model", ["cascade", "maskrcnn", "sds"])
def test_instance_folder_trains_and_evaluates(tmp_path, capsys, model):
    data = instance_folder(tmp_path / "data")
    run = tmp_path / "run"
    args = [model, "--data", str(data), "--num-classes", "3", "--anchor-sizes", "8,12,16", "--steps", "2",
            "--val-fraction", "0.34", "--out", str(run)] + TINY
    assert T.main(args) == 0
    about = json.loads((run / "recipe.json").read_text())
    assert about["data"]["n_val"] == 2 and about["recipe"]["num_classes"] == 3
    assert about["recipe"].get("anchor_sizes", [8.0, 12.0, 16.0]) == [8.0, 12.0, 16.0]   # sds has no anchors
    capsys.readouterr()
    assert E.main(["--run", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == model and 0 <= result["ap50"] <= 1


def test_data_options_are_checked(tmp_path, capsys):
    data = semantic_folder(tmp_path / "data", n=3)
    assert T.main(["fcn8s", "--data", str(data)] + TINY) == 2
    assert "--num-classes" in capsys.readouterr().err
    assert T.main(["fcn8s", "--num-classes", "3"] + TINY) == 2
    assert "--num-classes applies only with --data DIR" in capsys.readouterr().err
    assert T.main(["fcn8s", "--data", str(data), "--num-classes", "2", "--out", str(tmp_path / "r")] + TINY) == 2
    assert "labels [2] are >= num_classes=2" in capsys.readouterr().err
    assert T.main(["cascade", "--data", str(data), "--num-classes", "3", "--out", str(tmp_path / "c")] + TINY) == 2
    assert "instances" in capsys.readouterr().err
    assert T.main(["fcn8s", "--data", str(data), "--num-classes", "3", "--export"] + TINY) == 2
    assert "--export" in capsys.readouterr().err
    assert E.main(["--run", str(tmp_path / "nothing")]) == 2
    assert "recipe.json" in capsys.readouterr().err
