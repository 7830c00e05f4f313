"""The course's one training loop: every model of every lesson is "a task + :func:`fit`".

A *task* (see :mod:`lecturelib.tasks`) says what a model trains on, its loss and its
evaluation; :func:`fit` does everything else, the same way for all of them and for the
notebooks and ``python -m lecturelib.train`` alike:

- the optimiser (AdamW or Adam) and the learning-rate schedule (one-cycle or constant):
  the only place in the course where they are built;
- mixed precision on CUDA (bf16 where supported, else fp16 with a ``GradScaler``),
  gradient clipping, a finite-loss check;
- the data order: a :class:`lecturelib.distributed.ResumableSampler` fixed by (seed, epoch),
  so two models trained with the same config see the same batches in the same order, and a
  resumed run continues with exactly the batches it would have seen;
- evaluation after every ``eval_every`` epochs; with a run folder (``config.out``):
  ``last.pt`` (weights, optimiser, schedule, step and RNG states, written atomically),
  ``metrics.jsonl`` (one record per evaluation) and ``config.json``; ``resume``;
- data-parallel training under ``torchrun`` (:mod:`lecturelib.distributed`).

Follows the shape of torchvision's reference scripts (``train_one_epoch`` / ``evaluate``).
"""
from __future__ import annotations

import json
import math
import os
import random
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import distributed as D
from .session import choose_device

CHECKPOINT = "last.pt"
METRICS = "metrics.jsonl"
FIRST_STEPS = 8
OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("onecycle", "constant")


