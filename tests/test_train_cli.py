"""The command-line trainer: every model on a tiny config for a few steps, checkpoints, kill and resume."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lecturelib import distributed as D
from lecturelib import train as T
from lecturelib.profiles import PROFILES
from lecturelib.training import (
    count_parameters,
    load_checkpoint,
    read_metrics,
    rng_state,
    save_checkpoint,
    set_rng_state,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = PROFILES["quick"].scaled(image_size=32, n_train=64, n_test=16, batch_size=16, epochs=2, width=4)
TINY_ARGS = ["--profile", "quick", "--image-size", "32", "--n-train", "64", "--n-test", "16", "--batch-size", "16",
             "--width", "4", "--no-progress"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine (pytest -n 2) two OpenMP
    threads per process make them tens of times slower. Subprocesses get OMP_NUM_THREADS=1 likewise."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(out: Path, **changes) -> T.RunConfig:
    return T.RunConfig(profile=changes.pop("profile", TINY), out=out, progress=False, **changes)


# ----------------------------------------------------------------------------- names and arguments
def test_list_prints_every_model(capsys):
    assert T.main(["--list"]) == 0
    text = capsys.readouterr().out
    for name in T.MODELS:
        assert name in text


def test_unknown_model_lists_the_valid_names(capsys):
    assert T.main(["fcn7s", "--profile", "quick"]) == 2
    err = capsys.readouterr().err
    assert "unknown model or lesson 'fcn7s'" in err and "fcn8s" in err


def test_lessons_name_their_models():
    fcns = ["fcn32s", "fcn16s", "fcn8s"]
    for name in ("06", "6", "lesson06", "06_skip_connections", "skip_connections"):
        assert T.models_of(name)[:3] == fcns
    assert T.models_of("FCN8s") == ["fcn8s"]
    assert T.models_of("01") == ["patch_p10", "patch_p22", "patch_p38"]
    assert T.models_of("05") == ["deconv_k3", "deconv_k4", "resizeconv"]
    assert "cascade" in T.models_of("08_instance_segmentation")
    assert T.models_of("04") == ["recurrent", "onepass"]
    for lesson in T.LESSON_NAMES:
        assert T.models_of(lesson), f"lesson {lesson} has no model"


def test_arguments_change_the_profile():
    args = T.build_parser().parse_args(["fcn8s", "--profile", "full", "--epochs", "3", "--image-size", "96",
                                        "--workers", "0"])
    cfg = T.config_from_args(args, cuda_available=False)
    assert cfg.profile.name == "full" and cfg.epochs == 3 and cfg.profile.image_size == 96
    assert cfg.profile.num_workers == 0 and cfg.profile.n_train == PROFILES["full"].n_train
    args = T.build_parser().parse_args(["fcn8s", "--batch-size", "0"])
    with pytest.raises(ValueError, match="--batch-size must be positive"):
        T.config_from_args(args, cuda_available=False)


def test_default_profile_follows_the_device(monkeypatch):
    monkeypatch.delenv("LECTURELIB_PROFILE", raising=False)
    args = T.build_parser().parse_args(["fcn8s"])
    assert T.config_from_args(args, cuda_available=False).profile.name == "quick"
    assert T.config_from_args(args, cuda_available=True).profile.name == "full"


def test_recipe_changes_are_visible_in_the_recipe():
    recipe = T.recipe_for("fcn8s", TINY, epochs=2, batch_size=None, lr=0.1)
    assert (recipe.epochs, recipe.lr) == (2, 0.1) and recipe.batch_size == T.recipe_for("fcn8s", TINY).batch_size
    with pytest.raises(KeyError, match="unknown model"):
        T.recipe_for("fcn7s", TINY)


# ----------------------------------------------------------------------------- every model trains
@pytest.mark.parametrize("name", sorted(T.MODELS))
def test_every_model_builds_and_runs_one_loss(name):
    spec = T.MODELS[name]
    recipe = T.recipe_for(name, TINY)
    torch.manual_seed(0)
    model = spec.build(recipe)
    task = spec.task(recipe, *T.scene_data(spec, TINY.scaled(n_train=4, n_test=2)), 0)
    batch = [task.train_set[i] for i in range(2)]
    batch = (getattr(task, "collate", None) or torch.utils.data.default_collate)(batch)
    if hasattr(task, "prepare"):
        task.prepare(model)
    model.train()
    net = task.trainable(model) if hasattr(task, "trainable") else model
    loss, n, parts = task.loss(net, batch, torch.device("cpu"), channels_last=False)
    loss.backward()
    assert n == 2 and loss.dim() == 0 and torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", ["patch_p22", "multiscale", "recurrent", "deconv_k3", "cascade"])  # each task
def test_a_few_steps_write_checkpoint_and_metrics(tmp_path, name):
    result = T.train_model(name, _config(tmp_path / name, steps=3))
    record = result.record
    assert record["step"] == 3 and math.isfinite(record["train_loss"])
    key = T.MODELS[name].target[0]
    assert key in record and record[key] is not None and math.isfinite(record[key])
    assert 0 <= record["data_wait_share"] <= 1 and record["images_per_s"] > 0
    lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [3]
    fresh = T.MODELS[name].build(T.recipe_for(name, TINY))
    extra = load_checkpoint(tmp_path / name / "last.pt", fresh)
    assert extra["step"] == 3
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, result.model.state_dict()[k])
    about = json.loads((tmp_path / name / "recipe.json").read_text())
    assert about["model"] == name and about["profile"]["image_size"] == 32
    assert about["recipe"] == json.loads(json.dumps(dataclasses.asdict(T.recipe_for(name, TINY)), default=str))
    cfg = json.loads((tmp_path / name / "config.json").read_text())
    assert cfg["train_config"]["steps"] == 3 and cfg["parameters"] == count_parameters(fresh)


def test_training_improves_the_metric(tmp_path):
    """Three short epochs of FCN-32s lower its loss clearly (the loop really optimises)."""
    result = T.train_model("fcn32s", _config(tmp_path, epochs=3, batch_size=16))
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [4, 8, 12]
    losses = [r["train_loss"] for r in records]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.9 * losses[0], losses
    assert result.record["pixel_acc"] > 0.7


def test_existing_run_needs_resume_or_overwrite(tmp_path):
    T.train_model("fcn32s", _config(tmp_path, steps=1))
    with pytest.raises(FileExistsError, match="--resume"):
        T.train_model("fcn32s", _config(tmp_path, steps=2))
    T.train_model("fcn32s", _config(tmp_path, steps=2, overwrite=True))
    assert [r["step"] for r in read_metrics(tmp_path)] == [2]
    with pytest.raises(ValueError, match="different run"):
        T.train_model("fcn32s", _config(tmp_path, steps=3, resume=True, profile=TINY.scaled(width=8)))


def test_rng_state_survives_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1))
    save_checkpoint(tmp_path / "c.pt", torch.nn.Linear(1, 1), rng=state)
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(load_checkpoint(tmp_path / "c.pt", torch.nn.Linear(1, 1))["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


# ----------------------------------------------------------------------------- a real interruption
def test_sigkill_leaves_a_good_checkpoint_and_resume_continues(tmp_path):
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in D.ENV_VARS}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "lecturelib.train", "fcn8s", *TINY_ARGS, "--epochs", "40", "--save-every", "1",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ckpt, killed_at, deadline = out / "last.pt", None, time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if ckpt.exists():
                try:
                    step = torch.load(ckpt, weights_only=True)["extra"]["step"]
                except Exception:          # noqa: BLE001 - the file is replaced while we read: try again
                    step = 0
                if step >= 2:
                    proc.send_signal(signal.SIGKILL)
                    killed_at = step
                    break
            time.sleep(0.01)
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        output = proc.communicate(timeout=60)[0]
    assert killed_at is not None, f"the run ended before it could be killed:\n{output[-2000:]}"
    assert proc.returncode == -signal.SIGKILL

    # the last good checkpoint loads, and it is at or after the step we saw
    model = T.MODELS["fcn8s"].build(T.recipe_for("fcn8s", TINY))
    extra = load_checkpoint(ckpt, model)
    step = extra["step"]
    assert killed_at <= step < 160
    # resume: continues from that step and stops 5 steps later
    res = subprocess.run(cmd + ["--resume", "--steps", str(step + 5)], env=env, cwd=tmp_path, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:]
    assert f"resumed from {ckpt} at step {step} " in res.stdout
    resumed = T.MODELS["fcn8s"].build(T.recipe_for("fcn8s", TINY))
    assert load_checkpoint(ckpt, resumed)["step"] == step + 5
    records = read_metrics(out)
    steps = [r["step"] for r in records]
    assert steps == sorted(set(steps)) and steps[-1] == step + 5
    # and it is the run that was never interrupted
    straight = T.train_model("fcn8s", _config(tmp_path / "straight", epochs=40, batch_size=16, steps=step + 5))
    for k, v in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=1e-4, atol=1e-5)


def test_channels_last_trains_the_same(tmp_path):
    """The CUDA default (channels-last tensors) runs on the CPU too and computes the same training."""
    a = T.train_model("fcn8s", _config(tmp_path / "a", steps=2, channels_last="on"))
    b = T.train_model("fcn8s", _config(tmp_path / "b", steps=2, channels_last="off"))
    assert a.model.backbone.blocks[0][0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert abs(a.record["train_loss"] - b.record["train_loss"]) < 1e-4
    # Adam moves a weight by ~lr whatever the size of its gradient, so a rounding-level gradient can flip
    # one weight's step: compare the whole update rather than every element
    wa, wb = (torch.cat([p.detach().reshape(-1) for p in r.model.parameters()]) for r in (a, b))
    assert (wa - wb).norm() < 1e-2 * wb.norm()
