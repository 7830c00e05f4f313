"""Data-parallel training: torchrun with 2 CPU processes (gloo) against one process with the same global batch."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from lecturelib import distributed as D
from lecturelib import train as T
from lecturelib.profiles import PROFILES
from lecturelib.session import set_seed
from lecturelib.tasks import PatchSet, SemanticTask
from lecturelib.train import MODELS, RunConfig
from lecturelib.training import read_metrics

ROOT = Path(__file__).resolve().parents[1]
TINY = PROFILES["quick"].scaled(image_size=32, n_train=64, n_test=16, batch_size=16, epochs=3, width=4)
STEPS = 5          # more than one epoch (4 steps each): crosses an epoch boundary and a data reshuffle

# Trains two models in one launch: lesson 05's upsampler (no BatchNorm: DDP must match one process up
# to float rounding) and FCN-8s (BatchNorm: statistics over each rank's half batch, so only close).
WORKER = textwrap.dedent(f"""
    import sys, torch
    from pathlib import Path
    from lecturelib import distributed as D
    from lecturelib.profiles import Profile
    from lecturelib.train import RunConfig, train_model

    out = Path(sys.argv[1])
    info = D.init_distributed("cpu")
    profile = Profile(**{TINY.as_dict()!r})
    for name in ("deconv_k3", "fcn8s"):
        config = RunConfig(profile=profile, out=out / name, epochs=3, batch_size=16, steps={STEPS}, progress=False,
                           overwrite=True)
        result = train_model(name, config, info)
        tag = f"rank{{info.rank}}of{{info.world_size}}"
        torch.save({{k: v.clone() for k, v in result.model.state_dict().items()}}, out / f"{{name}}_{{tag}}.pt")
        if info.is_main:
            torch.save(result.record, out / f"{{name}}_record_{{info.world_size}}.pt")
    D.cleanup(info)
""")


def _env():
    env = {k: v for k, v in os.environ.items() if k not in D.ENV_VARS}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env["LECTURELIB_PROFILE"] = "quick"
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One torchrun launch with 2 processes and one plain process, both training the same tiny config."""
    tmp = tmp_path_factory.mktemp("ddp")
    script = tmp / "worker.py"
    script.write_text(WORKER)
    two = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                            str(script), str(tmp / "two")], env=_env(), cwd=tmp,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    one = subprocess.run([sys.executable, str(script), str(tmp / "one")], env=_env(), cwd=tmp,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    two_out, _ = two.communicate(timeout=300)
    assert one.returncode == 0, one.stdout[-3000:]
    assert two.returncode == 0, two_out[-3000:]
    return tmp, two_out


def _load(tmp: Path, run: str, name: str, tag: str) -> dict:
    return torch.load(tmp / run / f"{name}_{tag}.pt", weights_only=True)


def _relative_gap(a: dict, b: dict, init: dict) -> float:
    """||a - b|| / ||b - init|| over all floating-point parameters: the gap as a share of what training moved."""
    gap = sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in init if init[k].is_floating_point())
    moved = sum(float((b[k].double() - init[k].double()).pow(2).sum()) for k in init if init[k].is_floating_point())
    return (gap / moved) ** 0.5


def _init(name: str) -> dict:
    set_seed(0)                                 # what train_model does before building
    return MODELS[name].build(T.recipe_for(name, TINY)).state_dict()


@pytest.mark.parametrize("name", ["deconv_k3", "fcn8s"])
def test_both_ranks_end_with_identical_weights(runs, name):
    tmp, log = runs
    r0 = _load(tmp, "two", name, "rank0of2")
    r1 = _load(tmp, "two", name, "rank1of2")
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"{name}: rank 0 and rank 1 differ in {k}"
    record = torch.load(tmp / "two" / f"{name}_record_2.pt", weights_only=True)
    assert record["world_size"] == 2 and record["step"] == STEPS
    assert record["rank_spread"] == 0.0
    assert "2 process(es) on cpu" in log


def test_two_processes_match_one_with_the_same_global_batch(runs):
    """Without BatchNorm, DDP over 2 half batches computes the full batch's gradient: the weights agree up to
    float rounding (measured: ~1e-6 of the update)."""
    tmp, _ = runs
    name = "deconv_k3"
    modules = MODELS[name].build(T.recipe_for(name, TINY)).modules()
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in modules), \
        f"{name} gained BatchNorm: pick a model without it for the exact comparison"
    two = _load(tmp, "two", name, "rank0of2")
    one = _load(tmp, "one", name, "rank0of1")
    gap = _relative_gap(two, one, _init(name))
    assert gap < 1e-4, f"2-process weights differ from 1-process weights by {gap:.2e} of the update"
    r1 = torch.load(tmp / "one" / f"{name}_record_1.pt", weights_only=True)
    r2 = torch.load(tmp / "two" / f"{name}_record_2.pt", weights_only=True)
    assert abs(r1["train_loss"] - r2["train_loss"]) < 1e-5 * r1["train_loss"]
    assert abs(r1["psnr"] - r2["psnr"]) < 1e-3            # reduced over ranks = computed on one


