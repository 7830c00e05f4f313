"""Train any lesson's model from the command line, on a CPU, a GPU or several (``torchrun``).

    python -m lecturelib.train fcn8s --profile quick                  # one model, this machine
    python -m lecturelib.train 06 --profile full --out runs/lesson06  # every model of lesson 06
    torchrun --nproc_per_node 4 -m lecturelib.train fcn8s --profile full   # 4 GPUs, one process each
    python -m lecturelib.train fcn8s --resume                         # continue after an interruption
    python -m lecturelib.train --list                                 # the models and lessons

Each run writes to its folder (``--out``, default ``runs/<model>``):

- ``last.pt``: weights, optimizer, schedule, step and RNG states, written atomically
  (:func:`lecturelib.training.save_checkpoint`) at the end of every epoch and every
  ``--save-every`` steps, by rank 0 only. A run killed at any moment leaves the last
  good checkpoint; ``--resume`` continues from its step with the same data order.
- ``metrics.jsonl``: one JSON object per evaluation (epoch, step, loss, metrics, seconds,
  images/s, share of step time spent waiting for data).
- ``config.json``: the profile and settings of the run.

``MODELS`` below is a plain dict: model name -> :class:`ModelSpec` (how to build it, which data
and loss it trains on, its learning rate). Builders import their lesson's module only when used.
The ``--profile`` decides image size, data size, batch size, epochs and width (COURSE.md §4):
``quick`` on a CPU, ``full`` on a GPU by default. On CUDA the run uses mixed precision
(bf16 where supported, else fp16 with loss scaling), pinned memory with loader workers,
channels-last tensors and, with ``--compile``, ``torch.compile``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from . import distributed as D
from .metrics import IGNORE_INDEX, BoundaryAccuracy, ConfusionMatrix
from .profiles import PROFILES, Profile, get_profile
from .scenes import NUM_CLASSES, CourseScenes, collate_instances
from .session import set_seed
from .training import logits_of, save_checkpoint

CHECKPOINT = "last.pt"
METRICS = "metrics.jsonl"


# ============================================================================= the models
@dataclass(frozen=True)
class ModelSpec:
    """How to train one model from the command line.

    build(profile, num_classes) -> nn.Module: imports the lesson's module and builds the model.
    task: the data and loss: "semantic" (scenes -> per-pixel cross-entropy), "patches" (centre-pixel
        classification of patches), "recurrent" (cross-entropy after every unrolled iteration),
        "upsampling" (x2 super-resolution, mean squared error) or
        "instance" (torchvision detection-style model that returns its losses in training mode).
    target: (metric, value) for the benchmark's "time to target".
    """

    lesson: str
    build: Callable[[Profile, int], nn.Module]
    task: str
    lr: float = 3e-3
    weight_decay: float = 1e-4
    grad_clip: float | None = None
    target: tuple[str, float] = ("miou", 0.3)
    description: str = ""


def _patch_size(profile: Profile) -> int:
    """The patch side that a 3-stage patch CNN covers exactly, closest to 60 % of the image side."""
    from .patch import valid_patch_sizes

    sizes = valid_patch_sizes(3, up_to=profile.image_size - 2)
    return min(sizes, key=lambda p: abs(p - 0.6 * profile.image_size))


def _patch_cnn(profile, num_classes):
    from .patch import PatchCNNConfig, patch_cnn

    return patch_cnn(PatchCNNConfig(patch_size=_patch_size(profile), num_classes=num_classes,
                                    width=max(8, profile.width // 2), hidden=4 * profile.width))


def _multiscale(single: bool):
    def build(profile, num_classes):
        from .multiscale import MultiScaleConfig, multiscale_net, single_scale_baseline

        config = MultiScaleConfig.from_profile(profile, num_classes=num_classes)
        return single_scale_baseline(config) if single else multiscale_net(config)
    return build


def _recurrent(profile, num_classes):
    from .recurrent import RecurrentRefiner, RefinementConfig

    return RecurrentRefiner(RefinementConfig.from_profile(profile, num_classes=num_classes))


def _upsampler(kind: str):
    def build(profile, num_classes):
        from .transposed import DeconvUpsampler, ResizeConvUpsampler

        return DeconvUpsampler(profile.width) if kind == "deconv" else ResizeConvUpsampler(profile.width)
    return build


def _fcn(stride: int):
    def build(profile, num_classes):
        from .fcn import fcn

        return fcn(stride, num_classes=num_classes, width=profile.width)
    return build


def _deconvnet(profile, num_classes):
    from .deconvnet import deconvnet

    return deconvnet(num_classes=num_classes, width=profile.width)


def _cascade(profile, num_classes):
    from .cascade import CascadeConfig, MaskCascade

    return MaskCascade(CascadeConfig(num_classes=num_classes, width=profile.width))


def _maskrcnn(profile, num_classes):
    from .maskrcnn import tiny_maskrcnn

    return tiny_maskrcnn(num_classes, profile.image_size, width=profile.width)


MODELS: dict[str, ModelSpec] = {
    "patch_cnn": ModelSpec("01", _patch_cnn, "patches", lr=3e-3, target=("miou", 0.2),
                           description="patch classifier: label the centre pixel of each patch"),
    "multiscale": ModelSpec("03", _multiscale(False), "semantic", target=("miou", 0.3),
                            description="Farabet multi-scale CNN (shared weights over an image pyramid)"),
    "singlescale": ModelSpec("03", _multiscale(True), "semantic", target=("miou", 0.3),
                             description="the same CNN on one scale, parameter-matched baseline"),
    "recurrent": ModelSpec("04", _recurrent, "recurrent", target=("miou", 0.3),
                           description="Pinheiro-Collobert recurrent refinement, trained unrolled"),
    "deconv_upsampler": ModelSpec("05", _upsampler("deconv"), "upsampling", target=("psnr", 24.0),
                                  description="x2 upsampler ending in a transposed convolution"),
    "resizeconv_upsampler": ModelSpec("05", _upsampler("resize"), "upsampling", target=("psnr", 24.0),
                                      description="x2 upsampler: nearest resize then convolution"),
    "fcn32s": ModelSpec("06", _fcn(32), "semantic", target=("miou", 0.3), description="FCN-32s"),
    "fcn16s": ModelSpec("06", _fcn(16), "semantic", target=("miou", 0.3), description="FCN-16s"),
    "fcn8s": ModelSpec("06", _fcn(8), "semantic", target=("miou", 0.3), description="FCN-8s"),
    "deconvnet": ModelSpec("06", _deconvnet, "semantic", target=("miou", 0.3),
                           description="DeconvNet: the upside-down decoder with max-unpooling"),
    "cascade": ModelSpec("07", _cascade, "instance", lr=3e-3, grad_clip=10.0, target=("ap50", 0.1),
                         description="Multi-task Network Cascade (RPN -> RoI masks -> classes)"),
    "maskrcnn": ModelSpec("07", _maskrcnn, "instance", lr=3e-3, grad_clip=10.0, target=("ap50", 0.1),
                          description="torchvision's Mask R-CNN (no pretrained weights) on the cascade's backbone"),
}

LESSON_NAMES = {"01": "patch_classification", "03": "multiscale", "04": "recurrent_refinement",
                "05": "transposed_convolution", "06": "skip_connections", "07": "instance_segmentation"}


def models_of(name: str) -> list[str]:
    """Model names for a model or a lesson ("06", "lesson06", "06_skip_connections", "skip_connections")."""
    key = name.strip().lower()
    if key in MODELS:
        return [key]
    key = key.removeprefix("lesson").removeprefix("_")
    for number, title in LESSON_NAMES.items():
        if key in (number, number.lstrip("0"), title, f"{number}_{title}"):
            return [m for m, spec in MODELS.items() if spec.lesson == number]
    raise KeyError(f"unknown model or lesson {name!r}; models: {sorted(MODELS)}; "
                   f"lessons: {sorted(LESSON_NAMES)} (e.g. '06' or '06_skip_connections')")


# ============================================================================= data and losses
def scene_tensors(profile: Profile, split: str, workers: int = 0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images float32[N, 3, S, S] and semantic masks int64[N, S, S] of a split, made by ``workers`` processes."""
    ds = CourseScenes.from_profile(profile, split, seed=seed, cache=False)
    if workers <= 0 or len(ds) == 0:
        return ds.tensors()
    loader = DataLoader(ds, batch_size=64, num_workers=workers)
    images, masks = zip(*loader)
    return torch.cat(images), torch.cat(masks)