# ============================================================================= configuration
@dataclass
class TrainConfig:
    """How :func:`fit` trains (a lesson's recipe makes one with its ``train_config(...)``).

    epochs: passes over the task's training set. batch_size: items per step over all processes.
    lr: peak learning rate. optimizer: "adamw" or "adam" (Adam ignores weight_decay).
    schedule: "onecycle" (warm-up for ``pct_start`` of the steps, then cosine decay) or "constant".
    grad_clip: max gradient norm (None: no clipping). seed: initial data order (weights are seeded by
    the caller before the model is built). amp: mixed precision, used only on CUDA.
    eval_every: evaluate after every this many epochs (0: only after the last); needs a test set.
    steps: stop after this many optimizer steps in total (the schedule still spans all epochs).
    out: run folder for ``last.pt``, ``metrics.jsonl`` and ``config.json`` (None: nothing written).
    resume / overwrite: continue from ``out/last.pt`` / start again even if it exists.
    save_every: also checkpoint every this many steps (0: at the end of each epoch only).
    channels_last, compile, sync_bn: CUDA speed settings. workers: DataLoader processes.

    Raises ValueError for a setting out of range, naming the field.
    """

    epochs: int = 5
    lr: float = 3e-3
    batch_size: int = 32
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    schedule: str = "onecycle"
    pct_start: float = 0.2
    grad_clip: float | None = None
    seed: int = 0
    amp: bool = False
    progress: bool = True
    eval_every: int = 1
    steps: int | None = None
    out: str | os.PathLike | None = None
    resume: bool = False
    overwrite: bool = False
    save_every: int = 0
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    workers: int = 0

    def __post_init__(self):
        for name, low in (("epochs", 0), ("batch_size", 1), ("seed", 0), ("eval_every", 0), ("save_every", 0),
                          ("workers", 0)):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < low:
                raise ValueError(f"TrainConfig.{name} must be an int >= {low}, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"TrainConfig.lr must be a positive number, got {self.lr!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"TrainConfig.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"TrainConfig.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.steps is not None and self.steps < 0:
            raise ValueError(f"TrainConfig.steps must be >= 0 or None, got {self.steps}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainConfig.grad_clip must be positive or None, got {self.grad_clip}")

    def signature(self) -> dict:
        """The settings that decide the weights (a resumed run must match them)."""
        keep = ("epochs", "lr", "batch_size", "weight_decay", "optimizer", "schedule", "pct_start", "grad_clip",
                "seed")
        return {k: getattr(self, k) for k in keep}


@dataclass
class History:
    """What :func:`fit` returns.

    train_loss: mean loss of each epoch. parts: per-epoch means of a task's named loss terms
    (e.g. a detector's four losses). records: one dict per evaluation (epoch, step, metrics, seconds,
    images/s). seconds: training time (without evaluation). steps: optimizer steps done.
    first_losses: the loss of each of the first :data:`FIRST_STEPS` steps of a fresh run (a fingerprint of
    the data, the initial weights and the code: a retraining reproduces them).
    """

    train_loss: list = field(default_factory=list)
    parts: dict = field(default_factory=dict)
    records: list = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0
    first_losses: list = field(default_factory=list)

    @property
    def final(self) -> dict:
        """The last evaluation record ({} when nothing was evaluated)."""
        return self.records[-1] if self.records else {}


# ============================================================================= small pieces
def autocast_for(device: torch.device, amp: bool) -> tuple[Callable, torch.dtype | None]:
    """A callable that returns the autocast context for ``device``, and its dtype (None: full precision).

    Mixed precision only on CUDA: bf16 where the GPU supports it, else fp16.
    """
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return (lambda: torch.autocast("cuda", dtype=dtype)), dtype
    return nullcontext, None


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """``x`` on ``device``; 4-d tensors in channels-last memory format when asked."""
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def make_optimizer(model: nn.Module, config: TrainConfig, total_steps: int):
    """The optimiser and learning-rate schedule of ``config`` over the trainable parameters of ``model``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameter (requires_grad=True); nothing to train")
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=config.lr)
    else:
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=max(total_steps, 1),
                                                        pct_start=config.pct_start)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return optimizer, scheduler


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (``requires_grad``) of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def time_call(fn, *args, repeat: int = 3, warmup: int = 1, **kwargs) -> float:
    """Best wall time in seconds of ``fn(*args, **kwargs)`` over ``repeat`` runs after ``warmup``."""
    for _ in range(warmup):
        fn(*args, **kwargs)
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t)
    return best


# ============================================================================= checkpoints and logs
def save_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    **extra) -> Path:
    """Write a checkpoint atomically: to a temporary file in the same folder, then rename.

    A crash in the middle of the write leaves the previous checkpoint untouched. ``extra`` must hold
    plain Python values and tensors so that :func:`load_checkpoint` reads it with ``weights_only=True``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "extra": extra}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint of :func:`save_checkpoint` (``weights_only=True``) into ``model``; returns its extras.

    Raises FileNotFoundError naming the path when it does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; train first or pass the right path")
    state = torch.load(path, map_location=map_location, weights_only=True)
    model.load_state_dict(state["model"])
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    return state.get("extra", {})


def rng_state() -> dict:
    """Python, NumPy, torch (CPU and CUDA) generator states as tensors and plain values (weights_only-safe)."""
    py_version, py_state, py_gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": torch.tensor(py_state, dtype=torch.int64), "python_version": py_version, "python_gauss": py_gauss,
        "numpy": torch.from_numpy(np_keys.astype(np.int64)), "numpy_pos": int(np_pos),
        "numpy_gauss": [int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    """Restore the generator states of :func:`rng_state`."""
    random.setstate((state["python_version"], tuple(int(v) for v in state["python"].tolist()), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         int(state["numpy_gauss"][0]), float(state["numpy_gauss"][1])))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def jsonable(value):
    """``value`` with NaN/inf floats as None and tuples as lists (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a ``metrics.jsonl`` file (a run folder or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; train first (python -m lecturelib.train ...)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _read_checkpoint(path: Path, info: D.DistInfo) -> dict:
    """Rank 0 reads the checkpoint (``weights_only``) and sends it to the other ranks, so every rank resumes
    from the same weights and optimizer state without a shared filesystem."""
    state = torch.load(path, map_location="cpu", weights_only=True) if info.is_main else None
    return D.broadcast_object(state, info)


class _CudaFlags:
    """cuDNN autotuning and TF32 on CUDA for the duration of a run; the previous flags are restored."""

    def __init__(self, device: torch.device):
        self.on = device.type == "cuda"

    def __enter__(self):
        if self.on:
            self.saved = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
                          torch.backends.cudnn.allow_tf32)
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        return self

    def __exit__(self, *exc):
        if self.on:
            (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32) = self.saved
        return False


# ============================================================================= the loop
def train_one_epoch(net: nn.Module, task, optimizer, scheduler, batches, device: torch.device, *,
                    autocast: Callable = nullcontext, scaler: torch.amp.GradScaler | None = None,
                    grad_clip: float | None = None, channels_last: bool = False, steps: int | None = None,
                    on_step: Callable[[torch.Tensor], None] | None = None, bar=None) -> dict:
    """One pass over ``batches`` (at most ``steps`` of them): forward, loss, backward, clip, step, schedule.

    ``task.loss(net, batch, device, channels_last)`` returns (loss, items, named parts); ``on_step(loss)``
    is called after every step. Returns
    sums over the pass: ``loss`` (item-weighted), ``items``, ``wait`` (seconds waiting for data),
    ``steps`` and each named part. Raises FloatingPointError when the loss is not finite.
    """
    net.train()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    sums: dict = {"items": 0, "wait": 0.0, "steps": 0}
    batches = iter(batches)
    while steps is None or sums["steps"] < steps:
        t0 = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            break
        sums["wait"] += time.perf_counter() - t0
        with autocast():
            loss, n, parts = task.loss(net, batch, device, channels_last)
        if not torch.isfinite(loss):
            detail = {k: float(v) for k, v in parts.items()} if parts else ""
            raise FloatingPointError(f"the training loss became {loss.item()} {detail}; lower the learning rate "
                                     "or check the inputs")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(params, grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
        scheduler.step()
        loss_sum += loss.detach().double() * n
        for k, v in (parts or {}).items():
            sums[k] = sums.get(k, 0.0) + float(v) * n
        sums["items"] += n
        sums["steps"] += 1
        if bar is not None:
            bar.update(1)
        if on_step is not None:
            on_step(loss.detach())
    sums["loss"] = float(loss_sum)
    return sums


@torch.no_grad()
def evaluate(model: nn.Module, task, device: str | torch.device | D.DistInfo = "cpu", *,
             batch_size: int = 64, amp: bool = False) -> dict:
    """``task.evaluate`` on its test set in eval mode (each process its share under ``torchrun``).

    Returns the task's metrics (e.g. miou, pixel_acc, boundary_acc for a segmentation task).
    Raises ValueError when the task has no test set.
    """
    info = device if isinstance(device, D.DistInfo) else D.DistInfo(device=choose_device(device))
    if getattr(task, "test_set", None) is None:
        raise ValueError(f"{type(task).__name__} has no test set to evaluate; pass test data when making it")
    autocast, _ = autocast_for(info.device, amp)
    model.eval()
    return task.evaluate(model, task.test_set, info, batch_size, autocast)


def fit(model: nn.Module, task, config: TrainConfig | None = None,
        device: str | torch.device | D.DistInfo = "auto") -> History:
    """Train ``model`` on ``task`` as ``config`` says; returns a :class:`History`.

    Args:
        model: any ``nn.Module`` the task knows how to call (weights seeded by the caller).
        task: see :mod:`lecturelib.tasks`: ``train_set``, ``test_set`` (or None), ``loss``, ``evaluate``.
        config: :class:`TrainConfig` (default: its defaults).
        device: "auto", "cpu", "cuda", a ``torch.device``, or the :class:`~lecturelib.distributed.DistInfo`
            of a ``torchrun`` process.

    Raises:
        FileExistsError: ``config.out`` holds a checkpoint and neither ``resume`` nor ``overwrite`` is set.
        ValueError: a resumed checkpoint was written by another run, or the data give no full batch.
        FloatingPointError: the loss became NaN or infinite.
    """
    config = config or TrainConfig()
    info = device if isinstance(device, D.DistInfo) else D.DistInfo(device=choose_device(device))
    with _CudaFlags(info.device):
        return _fit(model, task, config, info)


def _fit(model: nn.Module, task, config: TrainConfig, info: D.DistInfo) -> History:
    device = info.device
    say = print if (info.is_main and config.out is not None) else (lambda *a, **k: None)
    out = Path(config.out) if config.out is not None else None
    ckpt_path, metrics_path = (out / CHECKPOINT, out / METRICS) if out else (None, None)
    have_checkpoint = D.broadcast_object(bool(out) and ckpt_path.exists(), info)
    if have_checkpoint and not (config.resume or config.overwrite):
        raise FileExistsError(f"{ckpt_path} exists; pass resume=True (--resume) to continue that run, "
                              f"overwrite=True (--overwrite) to start again, or choose another out folder")
    channels_last = config.channels_last
    autocast, amp_dtype = autocast_for(device, config.amp)

    # ---- data: the sampler gives each process a disjoint share of each global batch
    if config.batch_size % info.world_size:
        raise ValueError(f"the global batch {config.batch_size} must be divisible by the {info.world_size} "
                         "processes; change the batch size or the number of processes")
    batch = config.batch_size // info.world_size
    train_set = task.train_set
    if train_set is None:
        raise ValueError(f"{type(task).__name__} has no training data; pass it when making the task")
    sampler = D.ResumableSampler(train_set, info, shuffle=True, seed=config.seed, drop_last=True)
    workers = config.workers
    loader = DataLoader(train_set, batch_size=batch, sampler=sampler, drop_last=True, num_workers=workers,
                        pin_memory=device.type == "cuda",
                        persistent_workers=workers > 0 and getattr(task, "persistent_workers", True),
                        collate_fn=getattr(task, "collate", None))
    steps_per_epoch = len(sampler) // batch
    if steps_per_epoch < 1:
        raise ValueError(f"{len(train_set)} training items give no full batch of {config.batch_size}; "
                         "use more data or a smaller batch_size")
    total_steps = config.epochs * steps_per_epoch
    stop = min(total_steps, config.steps) if config.steps is not None else total_steps

    # ---- model, optimiser, schedule
    prepare = getattr(task, "prepare", None)
    if prepare is not None:
        prepare(model)
    model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler = make_optimizer(model, config, total_steps)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    signature = {"task": type(task).__name__, **config.signature(), "parameters": count_parameters(model)}
    hist = History()
    step, train_seconds = 0, 0.0
    if have_checkpoint and config.resume:
        state = _read_checkpoint(ckpt_path, info)
        extra = state["extra"]
        if extra.get("signature") != signature:
            raise ValueError(f"resume: {ckpt_path} was written by a different run ({extra.get('signature')}), "
                             f"not by {signature}; use the same model and settings, or another out folder")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(extra["scheduler"])
        if scaler is not None and extra.get("scaler"):
            scaler.load_state_dict(extra["scaler"])
        set_rng_state(extra["rng"])
        step, train_seconds = int(extra["step"]), float(extra["train_seconds"])
        say(f"resumed from {ckpt_path} at step {step} (epoch {step / steps_per_epoch:.2f})")
        if info.is_main and metrics_path.exists():      # drop records written after that checkpoint
            hist.records = [r for r in read_metrics(metrics_path) if r["step"] <= step]
            write_atomic(metrics_path, "".join(json.dumps(r) + "\n" for r in hist.records))
    elif out is not None and info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        for old in (ckpt_path, metrics_path):
            if old.exists():
                old.unlink()
        write_atomic(out / "config.json", json.dumps(jsonable({**signature, "train_config": asdict(config),
                                                               "world_size": info.world_size,
                                                               "device": str(device), "amp": str(amp_dtype)}),
                                                     indent=2, default=str))
    D.barrier(info)

    ddp = D.wrap_model(task.trainable(model) if hasattr(task, "trainable") else model, info,
                       sync_batchnorm=config.sync_bn,
                       find_unused_parameters=getattr(task, "find_unused_parameters", False))
    net = torch.compile(ddp) if config.compile else ddp

    def checkpoint(at_step: int) -> None:
        if out is None:
            return
        D.broadcast_buffers(model, info)
        if info.is_main:
            save_checkpoint(ckpt_path, model, optimizer, step=at_step, signature=signature,
                            scheduler=scheduler.state_dict(), scaler=scaler.state_dict() if scaler else None,
                            rng=rng_state(), train_seconds=train_seconds)
        D.barrier(info)

    def evaluate_and_log(stats: dict) -> None:
        """Evaluate (every process its share of the test set), checkpoint, then append the record."""
        D.broadcast_buffers(model, info)
        t_eval = time.perf_counter()
        metrics = {}
        if task.test_set is not None:
            model.eval()
            metrics = task.evaluate(model, task.test_set, info, 2 * batch, autocast)
        record = {"epoch": step / steps_per_epoch, "step": step, **stats, **metrics,
                  "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - t_eval,
                  "world_size": info.world_size, "device": str(device)}
        if info.distributed:                          # DDP must keep every process's weights identical
            record["rank_spread"] = D.parameter_spread(model, info)
        checkpoint(step)                              # checkpoint first: a record never outlives its state
        record = jsonable(record)
        hist.records.append(record)
        if out is not None and info.is_main:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())
        key = getattr(task, "key_metric", None)
        shown = f" {key} {record[key]:.4f}" if key in record and record[key] is not None else ""
        say(f"epoch {record['epoch']:.2f} step {step}/{total_steps} loss {stats.get('train_loss', 0):.4f}{shown} "
            f"| {stats.get('images_per_s', 0):.0f} items/s, data wait {stats.get('data_wait_share', 0):.1%} "
            f"| {train_seconds:.1f} s training")

    def due(epoch_done: int) -> bool:
        every = config.eval_every
        return (every and epoch_done % every == 0) or step == stop

    at_boundary = step > 0 and (step % steps_per_epoch == 0 or step == stop)
    if at_boundary and D.broadcast_object((hist.final.get("step") != step), info):
        evaluate_and_log({})                          # killed between checkpoint and record: redo the record

    while step < stop:
        epoch, within = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch, skip=within * batch)
        if hasattr(task, "set_epoch"):
            task.set_epoch(epoch)
        t_epoch = t_last = time.perf_counter()
        todo = min(steps_per_epoch - within, stop - step)
        bar = tqdm(total=todo, desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not (config.progress and info.is_main), leave=False)

        def on_step(loss: torch.Tensor) -> None:
            nonlocal step, train_seconds, t_last
            step += 1
            if step <= FIRST_STEPS and len(hist.first_losses) == step - 1:
                hist.first_losses.append(float(loss))
            if config.save_every and step % config.save_every == 0 and step % steps_per_epoch and step < stop:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                train_seconds += time.perf_counter() - t_last
                checkpoint(step)
                t_last = time.perf_counter()

        sums = train_one_epoch(net, task, optimizer, scheduler, loader, device, autocast=autocast, scaler=scaler,
                               grad_clip=config.grad_clip, channels_last=channels_last, steps=todo,
                               on_step=on_step, bar=bar)
        bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds += time.perf_counter() - t_last
        sums["elapsed"] = time.perf_counter() - t_epoch
        sums = D.reduce_sums({k: v for k, v in sums.items() if k != "steps"}, info)
        items = max(sums["items"], 1)
        if not math.isfinite(sums["loss"]):
            raise FloatingPointError(f"the training loss became {sums['loss']}; lower the learning rate")
        hist.train_loss.append(sums["loss"] / items)
        for k, v in sums.items():
            if k not in ("loss", "items", "wait", "elapsed"):
                hist.parts.setdefault(k, []).append(v / items)
        stats = {"train_loss": sums["loss"] / items, "images": int(sums["items"]),
                 # items over all processes per second of (mean) epoch wall time
                 "images_per_s": sums["items"] / max(sums["elapsed"] / info.world_size, 1e-9),
                 "data_wait_share": sums["wait"] / max(sums["elapsed"], 1e-9)}
        if due(epoch + 1):
            evaluate_and_log(stats)
        elif step % steps_per_epoch == 0:
            checkpoint(step)
    hist.seconds, hist.steps = train_seconds, step
    model.eval()
    return hist


def train_config(recipe, **run) -> TrainConfig:
    """The :class:`TrainConfig` of a lesson's recipe: its ``epochs``, ``lr``, ``batch_size`` and, where the recipe
    has them, ``weight_decay``, ``optimizer``, ``schedule``, ``grad_clip``; ``run`` adds the run's own settings
    (seed, progress, amp, out, ...).

    Raises ValueError when the recipe lacks epochs, lr or batch_size, or ``run`` repeats a recipe setting.
    """
    missing = [k for k in ("epochs", "lr", "batch_size") if not hasattr(recipe, k)]
    if missing:
        raise ValueError(f"{type(recipe).__name__} has no {missing}; a recipe states epochs, lr and batch_size")
    recipe_keys = ("epochs", "lr", "batch_size", "weight_decay", "optimizer", "schedule", "grad_clip")
    settings = {k: getattr(recipe, k) for k in recipe_keys if hasattr(recipe, k)}
    clash = sorted(set(settings) & set(run))
    if clash:
        raise ValueError(f"train_config: {clash} belong to the recipe; change them with "
                         f"dataclasses.replace(recipe, ...) so that the change is visible")
    return TrainConfig(**settings, **run)