def test_batchnorm_model_matches_one_process_loosely(runs):
    """With BatchNorm each rank normalises by its own half batch (SyncBatchNorm is CUDA-only), so the runs
    differ slightly (measured: 0.1-1.3 % in the loss); the loss of every logged step must agree within 3 %."""
    tmp, _ = runs
    one = read_metrics(tmp / "one" / "fcn8s")
    two = read_metrics(tmp / "two" / "fcn8s")
    assert [r["step"] for r in one] == [r["step"] for r in two] == [4, STEPS]
    for r1, r2 in zip(one, two):
        assert abs(r1["train_loss"] - r2["train_loss"]) < 0.03 * r1["train_loss"], (r1["train_loss"], r2["train_loss"])
    assert all(r["rank_spread"] == 0.0 for r in two)


def test_reduced_metrics_equal_one_process_evaluation(runs):
    """Each rank evaluates its shard; the all-reduced confusion matrix must equal a one-process evaluation."""
    tmp, _ = runs
    record = torch.load(tmp / "two" / "fcn8s_record_2.pt", weights_only=True)
    recipe = T.recipe_for("fcn8s", TINY)
    model = MODELS["fcn8s"].build(recipe)
    model.load_state_dict(_load(tmp, "two", "fcn8s", "rank0of2"))
    model.eval()
    task = SemanticTask(recipe, *T.scene_data(MODELS["fcn8s"], TINY))
    single = task.evaluate(model, task.test_set, D.DistInfo(), 8, nullcontext)
    assert abs(single["miou"] - record["miou"]) < 1e-12
    assert abs(single["boundary_acc"] - record["boundary_acc"]) < 1e-12


# ----------------------------------------------------------------------------- pieces, in one process
def test_sampler_shards_are_disjoint_and_cover_the_epoch():
    data = list(range(20))
    shards = [list(D.ResumableSampler(data, D.DistInfo(rank=r, world_size=2), seed=3)) for r in range(2)]
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == data
    one = list(D.ResumableSampler(data, D.DistInfo(), seed=3))
    # step k of the 2-process run sees the same items as step k of the 1-process run (global batch 4)
    for k in range(5):
        assert sorted(shards[0][2 * k:2 * k + 2] + shards[1][2 * k:2 * k + 2]) == sorted(one[4 * k:4 * k + 4])


def test_sampler_skip_resumes_the_same_order():
    data = list(range(17))
    s = D.ResumableSampler(data, D.DistInfo(), seed=1)
    s.set_epoch(4)
    full = list(s)
    s.set_epoch(4, skip=6)
    assert list(s) == full[6:] and len(s) == len(full) - 6
    s.set_epoch(5)
    assert list(s) != full                      # a new epoch, a new order


def test_shard_has_no_padding():
    data = list(range(7))
    parts = [list(D.shard(data, D.DistInfo(rank=r, world_size=3))) for r in range(3)]
    assert sorted(sum(parts, [])) == data


def test_single_process_helpers_are_identities():
    info = D.DistInfo()
    t = torch.arange(4)
    assert torch.equal(D.all_reduce_sum(t, info), t)
    assert D.reduce_sums({"a": 2.0}, info) == {"a": 2.0}
    assert D.gather_objects("x", info) == ["x"]
    m = torch.nn.Linear(2, 2)
    assert D.wrap_model(m, info) is m and D.unwrap(m) is m
    assert D.parameter_spread(m, info) == 0.0
    assert D.backend_for(torch.device("cpu")) == "gloo" and D.backend_for(torch.device("cuda", 0)) == "nccl"


def test_init_without_torchrun_is_one_process(monkeypatch):
    for v in D.ENV_VARS:
        monkeypatch.delenv(v, raising=False)
    info = D.init_distributed("cpu")
    assert (info.rank, info.world_size, info.distributed, info.is_main) == (0, 1, False, True)


def test_init_bad_environment_messages(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        D.init_distributed("cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match="torchrun"):
        D.init_distributed("cpu")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        D.init_distributed("cpu")


def test_sync_batchnorm_on_cpu_is_refused():
    info = D.DistInfo(rank=0, world_size=2, backend="gloo")
    with pytest.raises(ValueError, match="CUDA"):
        D.wrap_model(torch.nn.BatchNorm2d(3), info, sync_batchnorm=True)


def test_patch_set_redraws_centres_per_epoch():
    images, masks = torch.rand(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    ps = PatchSet(images, masks, patch_size=22, n=10, num_classes=3)
    a = ps.__getitems__([0, 1, 2])
    assert a[0][0].shape == (3, 22, 22) and len(a) == 3
    first = [c.clone() for c in ps.centres]
    ps.set_epoch(1)
    assert any(not torch.equal(x, y) for x, y in zip(first, ps.centres))
    ps.set_epoch(0)
    assert all(torch.equal(x, y) for x, y in zip(first, ps.centres))


def test_run_config_is_a_dataclass():
    cfg = RunConfig(profile=TINY, out=Path("x"))
    assert cfg.channels_last == "auto" and cfg.steps is None