def _as_list(batch: list) -> list:
    return batch


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


class SemanticTask:
    """Scenes -> per-pixel class scores; cross-entropy (ignore 255); mIoU from a reduced confusion matrix."""

    find_unused_parameters = False
    persistent_workers = True
    collate = None

    def __init__(self, profile: Profile, num_classes: int, workers: int):
        self.profile, self.num_classes, self.workers = profile, num_classes, workers

    def batch_size(self) -> int:
        return self.profile.batch_size

    def datasets(self):
        train = TensorDataset(*scene_tensors(self.profile, "train", self.workers))
        test = TensorDataset(*scene_tensors(self.profile, "test", self.workers))
        return train, test

    def set_epoch(self, epoch: int) -> None:
        pass

    def trainable(self, model: nn.Module) -> nn.Module:
        """The module DDP wraps and the loss calls (its ``forward`` must produce what :meth:`loss` needs)."""
        return model

    def loss(self, model, batch, device, channels_last):
        images, masks = batch
        images = _to_device(images, device, channels_last)                  # (B, 3, H, W)
        masks = masks.to(device, non_blocking=True)                          # (B, H, W)
        logits = logits_of(model(images))                                    # (B, C, H, W)
        return F.cross_entropy(logits.float(), masks, ignore_index=IGNORE_INDEX), images.shape[0]

    @torch.no_grad()
    def evaluate(self, model, test_set, info: D.DistInfo, batch_size: int, autocast) -> dict:
        cm, ba = ConfusionMatrix(self.num_classes), BoundaryAccuracy(2)
        for images, masks in DataLoader(D.shard(test_set, info), batch_size=batch_size):
            with autocast():
                logits = logits_of(model(images.to(info.device)))
            pred = logits.argmax(1).cpu()                                     # (B, H, W)
            cm.update(pred, masks)
            ba.update(pred, masks)
        D.reduce_confusion(cm, info)
        sums = D.reduce_sums({"correct": ba.correct, "total": ba.total}, info)
        out = cm.compute()
        out["boundary_acc"] = sums["correct"] / sums["total"] if sums["total"] else float("nan")
        return {k: out[k] for k in ("miou", "pixel_acc", "boundary_acc", "iou")}


