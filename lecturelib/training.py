"""A plain training loop you can read (STYLE.md §7) and atomic checkpoints.

Models take images float[N, 3, H, W] and return logits float[N, C, H, W], or a
dict with the logits under ``"out"`` (torchvision's segmentation models).
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .metrics import IGNORE_INDEX, BoundaryAccuracy, ConfusionMatrix


def logits_of(output) -> torch.Tensor:
    """The logits of a model output: the tensor itself or ``output["out"]``."""
    if isinstance(output, dict):
        if "out" not in output:
            raise ValueError(f"model returned a dict without 'out' (keys: {sorted(output)}); "
                             "return {'out': logits} or the logits tensor")
        return output["out"]
    return output


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast(device.type, enabled=False)


def train_one_epoch(model: nn.Module, criterion, optimizer: torch.optim.Optimizer, loader,
                    device: torch.device, *, amp: bool = False, scaler: torch.amp.GradScaler | None = None,
                    scheduler=None, progress: bool = True, desc: str = "train") -> float:
    """One pass over ``loader``; returns the mean training loss."""
    model.train()
    total, count = 0.0, 0
    for images, targets in tqdm(loader, desc=desc, disable=not progress, leave=False):
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with _autocast(device, amp):
            loss = criterion(logits_of(model(images)), targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()}; lower the learning rate or check the inputs")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item() * images.shape[0]
        count += images.shape[0]
    return total / max(count, 1)


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, num_classes: int, *,
             boundary_width: int = 2, amp: bool = False, progress: bool = False) -> dict:
    """Metrics over ``loader`` from one accumulated confusion matrix: pixel_acc, iou, miou, boundary_acc."""
    model.eval()
    cm = ConfusionMatrix(num_classes)
    ba = BoundaryAccuracy(boundary_width)
    for images, targets in tqdm(loader, desc="eval", disable=not progress, leave=False):
        images = images.to(device, non_blocking=True)
        with _autocast(device, amp):
            logits = logits_of(model(images))
        if logits.shape[-2:] != targets.shape[-2:]:
            raise ValueError(f"model output {tuple(logits.shape[-2:])} differs from the target size "
                             f"{tuple(targets.shape[-2:])}; upsample the logits to the input size")
        pred = logits.argmax(1).cpu()
        cm.update(pred, targets)
        ba.update(pred, targets)
    out = cm.compute()
    out["boundary_acc"] = ba.compute()
    return out


@dataclass
class TrainConfig:
    """What :func:`fit` needs besides the model and the data."""

    epochs: int = 5
    lr: float = 3e-3
    weight_decay: float = 1e-4
    amp: bool = False
    progress: bool = True
    checkpoint: str | None = None      # path; written atomically after every epoch
    ignore_index: int = IGNORE_INDEX
    class_weight: list[float] | None = None   # per-class weights of the cross-entropy (None: all 1)

    def __post_init__(self):
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(f"TrainConfig.epochs must be a non-negative int, got {self.epochs!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"TrainConfig.lr must be a positive number, got {self.lr!r}")


@dataclass
class History:
    train_loss: list = field(default_factory=list)
    val: list = field(default_factory=list)
    seconds: float = 0.0


def fit(model: nn.Module, train_loader, val_loader, num_classes: int, device: torch.device,
        config: TrainConfig | None = None) -> History:
    """AdamW + one-cycle schedule + cross-entropy; evaluates after every epoch."""
    config = config or TrainConfig()
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = max(1, config.epochs * len(train_loader))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=steps, pct_start=0.2)
    weight = None if config.class_weight is None else torch.tensor(config.class_weight, dtype=torch.float32,
                                                                     device=device)
    criterion = nn.CrossEntropyLoss(weight=weight, ignore_index=config.ignore_index)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp and not torch.cuda.is_bf16_supported() else None
    hist = History()
    start = time.perf_counter()
    for epoch in range(config.epochs):
        loss = train_one_epoch(model, criterion, optimizer, train_loader, device, amp=use_amp, scaler=scaler,
                               scheduler=scheduler, progress=config.progress, desc=f"epoch {epoch + 1}/{config.epochs}")
        hist.train_loss.append(loss)
        if val_loader is not None:
            hist.val.append(evaluate(model, val_loader, device, num_classes, amp=use_amp))
        if config.checkpoint:
            save_checkpoint(config.checkpoint, model, optimizer, epoch=epoch + 1,
                            metrics=hist.val[-1] if hist.val else {})
    hist.seconds = time.perf_counter() - start
    return hist


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    **extra) -> Path:
    """Write a checkpoint atomically: to a temporary file in the same folder, then rename.

    A crash in the middle of the write leaves the previous checkpoint untouched.
    ``extra`` must hold plain Python values (ints, floats, strings, lists, dicts) so that
    :func:`load_checkpoint` can read it back with ``weights_only=True``.
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
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``); returns its extras."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; train first or pass the right path")
    state = torch.load(path, map_location=map_location, weights_only=True)
    model.load_state_dict(state["model"])
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    return state.get("extra", {})


def count_parameters(model: nn.Module) -> int:
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
