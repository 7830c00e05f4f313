import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from lecturelib.scenes import CourseScenes
from lecturelib.tasks import SemanticTask
from lecturelib.training import TrainConfig, fit, load_checkpoint, read_metrics, save_checkpoint, train_config


class TinySegmenter(nn.Module):
    """Three convolutions returning ``{"out": logits}``, the course's segmentation output contract."""

    def __init__(self, num_classes: int = 11):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(16, 16, 3, padding=2, dilation=2), nn.ReLU(), nn.Conv2d(16, num_classes, 1))

    def forward(self, x):
        return {"out": self.body(x)}


def tiny_model(num_classes=11):
    return TinySegmenter(num_classes)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.rand(1, 3, 8, 8))["out"].sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "ck" / "m.pt", model, opt, epoch=3, metrics={"miou": 0.5})
    other = tiny_model()
    opt2 = torch.optim.AdamW(other.parameters(), lr=1e-3)
    extra = load_checkpoint(path, other, opt2)
    assert extra == {"epoch": 3, "metrics": {"miou": 0.5}}
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    assert opt2.state_dict()["state"][0]["exp_avg"].equal(opt.state_dict()["state"][0]["exp_avg"])


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = tiny_model()
    path = save_checkpoint(tmp_path / "m.pt", model, epoch=1)
    before = path.read_bytes()

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"partial bytes of a checkpoint")
        raise KeyboardInterrupt("killed during the write")

    monkeypatch.setattr(torch, "save", crashing_save)
    with torch.no_grad():
        model.body[0].weight.add_(1)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, epoch=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path, tiny_model()) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"], "temporary file left behind"


def test_checkpoint_is_loaded_with_weights_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "extra": {"x": Evil()}}, path)
    with pytest.raises(Exception, match="(?i)weights.only|unsupported|global"):
        load_checkpoint(path, nn.Linear(1, 1))


@dataclass(frozen=True)
class Recipe:
    num_classes: int = 11
    epochs: int = 6
    lr: float = 1e-2
    batch_size: int = 16


def test_fit_learns_on_course_scenes(tmp_path):
    torch.manual_seed(0)
    train = CourseScenes("train", n=48, size=32, seed=0).tensors()
    test = CourseScenes("test", n=16, size=32, seed=0).tensors()
    task = SemanticTask(Recipe(), train, test)
    model = tiny_model()
    hist = fit(model, task, train_config(Recipe(), progress=False, out=tmp_path / "run"), "cpu")
    assert hist.train_loss[-1] < hist.train_loss[0] * 0.8
    assert len(hist.records) == 6 and 0 <= hist.final["miou"] <= 1 and "boundary_acc" in hist.final
    assert load_checkpoint(tmp_path / "run" / "last.pt", tiny_model())["step"] == 6 * (48 // 16)
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [3, 6, 9, 12, 15, 18]
    assert not model.training, "fit leaves the model in eval mode"


def test_fit_refuses_to_overwrite_a_run_and_checks_settings(tmp_path):
    train = CourseScenes("train", n=16, size=32, seed=0).tensors()
    recipe = replace(Recipe(), epochs=1, batch_size=8)
    fit(tiny_model(), SemanticTask(recipe, train), train_config(recipe, progress=False, out=tmp_path), "cpu")
    with pytest.raises(FileExistsError, match="resume"):
        fit(tiny_model(), SemanticTask(recipe, train), train_config(recipe, progress=False, out=tmp_path), "cpu")
    other = replace(recipe, lr=1e-3)
    with pytest.raises(ValueError, match="different run"):
        fit(tiny_model(), SemanticTask(other, train), train_config(other, progress=False, out=tmp_path, resume=True),
            "cpu")
    with pytest.raises(ValueError, match="no full batch"):
        fit(tiny_model(), SemanticTask(replace(recipe, batch_size=32), train),
            train_config(replace(recipe, batch_size=32), progress=False), "cpu")


def test_same_config_same_batches_same_weights():
    train = CourseScenes("train", n=16, size=32, seed=0).tensors()
    recipe = replace(Recipe(), epochs=2, batch_size=4)
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        model = tiny_model()
        fit(model, SemanticTask(recipe, train), train_config(recipe, seed=3, progress=False), "cpu")
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_train_config_reads_the_recipe_and_refuses_hidden_overrides():
    cfg = train_config(Recipe(), seed=2)
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.seed) == (6, 1e-2, 16, 2)
    with pytest.raises(ValueError, match="belong to the recipe"):
        train_config(Recipe(), lr=1.0)
    with pytest.raises(ValueError, match="epochs, lr and batch_size"):
        train_config(object())
    for bad in (dict(optimizer="sgd"), dict(schedule="cosine"), dict(batch_size=0), dict(grad_clip=-1.0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainConfig(**bad)


def test_only_the_training_module_builds_optimisers_and_schedules():
    root = Path(__file__).resolve().parents[1]
    pattern = re.compile(r"torch\.optim\.(?!Optimizer\b)[A-Z]\w*\(|lr_scheduler\.\w+\(|optim\.(Adam|SGD)")
    offenders = []
    for path in sorted((root / "lecturelib").rglob("*.py")) + sorted((root / "scripts").glob("*.py")):
        if path.name == "training.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    for nb in sorted((root / "notebooks").glob("*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] == "code" and pattern.search("".join(cell["source"])):
                offenders.append(f"{nb.name}: {''.join(cell['source'])[:60]}")
    assert not offenders, "optimisers and schedules are built only by lecturelib.training:\n" + "\n".join(offenders)