class PatchSet(torch.utils.data.Dataset):
    """``n`` patches (float[3, P, P], centre label) drawn class-balanced from scenes; redrawn each epoch.

    The centres of epoch e depend only on (seed, e), so every rank holds the same list and the
    sampler splits it.
    """

    def __init__(self, images, masks, patch_size: int, n: int, num_classes: int, seed: int = 0):
        from .patch import pad_for_patches

        self.padded = pad_for_patches(images, patch_size)                   # (N, 3, H+P-1, W+P-1)
        self.masks, self.patch_size, self.n, self.num_classes, self.seed = masks, patch_size, n, num_classes, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        from .patch import sample_centres

        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        self.centres = sample_centres(self.masks, self.n, gen, balanced=True, num_classes=self.num_classes)

    def __len__(self) -> int:
        return self.n

    def __getitems__(self, indices):
        from .patch import extract_patches

        idx = torch.as_tensor(indices)
        index, ys, xs, labels = (c[idx] for c in self.centres)
        patches = extract_patches(self.padded, index, ys, xs, self.patch_size)   # (B, 3, P, P)
        return list(zip(patches, labels))

    def __getitem__(self, i):
        return self.__getitems__([i])[0]


class PatchTask(SemanticTask):
    """Patches -> centre-pixel class; evaluated by dense labelling (every pixel's patch) of test scenes."""

    persistent_workers = False          # workers must see the centres redrawn for each epoch

    def __init__(self, profile, num_classes, workers):
        super().__init__(profile, num_classes, workers)
        self.patch_size = _patch_size(profile)

    def batch_size(self) -> int:
        return 4 * self.profile.batch_size

    def datasets(self):
        images, masks = scene_tensors(self.profile, "train", self.workers)
        self.train = PatchSet(images, masks, self.patch_size, 40 * self.profile.n_train, self.num_classes)
        n_eval = max(8, self.profile.n_test // 8)
        test_images, test_masks = scene_tensors(self.profile.scaled(n_test=n_eval), "test", self.workers)
        return self.train, TensorDataset(test_images, test_masks)

    def set_epoch(self, epoch: int) -> None:
        self.train.set_epoch(epoch)

    def loss(self, model, batch, device, channels_last):
        patches, labels = batch
        logits = model(_to_device(patches, device, channels_last))             # (B, C)
        return F.cross_entropy(logits.float(), labels.to(device, non_blocking=True)), patches.shape[0]

    @torch.no_grad()
    def evaluate(self, model, test_set, info, batch_size, autocast) -> dict:
        from .patch import dense_labels_by_patches

        cm, ba = ConfusionMatrix(self.num_classes), BoundaryAccuracy(2)
        for images, masks in DataLoader(D.shard(test_set, info), batch_size=4):
            with autocast():
                pred = dense_labels_by_patches(model, images, self.patch_size, info.device, batch_size=4096)
            cm.update(pred, masks)
            ba.update(pred, masks)
        D.reduce_confusion(cm, info)
        sums = D.reduce_sums({"correct": ba.correct, "total": ba.total}, info)
        out = cm.compute()
        out["boundary_acc"] = sums["correct"] / sums["total"] if sums["total"] else float("nan")
        return {k: out[k] for k in ("miou", "pixel_acc", "boundary_acc", "iou")}


class UpsamplingTask(SemanticTask):
    """x2 super-resolution of scene images: input average-pooled by 2, target the image; MSE; PSNR."""

    def datasets(self):
        def pairs(split):
            high, _ = scene_tensors(self.profile, split, self.workers)      # (N, 3, S, S)
            return TensorDataset(F.avg_pool2d(high, 2), high)
        return pairs("train"), pairs("test")

    def loss(self, model, batch, device, channels_last):
        low, high = batch
        pred = model(_to_device(low, device, channels_last))
        return F.mse_loss(pred.float(), high.to(device, non_blocking=True)), low.shape[0]

    @torch.no_grad()
    def evaluate(self, model, test_set, info, batch_size, autocast) -> dict:
        sums = {"sq": 0.0, "n": 0.0}
        for low, high in DataLoader(D.shard(test_set, info), batch_size=batch_size):
            with autocast():
                pred = model(low.to(info.device))
            sums["sq"] += float(F.mse_loss(pred.float().clamp(0, 1).cpu(), high, reduction="sum"))
            sums["n"] += high.numel()
        sums = D.reduce_sums(sums, info)
        mse = sums["sq"] / max(sums["n"], 1)
        return {"psnr": 10 * math.log10(1.0 / max(mse, 1e-12)), "mse": mse}


class _Unrolled(nn.Module):
    """forward(x) -> the logits of every iteration of a recurrent refiner (DDP syncs gradients only through
    ``forward``, so the unrolled pass must be one)."""

    def __init__(self, refiner: nn.Module):
        super().__init__()
        self.refiner = refiner

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.refiner.forward_all(x)


class RecurrentTask(SemanticTask):
    """Lesson 04: the same CNN refines its own labels; loss after every unrolled iteration; mIoU per iteration."""

    def trainable(self, model):
        return _Unrolled(model)

    def loss(self, model, batch, device, channels_last):
        from .recurrent import unrolled_loss

        images, masks = batch
        per_iteration = model(_to_device(images, device, channels_last))   # [(B, C, H, W)] * iterations
        return unrolled_loss([lg.float() for lg in per_iteration], masks.to(device, non_blocking=True)), \
            images.shape[0]

    @torch.no_grad()
    def evaluate(self, model, test_set, info, batch_size, autocast) -> dict:
        cms, ba = None, BoundaryAccuracy(2)
        for images, masks in DataLoader(D.shard(test_set, info), batch_size=batch_size):
            with autocast():
                per_iteration = model.forward_all(images.to(info.device))
            cms = cms or [ConfusionMatrix(self.num_classes) for _ in per_iteration]
            for cm, logits in zip(cms, per_iteration):
                cm.update(logits.argmax(1).cpu(), masks)
            ba.update(per_iteration[-1].argmax(1).cpu(), masks)
        by_iteration = [D.reduce_confusion(cm, info).compute() for cm in cms]
        sums = D.reduce_sums({"correct": ba.correct, "total": ba.total}, info)
        out = {k: by_iteration[-1][k] for k in ("miou", "pixel_acc", "iou")}
        out["boundary_acc"] = sums["correct"] / sums["total"] if sums["total"] else float("nan")
        out["miou_by_iteration"] = [m["miou"] for m in by_iteration]
        return out


class InstanceTask(SemanticTask):
    """Detection-style models: ``model(images, targets)`` returns a dict of losses in training mode and
    per-image predictions (``masks``, ``labels``, ``scores``) in eval mode; scored by mask AP."""

    find_unused_parameters = True       # some heads get no gradient in a step without positive RoIs
    collate = staticmethod(collate_instances)

    def datasets(self):
        def scenes(split):
            ds = CourseScenes.from_profile(self.profile, split, mode="instance", cache=False)
            if self.workers <= 0:
                return [ds[i] for i in range(len(ds))]
            return [pair for batch in DataLoader(ds, batch_size=32, num_workers=self.workers,
                                                 collate_fn=_as_list) for pair in batch]
        return scenes("train"), scenes("test")

    def loss(self, model, batch, device, channels_last):
        images, targets = batch
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        losses = model(images, targets)
        return sum(v.float() for v in losses.values()), len(images)

    @torch.no_grad()
    def evaluate(self, model, test_set, info, batch_size, autocast) -> dict:
        from .mask_ap import MaskAP

        ap = MaskAP(self.num_classes, thresholds=(0.5, 0.7))
        loader = DataLoader(D.shard(test_set, info), batch_size=batch_size, collate_fn=collate_instances)
        records = []
        for images, targets in loader:
            with autocast():
                preds = model([im.to(info.device) for im in images])
            for p, t in zip(preds, targets):
                records.append(({"masks": (p["masks"].float() > 0.5).cpu(), "labels": p["labels"].cpu(),
                                 "scores": p["scores"].float().cpu()}, {"masks": t["masks"], "labels": t["labels"]}))
        for part in D.gather_objects(records, info):     # every rank scores every image: exact global AP
            ap.update([p for p, _ in part], [t for _, t in part])
        out = ap.compute()
        return {"ap50": out["ap50"], "ap70": out["ap70"], "ap": out["ap"]}


TASKS = {"semantic": SemanticTask, "patches": PatchTask, "recurrent": RecurrentTask, "upsampling": UpsamplingTask,
         "instance": InstanceTask}


# ============================================================================= one run
@dataclass
class RunConfig:
    """Settings of one command-line run besides the model.

    profile: sizes (image size, scenes, batch size = the GLOBAL batch over all ranks, epochs, width, ...).
    steps: stop after this many optimizer steps in total (the schedule still spans all epochs).
    save_every: also checkpoint every this many steps (0: only at the end of each epoch and at a stop).
    channels_last: "auto" (on CUDA), "on" or "off". amp: use mixed precision if the profile asks and on CUDA.
    """

    profile: Profile
    out: Path
    steps: int | None = None
    seed: int = 0
    lr: float | None = None
    device: str = "auto"
    amp: bool = True
    channels_last: str = "auto"
    compile: bool = False
    sync_bn: bool = False
    resume: bool = False
    overwrite: bool = False
    save_every: int = 0
    progress: bool = True


@dataclass
class RunResult:
    """What :func:`train_model` returns: the last metrics record (on rank 0), the trained model, the run folder."""

    record: dict
    model: nn.Module
    out: Path


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
    random.setstate((state["python_version"], tuple(int(v) for v in state["python"].tolist()), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         int(state["numpy_gauss"][0]), float(state["numpy_gauss"][1])))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _autocast_factory(device: torch.device, amp: bool):
    """A callable returning the autocast context, and the dtype it uses (None: full precision)."""
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return (lambda: torch.autocast("cuda", dtype=dtype)), dtype
    return nullcontext, None


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _write_atomic(path: Path, text: str) -> None:
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


def read_checkpoint(path: Path, info: D.DistInfo) -> dict:
    """Rank 0 reads a checkpoint of :func:`lecturelib.training.save_checkpoint` (``weights_only``, on the CPU) and
    sends it to the other ranks, so that a multi-node job resumes without a shared filesystem and every rank
    starts from the same weights AND optimizer state (DDP would not re-sync the latter)."""
    state = torch.load(path, map_location="cpu", weights_only=True) if info.is_main else None
    return D.broadcast_object(state, info)


def train_model(name: str, config: RunConfig, info: D.DistInfo | None = None) -> RunResult:
    """Train model ``name`` of :data:`MODELS` as ``config`` says; returns a :class:`RunResult`.

    Runs alone or as one rank of a ``torchrun`` job (``info`` from :func:`lecturelib.distributed.init_distributed`).
    """
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    spec = MODELS[name]
    own_group = info is None
    info = info or D.init_distributed(config.device)
    try:
        return _train(name, spec, config, info)
    finally:
        if own_group:
            D.cleanup(info)


def _train(name: str, spec: ModelSpec, config: RunConfig, info: D.DistInfo) -> RunResult:
    profile, device, out = config.profile, info.device, Path(config.out)
    ckpt_path, metrics_path = out / CHECKPOINT, out / METRICS
    have_checkpoint = D.broadcast_object(ckpt_path.exists(), info)   # rank 0's disk decides (multi-node)
    if have_checkpoint and not (config.resume or config.overwrite):
        raise FileExistsError(f"{ckpt_path} exists; pass --resume to continue that run, --overwrite to start "
                              f"again, or choose another --out")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    channels_last = config.channels_last == "on" or (config.channels_last == "auto" and device.type == "cuda")
    amp = config.amp and profile.amp and device.type == "cuda"
    autocast, amp_dtype = _autocast_factory(device, amp)
    workers = profile.num_workers
    say = print if info.is_main else (lambda *a, **k: None)

    # ---- data: every rank holds the whole split; the sampler gives each a disjoint share of each batch
    task = TASKS[spec.task](profile, NUM_CLASSES, workers)
    global_batch = task.batch_size()
    if global_batch % info.world_size:
        raise ValueError(f"the global batch {global_batch} must be divisible by the {info.world_size} processes; "
                         f"change --batch-size or --nproc_per_node")
    batch = global_batch // info.world_size
    t_data = time.perf_counter()
    train_set, test_set = task.datasets()
    data_seconds = time.perf_counter() - t_data
    sampler = D.ResumableSampler(train_set, info, shuffle=True, seed=config.seed, drop_last=True)
    loader = DataLoader(train_set, batch_size=batch, sampler=sampler, drop_last=True, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0 and task.persistent_workers,
                        collate_fn=task.collate)
    steps_per_epoch = len(sampler) // batch
    if steps_per_epoch < 1:
        raise ValueError(f"{len(train_set)} training items give no full batch of {global_batch}; "
                         "use more scenes (--n-train) or a smaller --batch-size")
    total_steps = profile.epochs * steps_per_epoch

    # ---- model, optimizer, schedule: the same initial weights on every rank
    set_seed(config.seed)
    model = spec.build(profile, NUM_CLASSES).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    lr = config.lr or spec.lr
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=spec.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(total_steps, 1),
                                                    pct_start=0.2)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    signature = {"model": name, "profile": {k: v for k, v in profile.as_dict().items() if k != "num_workers"},
                 "global_batch": global_batch, "seed": config.seed, "lr": lr}
    step, train_seconds = 0, 0.0
    if config.resume and have_checkpoint:
        state = read_checkpoint(ckpt_path, info)
        extra = state["extra"]
        if extra.get("signature") != signature:
            raise ValueError(f"--resume: {ckpt_path} was written by a different run ({extra.get('signature')}), "
                             f"not by {signature}; use the same model, profile and sizes, or another --out")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(extra["scheduler"])
        if scaler is not None and extra.get("scaler"):
            scaler.load_state_dict(extra["scaler"])
        set_rng_state(extra["rng"])
        step, train_seconds = int(extra["step"]), float(extra["train_seconds"])
        say(f"[{name}] resumed from {ckpt_path} at step {step} (epoch {step / steps_per_epoch:.2f})")
        if info.is_main and metrics_path.exists():   # drop records written after that checkpoint
            kept = [r for r in read_metrics(metrics_path) if r["step"] <= step]
            _write_atomic(metrics_path, "".join(json.dumps(r) + "\n" for r in kept))
    elif info.is_main:
        if config.resume:
            say(f"[{name}] --resume: no checkpoint in {out}, starting a new run")
        out.mkdir(parents=True, exist_ok=True)
        for old in (ckpt_path, metrics_path):
            if old.exists():
                old.unlink()
        _write_atomic(out / "config.json", json.dumps({**signature, "world_size": info.world_size,
                                                       "device": str(device), "amp": str(amp_dtype),
                                                       "channels_last": channels_last,
                                                       "compile": config.compile}, indent=2))
    D.barrier(info)

    ddp = D.wrap_model(task.trainable(model), info, sync_batchnorm=config.sync_bn,
                       find_unused_parameters=task.find_unused_parameters)
    net = torch.compile(ddp) if config.compile else ddp
    stop = min(total_steps, config.steps) if config.steps is not None else total_steps
    say(f"[{name}] {spec.description} | lesson {spec.lesson} | profile {profile.name} | {info.world_size} "
        f"process(es) on {device} | global batch {global_batch} | {steps_per_epoch} steps/epoch x "
        f"{profile.epochs} epochs | amp {amp_dtype} | channels_last {channels_last} | compile {config.compile} "
        f"| data made in {data_seconds:.1f} s")

    def checkpoint(at_step: int) -> None:
        D.broadcast_buffers(model, info)
        if info.is_main:
            save_checkpoint(ckpt_path, model, optimizer, step=at_step, signature=signature,
                            scheduler=scheduler.state_dict(), scaler=scaler.state_dict() if scaler else None,
                            rng=rng_state(), train_seconds=train_seconds)
        D.barrier(info)

    def evaluate_and_log(stats: dict) -> dict:
        """Evaluate (every rank its share of the test set), checkpoint, then append the record."""
        D.broadcast_buffers(model, info)
        t_eval = time.perf_counter()
        model.eval()
        metrics = task.evaluate(model, test_set, info, 2 * batch, autocast)
        record = {"model": name, "profile": profile.name, "epoch": step / steps_per_epoch, "step": step,
                  **stats, **metrics, "train_seconds": train_seconds,
                  "eval_seconds": time.perf_counter() - t_eval, "world_size": info.world_size,
                  "device": str(device)}
        if info.distributed:                          # DDP must keep every rank's weights identical
            record["rank_spread"] = D.parameter_spread(model, info)
        checkpoint(step)                              # checkpoint first: a record never outlives its state
        if info.is_main:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(_jsonable(record)) + "\n")
                f.flush()
                os.fsync(f.fileno())
        key = spec.target[0]
        say(f"[{name}] epoch {record['epoch']:.2f} step {step}/{total_steps} loss {stats.get('train_loss', 0):.4f} "
            f"{key} {record[key]:.4f} | {stats.get('images_per_s', 0):.0f} img/s, "
            f"data wait {stats.get('data_wait_share', 0):.1%} | {train_seconds:.1f} s training")
        return record

    records = read_metrics(metrics_path) if metrics_path.exists() and info.is_main else []
    record = records[-1] if records else {}
    at_boundary = step > 0 and (step % steps_per_epoch == 0 or step == stop)
    if at_boundary and D.broadcast_object(record.get("step") != step, info):
        record = evaluate_and_log({})                 # killed between checkpoint and record: redo the record

    while step < stop:
        epoch, within = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch, skip=within * batch)
        task.set_epoch(epoch)
        net.train()
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        seen, wait = 0, 0.0
        t_epoch = t_last = time.perf_counter()
        batches = iter(loader)
        bar = tqdm(total=min(steps_per_epoch - within, stop - step), desc=f"{name} epoch {epoch + 1}",
                   disable=not (config.progress and info.is_main), leave=False)
        while step < stop and within < steps_per_epoch:
            t0 = time.perf_counter()
            batch_data = next(batches)
            wait += time.perf_counter() - t0
            with autocast():
                loss, n = task.loss(net, batch_data, device, channels_last)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                if spec.grad_clip:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                if spec.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
                optimizer.step()
            scheduler.step()
            loss_sum += loss.detach().double() * n
            seen += n
            step += 1
            within += 1
            bar.update(1)
            if config.save_every and step % config.save_every == 0 and within < steps_per_epoch and step < stop:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                train_seconds += time.perf_counter() - t_last
                checkpoint(step)
                t_last = time.perf_counter()
        bar.close()
        del batches
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds += time.perf_counter() - t_last
        sums = D.reduce_sums({"loss": float(loss_sum), "seen": seen, "wait": wait,
                              "elapsed": time.perf_counter() - t_epoch}, info)
        if not math.isfinite(sums["loss"]):
            raise FloatingPointError(f"[{name}] the training loss became {sums['loss']}; lower --lr")
        record = evaluate_and_log({
            "train_loss": sums["loss"] / max(sums["seen"], 1), "images": int(sums["seen"]),
            # images over all ranks per second of (mean) epoch wall time
            "images_per_s": sums["seen"] / max(sums["elapsed"] / info.world_size, 1e-9),
            "data_wait_share": sums["wait"] / max(sums["elapsed"], 1e-9)})
    return RunResult(record=record, model=model, out=out)


