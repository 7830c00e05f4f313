import os

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from lecturelib.scenes import CourseScenes
from lecturelib.training import TrainConfig, fit, load_checkpoint, save_checkpoint


def tiny_model(num_classes=11):
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=2, dilation=2),
                         nn.ReLU(), nn.Conv2d(16, num_classes, 1))


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.rand(1, 3, 8, 8)).sum().backward()
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
        model[0].weight.add_(1)
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


def test_fit_learns_on_course_scenes(tmp_path):
    torch.manual_seed(0)
    X, Y = CourseScenes("train", n=48, size=32, seed=0).tensors()
    Xv, Yv = CourseScenes("test", n=16, size=32, seed=0).tensors()
    loader = DataLoader(TensorDataset(X, Y), batch_size=16, shuffle=True)
    val = DataLoader(TensorDataset(Xv, Yv), batch_size=16)
    model = tiny_model()
    hist = fit(model, loader, val, 11, torch.device("cpu"),
               TrainConfig(epochs=6, lr=1e-2, progress=False, checkpoint=str(tmp_path / "last.pt")))
    assert hist.train_loss[-1] < hist.train_loss[0] * 0.8
    assert len(hist.val) == 6 and 0 <= hist.val[-1]["miou"] <= 1 and "boundary_acc" in hist.val[-1]
    assert load_checkpoint(tmp_path / "last.pt", tiny_model())["epoch"] == 6
