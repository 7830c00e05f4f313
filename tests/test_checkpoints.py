"""Course checkpoints: every shipped one reproduces its stored metrics and its first training steps;
a missing or corrupted one gives an error naming the file and the command that retrains it."""
from __future__ import annotations

import shutil
from functools import lru_cache

import pytest
import torch

from lecturelib import assets, checkpoints, localization
from lecturelib import evaluate as E
from lecturelib import train as T
from lecturelib.profiles import Profile
from lecturelib.scenes import CourseScenes
from lecturelib.session import set_seed
from lecturelib.tasks import PatchTask
from lecturelib.training import FIRST_STEPS, fit, train_config

SHIPPED = [(name, seed) for name in T.MODELS for seed in checkpoints.stored_seeds(name)]


def test_the_course_ships_checkpoints():
    assert SHIPPED, "no course checkpoint is listed in data/MANIFEST"
    lessons = {T.MODELS[name].lesson for name, _ in SHIPPED}
    for name in {n for n, _ in SHIPPED}:
        assert len(checkpoints.stored_seeds(name)) >= 3, f"{name}: claims need at least 3 seeds"
    assert {"03", "05", "06"} <= lessons


@pytest.mark.parametrize("name,seed", SHIPPED)
def test_shipped_checkpoint_reproduces_its_metrics(name, seed):
    result = E.evaluate_course_model(name, seed)
    assert not E.reproduces(result), f"{name} seed {seed} is stale: {E.reproduces(result)}"
    info = checkpoints.read(name, seed)["info"]
    for key in ("command", "commit", "machine", "wall_seconds", "first_losses"):
        assert info["train"][key], f"{name} seed {seed}: the checkpoint does not say its {key}"
    assert info["train"]["command"].startswith(f"python -m lecturelib.train {name} ")
    assert (assets.data_dir() / checkpoints.relative_name(name, seed, ".metrics.jsonl")).is_file()


@lru_cache(maxsize=2)
def _lazy_train_scenes(profile: Profile, mode: str = "semantic") -> CourseScenes:
    """The training scenes of a profile (``mode`` "semantic" or "instance"), made only when a step needs them
    (and kept: models share them)."""
    return CourseScenes.from_profile(profile, "train", mode=mode, cache=True)


@lru_cache(maxsize=1)
def _train_tensors(profile: Profile):
    return _lazy_train_scenes(profile).tensors()


@pytest.mark.parametrize("name", sorted({n for n, _ in SHIPPED}))
def test_retraining_reproduces_the_first_steps(name):
    """The shipped weights come from this code: the recipe, data and seed give the logged first losses."""
    info = checkpoints.read(name, 0)["info"]
    recipe, profile = E.recipe_of(info)
    spec = T.MODELS[name]
    set_seed(0)
    model = spec.build(recipe)
    if spec.data == "one_item":
        scenes = localization.one_item_scenes(profile, "train")        # lesson 07's localizer: one-item windows
    else:
        scenes = _lazy_train_scenes(profile, spec.data)
    if spec.task(recipe, None, None, 0).__class__ is PatchTask:
        scenes = _train_tensors(profile)                 # patches are drawn from every training scene at once
    task = spec.task(recipe, scenes, None, 0)
    steps = 3
    hist = fit(model, task, train_config(recipe, seed=0, progress=False, steps=steps, eval_every=0), "cpu")
    stored = info["train"]["first_losses"][:steps]
    assert len(stored) == min(steps, FIRST_STEPS)
    assert hist.first_losses == pytest.approx(stored, rel=1e-4), f"{name}: {hist.first_losses} vs stored {stored}"


@pytest.fixture
def tiny_checkpoint(tmp_path, monkeypatch):
    """A data folder holding the shipped scene data and one tiny checkpoint exported by the trainer."""
    for name in ("MANIFEST", "SOURCES", "fashion_items.npz"):
        shutil.copy(assets.data_dir() / name, tmp_path / name)
    monkeypatch.setenv(assets.ENV_DATA_DIR, str(tmp_path))
    args = ["fcn8s", "--profile", "course", "--image-size", "32", "--n-train", "32", "--n-test", "4", "--width", "4",
            "--epochs", "1", "--seed", "5", "--export", "--out", str(tmp_path / "run"), "--no-progress"]
    assert T.main(args) == 0
    assets.write_manifest(tmp_path)
    return tmp_path


def test_export_then_load_and_evaluate(tiny_checkpoint):
    assert checkpoints.stored_seeds("fcn8s") == [5]
    model, info = E.load_course_model("fcn8s", 5)
    assert not model.training and info["recipe"]["width"] == 4 and info["profile"]["image_size"] == 32
    assert info["train"]["command"].endswith(f"--seed 5 --export --out {tiny_checkpoint / 'run'} --no-progress")
    assert E.main(["fcn8s", "--check", "--json"]) == 0
    stored = torch.load(tiny_checkpoint / checkpoints.relative_name("fcn8s", 5), weights_only=True)
    assert all(v.dtype == torch.float16 for v in stored["state_dict"].values() if v.is_floating_point())


def test_missing_and_corrupted_checkpoints_name_the_fix(tiny_checkpoint):
    path = tiny_checkpoint / checkpoints.relative_name("fcn8s", 5)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"checkpoints/fcn8s/seed5.pt.*corrupted.*python -m lecturelib.train fcn8s"):
        E.load_course_model("fcn8s", 5)
    path.unlink()
    with pytest.raises(FileNotFoundError, match=r"seed5.pt.*missing.*python -m lecturelib.train fcn8s"):
        E.load_course_model("fcn8s", 5)
    with pytest.raises(KeyError, match="not listed"):
        E.load_course_model("fcn8s", 6)
    with pytest.raises(FileNotFoundError, match="no course checkpoint of 'fcn16s'"):
        E.course_results(["fcn16s"])


def test_checkpoints_load_weights_only(tiny_checkpoint):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tiny_checkpoint / checkpoints.relative_name("fcn8s", 5)
    torch.save({"state_dict": {}, "info": {"format": 1, "x": Evil()}}, path)
    assets.write_manifest(tiny_checkpoint)
    with pytest.raises(Exception, match="(?i)weights.only|unsupported|global"):
        checkpoints.read("fcn8s", 5)


def test_a_stale_recipe_is_refused(tiny_checkpoint, monkeypatch):
    info = checkpoints.read("fcn8s", 5)["info"]
    info["recipe"]["lr"] = 0.123
    info["train"]["command"] = "python -m lecturelib.train fcn8s ..."
    monkeypatch.setitem(info["recipe"], "class_balance", 0.25)
    with pytest.raises(ValueError, match="another recipe.*class_balance"):
        E.recipe_of(info)


def test_evaluating_a_lesson_without_checkpoints_says_which_are_shipped(capsys):
    assert E.main(["08", "--check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no course checkpoint of '08' is shipped")
    assert "fcn8s" in err and "python -m lecturelib.train sds --profile course" in err