# ============================================================================= command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lecturelib.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", nargs="?", help="a model (see --list) or a lesson ('06', '06_skip_connections')")
    p.add_argument("--list", action="store_true", help="list the models and lessons, then exit")
    p.add_argument("--profile", choices=sorted(PROFILES), default=None,
                   help="sizes (default: $LECTURELIB_PROFILE, else full on a GPU, quick on a CPU)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/<model> or runs/lesson<NN>)")
    p.add_argument("--epochs", type=int, help="epochs (default: the profile's)")
    p.add_argument("--steps", type=int, help="stop after this many optimizer steps in total")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start again even if the run folder holds a checkpoint")
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps too (default: each epoch)")
    p.add_argument("--batch-size", type=int, help="global batch size over all processes (default: the profile's)")
    p.add_argument("--image-size", type=int, help="scene side in pixels (default: the profile's)")
    p.add_argument("--n-train", type=int, help="training scenes (default: the profile's)")
    p.add_argument("--n-test", type=int, help="test scenes (default: the profile's)")
    p.add_argument("--width", type=int, help="base channel count (default: the profile's)")
    p.add_argument("--workers", type=int, help="DataLoader worker processes (default: the profile's)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    p.add_argument("--no-amp", action="store_true", help="full precision even where the profile asks for amp")
    p.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                   help="channels-last memory format (auto: on CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (needs a C++ compiler / Triton)")
    p.add_argument("--sync-bn", action="store_true", help="BatchNorm statistics over all GPUs (CUDA only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def config_from_args(args: argparse.Namespace, cuda_available: bool) -> RunConfig:
    """The profile (with any size overrides) and the run settings the command line asks for."""
    profile = get_profile(args.profile, cuda_available=cuda_available)
    changes = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size),
                                 ("image_size", args.image_size), ("n_train", args.n_train),
                                 ("n_test", args.n_test), ("width", args.width),
                                 ("num_workers", args.workers)) if v is not None}
    for k, v in changes.items():
        if v < (0 if k in ("epochs", "num_workers", "n_test") else 1):
            raise ValueError(f"--{k.replace('_', '-').replace('num-', '')} must be positive, got {v}")
    if changes:
        profile = profile.scaled(**changes)
    if args.steps is not None and args.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {args.steps}")
    return RunConfig(profile=profile, out=args.out or Path("runs"), steps=args.steps, seed=args.seed,
                     lr=args.lr, device=args.device, amp=not args.no_amp, channels_last=args.channels_last,
                     compile=args.compile, sync_bn=args.sync_bn, resume=args.resume, overwrite=args.overwrite,
                     save_every=args.save_every, progress=not args.no_progress)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list or not args.target:
        for m, spec in MODELS.items():
            print(f"{m:22s} lesson {spec.lesson}  {spec.task:10s} {spec.description}")
        print("lessons: " + ", ".join(f"{k}_{v}" for k, v in LESSON_NAMES.items()))
        return 0 if args.list else 2
    try:
        names = models_of(args.target)
        info = D.init_distributed(args.device)
    except (KeyError, ValueError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    try:
        config = config_from_args(args, cuda_available=info.device.type == "cuda")
        if info.device.type == "cpu" and config.profile.name == "full" and info.is_main:
            print("note: the full profile on a CPU takes hours; --profile quick is the CPU setting", file=sys.stderr)
        root = args.out or Path("runs") / (names[0] if len(names) == 1 else f"lesson{MODELS[names[0]].lesson}")
        for m in names:
            config.out = root if len(names) == 1 else root / m
            train_model(m, config, info)
    except (KeyError, ValueError, FileExistsError, FileNotFoundError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    finally:
        D.cleanup(info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
