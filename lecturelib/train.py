"""Train any lesson's model from the command line, on a CPU, a GPU or several (``torchrun``).

    python -m lecturelib.train fcn8s --profile quick                  # one model, this machine
    python -m lecturelib.train 06 --profile full --out runs/lesson06  # every model of lesson 06
    torchrun --nproc_per_node 4 -m lecturelib.train fcn8s --profile full   # 4 GPUs, one process each
    python -m lecturelib.train fcn8s --resume                         # continue after an interruption
    python -m lecturelib.train --list                                 # the models and lessons
    python -m lecturelib.train fcn8s --data my_data --num-classes 3   # your own folder (images/ + masks/)

It trains exactly the notebooks' models: each model is built from its lesson's one recipe
(``<LessonConfig>.from_profile(profile)``), made into "a task + :func:`lecturelib.training.fit`"
with the same functions the notebook calls. Each run writes to its folder (``--out``, default
``runs/<model>``):

- ``last.pt``: weights, optimizer, schedule, step and RNG states, written atomically at the end of
  every epoch and every ``--save-every`` steps, by rank 0 only. A run killed at any moment leaves
  the last good checkpoint; ``--resume`` continues from its step with the same data order.
- ``metrics.jsonl``: one JSON object per evaluation (epoch, step, loss, metrics, seconds, items/s,
  share of step time spent waiting for data).
- ``config.json`` (the training settings) and ``recipe.json`` (the lesson's recipe and the profile).

``--profile`` sets image size, data size, batch size, epochs and width: ``quick`` on a CPU, ``full``
on a GPU by default; each recipe derives its own settings from it. ``--epochs``, ``--batch-size``
and ``--lr`` change the recipe itself. On CUDA the run uses mixed precision (bf16 where supported,
else fp16 with loss scaling), pinned memory with loader workers, channels-last tensors and, with
``--compile``, ``torch.compile``.

``--data DIR --num-classes K`` trains on your own folder instead of the course scenes: ``DIR/images`` +
``DIR/masks`` for the semantic models (:class:`lecturelib.datasets.SegmentationFolder`), ``DIR/images`` +
``DIR/instances`` (+ ``DIR/classes``) for sds, cascade and maskrcnn
(:class:`lecturelib.instances.InstanceFolder`). ``--val-fraction`` of it (default 0.2, the same split for
every seed) is evaluated after each epoch; ``--image-size S`` resizes every item to S x S (without it the
images must share one size for the semantic models); the profile's image size becomes the data's side and
its train / test counts the split's. ``python -m lecturelib.evaluate --run RUN`` evaluates the result.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from . import captioning as cap
from . import checkpoints, localization, patch, sds
from . import distributed as D
from . import multiscale as ms
from . import recurrent as rc
from . import spatial_transformer as stn
from . import transposed as T
from .cascade import CascadeConfig, MaskCascade
from .clutter import cluttered_tensors
from .datasets import DataFolder, folder_data
from .deconvnet import deconvnet
from .detection import DetectionConfig
from .fast_rcnn import FastRCNN
from .faster_rcnn import FasterRCNN
from .fcn import SkipLessonConfig, fcn
from .maskrcnn import tiny_maskrcnn
from .profiles import PROFILES, Profile, get_profile
from .rcnn import RCNN
from .scenes import CourseScenes
from .session import set_seed
from .tasks import (
    CaptionTask,
    ClutterTask,
    DetectionTask,
    InstanceTask,
    PatchTask,
    RecurrentTask,
    SemanticTask,
    UpsamplingTask,
)
from .training import History, fit, jsonable, train_config, write_atomic
from .yolo import YOLO


# ============================================================================= the models
@dataclass(frozen=True)
class ModelSpec:
    """One model of a lesson, as the notebook trains it.

    recipe(profile) -> the lesson's config. build(recipe) -> nn.Module. task(recipe, train, test, seed)
    -> the task (:mod:`lecturelib.tasks`). data: the scenes the task is made from, "semantic"
    ((images, masks) tensors) or "instance" (torchvision detection targets). eval_fraction: share of
    the test scenes evaluated after each epoch (dense per-pixel patch labelling is slow). target:
    (metric, value) for the benchmark's "time to target" (``scripts/bench_training.py``).
    """

    lesson: str
    recipe: Callable[[Profile], Any]
    build: Callable[[Any], nn.Module]
    task: Callable[..., Any]
    data: str = "semantic"
    eval_fraction: float = 1.0
    target: tuple[str, float] = ("miou", 0.3)
    description: str = ""


def _plain(task_class):
    """task(recipe, train, test, seed) for tasks that need no seed."""
    return lambda recipe, train, test, seed: task_class(recipe, train, test)


def _patch_spec(patch_size: int) -> ModelSpec:
    return ModelSpec(
        "01", patch.PatchLessonConfig.from_profile,
        lambda r: patch.patch_cnn(r.model_config(patch_size)),
        lambda r, train, test, seed: PatchTask(r, train, test, patch_size=patch_size, seed=seed),
        eval_fraction=1 / 4, target=("miou", 0.3),
        description=f"patch classifier, {patch_size}x{patch_size} patches: label the centre pixel")


def _region_task(recipe, train, test, seed):
    return sds.region_task(recipe, train, test, seed=seed)


def _detection_task(proposals: bool):
    """task(recipe, train, test, seed) of lesson 07's detectors (selective-search proposals cached when used)."""
    return lambda recipe, train, test, seed: DetectionTask(recipe, train, test, proposals=proposals)


_PSNR, _AP50 = ("psnr", 24.0), ("ap50", 0.1)
_DETECTOR = dict(data="instance", eval_fraction=1 / 4, target=_AP50)

MODELS: dict[str, ModelSpec] = {
    "patch_p10": _patch_spec(10),
    "patch_p22": _patch_spec(22),
    "patch_p38": _patch_spec(38),
    "multiscale": ModelSpec(
        "03", ms.MultiScaleConfig.from_profile, ms.multiscale_net, _plain(SemanticTask),
        description="Farabet multi-scale CNN (shared weights over an image pyramid)"),
    "singlescale": ModelSpec(
        "03", ms.MultiScaleConfig.from_profile, ms.single_scale_baseline, _plain(SemanticTask),
        description="the same CNN on one scale, parameter-matched baseline"),
    "recurrent": ModelSpec(
        "04", rc.RefinementConfig.from_profile, rc.RecurrentRefiner, _plain(RecurrentTask),
        description="Pinheiro-Collobert recurrent refinement, trained unrolled"),
    "onepass": ModelSpec(
        "04", lambda p: rc.single_pass_config(rc.RefinementConfig.from_profile(p)), rc.RecurrentRefiner,
        _plain(RecurrentTask), description="one pass of a wider CNN: the recurrent model's compute, no feedback"),
    "deconv_k3": ModelSpec(
        "05", T.UpsamplerConfig.from_profile, lambda r: T.DeconvUpsampler(r.width, kernel_size=3),
        _plain(UpsamplingTask), target=_PSNR,
        description="x2 upsampler ending in a 3x3 transposed convolution (uneven overlap)"),
    "deconv_k4": ModelSpec(
        "05", T.UpsamplerConfig.from_profile, lambda r: T.DeconvUpsampler(r.width, kernel_size=4),
        _plain(UpsamplingTask), target=_PSNR,
        description="x2 upsampler ending in a 4x4 transposed convolution (even overlap)"),
    "resizeconv": ModelSpec(
        "05", T.UpsamplerConfig.from_profile, lambda r: T.ResizeConvUpsampler(r.width),
        _plain(UpsamplingTask), target=_PSNR, description="x2 upsampler: nearest resize then convolution"),
    "fcn32s": ModelSpec(
        "06", SkipLessonConfig.from_profile, lambda r: fcn(32, r.num_classes, config=r.vgg()), _plain(SemanticTask),
        description="FCN-32s"),
    "fcn16s": ModelSpec(
        "06", SkipLessonConfig.from_profile, lambda r: fcn(16, r.num_classes, config=r.vgg()), _plain(SemanticTask),
        description="FCN-16s"),
    "fcn8s": ModelSpec(
        "06", SkipLessonConfig.from_profile, lambda r: fcn(8, r.num_classes, config=r.vgg()), _plain(SemanticTask),
        description="FCN-8s"),
    "deconvnet": ModelSpec(
        "06", SkipLessonConfig.from_profile, lambda r: deconvnet(r.num_classes, config=r.vgg()), _plain(SemanticTask),
        description="DeconvNet: the upside-down decoder with max-unpooling"),
    "localizer": ModelSpec(
        "07", localization.LocalizationConfig.from_profile, localization.localizer,
        _plain(localization.LocalizationTask), data="one_item", target=("loc_acc", 0.5),
        description="classification + localization: a class head and a box head on one-item scenes"),
    "rcnn": ModelSpec(
        "07", DetectionConfig.from_profile, RCNN, _detection_task(True), **_DETECTOR,
        description="R-CNN: selective-search proposals, each cropped, warped and run through the CNN"),
    "fast_rcnn": ModelSpec(
        "07", DetectionConfig.from_profile, FastRCNN, _detection_task(True), **_DETECTOR,
        description="Fast R-CNN: one backbone pass, RoI pooling of the selective-search proposals"),
    "faster_rcnn": ModelSpec(
        "07", DetectionConfig.from_profile, FasterRCNN, _detection_task(False), **_DETECTOR,
        description="Faster R-CNN: region proposal network + the Fast R-CNN head, four losses"),
    "yolo": ModelSpec(
        "07", DetectionConfig.from_profile, YOLO, _detection_task(False), **_DETECTOR,
        description="YOLO v1: an S x S grid, B boxes + confidence + class scores per cell"),
    "sds": ModelSpec(
        "08", sds.SDSConfig.from_profile, sds.SDS, _region_task, data="instance", eval_fraction=1 / 4,
        target=_AP50,
        description="SDS: selective-search proposals scored by a two-pathway CNN"),
    "cascade": ModelSpec(
        "08", CascadeConfig.from_profile, MaskCascade, _plain(InstanceTask), data="instance", eval_fraction=1 / 4,
        target=_AP50,
        description="Multi-task Network Cascade (RPN -> RoI masks -> classes)"),
    "maskrcnn": ModelSpec(
        "08", CascadeConfig.from_profile, lambda r: tiny_maskrcnn(r.num_classes, r.image_size, r.width, config=r),
        _plain(InstanceTask), data="instance", eval_fraction=1 / 4, target=_AP50,
        description="torchvision's Mask R-CNN (no pretrained weights) on the cascade's backbone"),
    "caption_attention": ModelSpec(
        "09", cap.CaptionConfig.from_profile, cap.attention_captioner, _plain(CaptionTask), data="instance",
        target=("exact_match", 0.5), description="captioner: CNN feature grid + GRU with soft attention (Xu et al.)"),
    "caption_meanpool": ModelSpec(
        "09", cap.CaptionConfig.from_profile, cap.mean_pool_captioner, _plain(CaptionTask), data="instance",
        target=("exact_match", 0.5), description="captioner without attention: the mean feature at every step"),
    "stn_classifier": ModelSpec(
        "09", stn.STNConfig.from_profile, stn.stn_classifier, _plain(ClutterTask), data="cluttered",
        target=("accuracy", 0.6),
        description="spatial transformer (a window that moves and zooms) + classifier of its 24x24 view"),
    "plain_classifier": ModelSpec(
        "09", stn.STNConfig.from_profile, stn.plain_classifier, _plain(ClutterTask), data="cluttered",
        target=("accuracy", 0.6),
        description="the classifier without it, widened to as many parameters: the whole image at 24x24"),
}

LESSON_NAMES = {"01": "patch_classification", "03": "multiscale", "04": "recurrent_refinement",
                "05": "transposed_convolution", "06": "skip_connections", "07": "object_detection",
                "08": "instance_segmentation", "09": "attention_and_spatial_transformers"}


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


# ============================================================================= data
def scene_tensors(profile: Profile, split: str, workers: int = 0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images float32[N, 3, S, S] and semantic masks int64[N, S, S] of a split, made by ``workers`` processes."""
    ds = CourseScenes.from_profile(profile, split, seed=seed, cache=False)
    if workers <= 0 or len(ds) == 0:
        return ds.tensors()
    images, masks = zip(*DataLoader(ds, batch_size=64, num_workers=workers))
    return torch.cat(images), torch.cat(masks)


def instance_scenes(profile: Profile, split: str, workers: int = 0) -> list:
    """The (image, target) pairs of a split in torchvision's detection format, made by ``workers`` processes."""
    ds = CourseScenes.from_profile(profile, split, mode="instance", cache=False)
    if workers <= 0:
        return [ds[i] for i in range(len(ds))]
    return [pair for batch in DataLoader(ds, batch_size=32, num_workers=workers, collate_fn=list) for pair in batch]


DATA_MAKERS = {"semantic": scene_tensors, "instance": instance_scenes, "cluttered": cluttered_tensors,
               "one_item": localization.one_item_scenes}


def test_scenes(kind: str, eval_fraction: float, profile: Profile, workers: int = 0):
    """The test split a task of data ``kind`` ("semantic" or "instance") is evaluated on: the first
    ``eval_fraction`` of the profile's test scenes."""
    test_profile = profile.scaled(n_test=max(1, round(profile.n_test * eval_fraction)))
    return DATA_MAKERS[kind](test_profile, "test", workers)


def scene_data(spec: ModelSpec, profile: Profile, workers: int = 0, test_only: bool = False) -> tuple:
    """(train, test) data of ``spec``'s task for ``profile`` (train None when ``test_only``)."""
    make = DATA_MAKERS[spec.data]
    train = None if test_only else make(profile, "train", workers)
    return train, test_scenes(spec.data, spec.eval_fraction, profile, workers)


# ============================================================================= one run
@dataclass
class RunConfig:
    """Settings of one command-line run besides the model.

    profile: sizes (image size, scenes, width, ...) from which the recipe is derived. epochs, batch_size
    (the GLOBAL batch over all processes), lr: change the recipe (None: the recipe's). steps: stop after
    this many optimizer steps (the schedule still spans all epochs). save_every: also checkpoint every
    this many steps. channels_last: "auto" (on CUDA), "on" or "off". amp: mixed precision where the
    profile asks and on CUDA. export: write the trained model as a course checkpoint
    (:func:`lecturelib.checkpoints.export`, ``data/checkpoints/<model>/seed<k>.*``); command: how it was run.
    data: your own folder instead of the course scenes (:func:`user_data`). anchor_sizes: anchor sides in
    pixels for the instance models (None: the recipe's).
    """

    profile: Profile
    out: Path
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    steps: int | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: str = "auto"
    compile: bool = False
    sync_bn: bool = False
    resume: bool = False
    overwrite: bool = False
    save_every: int = 0
    progress: bool = True
    export: bool = False
    command: str = ""
    data: DataFolder | None = None
    anchor_sizes: tuple | None = None


@dataclass
class RunResult:
    """What :func:`train_model` returns: the last metrics record, the trained model, its history, the folder."""

    record: dict
    model: nn.Module
    history: History
    out: Path


def recipe_for(name: str, profile: Profile, **changes):
    """The recipe of model ``name`` for ``profile``, with ``changes`` (epochs, batch_size, lr) applied."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    recipe = MODELS[name].recipe(profile)
    changes = {k: v for k, v in changes.items() if v is not None}
    return dataclasses.replace(recipe, **changes) if changes else recipe


def user_data(spec: ModelSpec, profile: Profile, config: RunConfig) -> tuple:
    """(train, test, profile, recipe changes, about) of a run on ``config.data``: the folder split by
    :func:`lecturelib.datasets.folder_data`, the profile sized to the data (image size: the resize side, else
    the largest side rounded up to a multiple of 16; the split's counts), the recipe's num_classes and
    anchor_sizes, and what ``recipe.json`` records of the data."""
    if spec.data not in ("semantic", "instance"):
        raise ValueError(f"--data does not apply to the {spec.data} data of this model; it trains on the course's")
    train, test, facts = folder_data(spec.data, config.data)
    if train is None:
        raise ValueError("--val-fraction 1 leaves nothing to train on; use a fraction below 1")
    size = config.data.size
    side = (size if isinstance(size, int) else max(size)) if size else -(-facts["largest_side"] // 16) * 16
    profile = profile.scaled(image_size=side, n_train=facts["n_train"], n_test=facts["n_val"])
    changes = {"num_classes": config.data.num_classes, "anchor_sizes": config.anchor_sizes}
    return train, test, profile, {k: v for k, v in changes.items() if v is not None}, {**config.data.about(), **facts}


def train_model(name: str, config: RunConfig, info: D.DistInfo | None = None) -> RunResult:
    """Train model ``name`` of :data:`MODELS` as ``config`` says; returns a :class:`RunResult`.

    Runs alone or as one process of a ``torchrun`` job (``info`` from
    :func:`lecturelib.distributed.init_distributed`).
    """
    spec = MODELS.get(name)
    if spec is None:
        raise KeyError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    own_group = info is None
    info = info or D.init_distributed(config.device)
    try:
        profile, device, about_data, changes = config.profile, info.device, None, {}
        if config.data is not None:
            train, test, profile, changes, about_data = user_data(spec, profile, config)
        else:
            train, test = scene_data(spec, profile, profile.num_workers)
        recipe = recipe_for(name, profile, epochs=config.epochs, batch_size=config.batch_size, lr=config.lr)
        recipe = dataclasses.replace(recipe, **{k: v for k, v in changes.items() if hasattr(recipe, k)})
        if config.anchor_sizes and not hasattr(recipe, "anchor_sizes") and info.is_main:
            print(f"note: {name} has no anchors; --anchor-sizes does not apply to it", file=sys.stderr)
        set_seed(config.seed)                               # the same initial weights on every process
        model = spec.build(recipe)
        task = spec.task(recipe, train, test, config.seed)
        run = train_config(recipe, seed=config.seed, amp=config.amp and profile.amp, progress=config.progress,
                           steps=config.steps, out=config.out, resume=config.resume, overwrite=config.overwrite,
                           save_every=config.save_every, compile=config.compile, sync_bn=config.sync_bn,
                           channels_last=config.channels_last == "on" or (config.channels_last == "auto"
                                                                          and device.type == "cuda"),
                           workers=profile.num_workers)
        if info.is_main:
            print(f"[{name}] {spec.description} | lesson {spec.lesson} | profile {profile.name} | "
                  f"{info.world_size} process(es) on {device} | {recipe}")
            Path(config.out).mkdir(parents=True, exist_ok=True)
            about = {"model": name, "lesson": spec.lesson, "recipe": dataclasses.asdict(recipe),
                     "profile": profile.as_dict(), **({"data": about_data} if about_data else {})}
            write_atomic(Path(config.out) / "recipe.json", json.dumps(jsonable(about), indent=2, default=str))
        start = time.perf_counter()
        history = fit(model, task, run, info)
        if config.export and info.is_main:
            path = checkpoints.export(name, config.seed, model, task, recipe, profile, history, config.command,
                                      time.perf_counter() - start, device)
            print(f"[{name}] exported {path}; then run: python -m lecturelib.assets --write-manifest")
        return RunResult(record=history.final, model=model, history=history, out=Path(config.out))
    finally:
        if own_group:
            D.cleanup(info)


# ============================================================================= command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lecturelib.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", nargs="?", help="a model (see --list) or a lesson ('06', '06_skip_connections')")
    p.add_argument("--list", action="store_true", help="list the models and lessons, then exit")
    p.add_argument("--profile", choices=sorted(PROFILES), default=None,
                   help="sizes (default: $LECTURELIB_PROFILE, else full on a GPU, quick on a CPU)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/<model> or runs/lesson<NN>)")
    p.add_argument("--epochs", type=int, help="epochs (default: the recipe's)")
    p.add_argument("--batch-size", type=int, help="global batch size over all processes (default: the recipe's)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    p.add_argument("--steps", type=int, help="stop after this many optimizer steps in total")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start again even if the run folder holds a checkpoint")
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps too (default: each epoch)")
    p.add_argument("--image-size", type=int, help="scene side in pixels (default: the profile's)")
    p.add_argument("--n-train", type=int, help="training scenes (default: the profile's)")
    p.add_argument("--n-test", type=int, help="test scenes (default: the profile's)")
    p.add_argument("--width", type=int, help="the profile's base channel count (default: the profile's)")
    p.add_argument("--workers", type=int, help="DataLoader worker processes (default: the profile's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    p.add_argument("--no-amp", action="store_true", help="full precision even where the profile asks for amp")
    p.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                   help="channels-last memory format (auto: on CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (needs a C++ compiler / Triton)")
    p.add_argument("--sync-bn", action="store_true", help="BatchNorm statistics over all GPUs (CUDA only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--export", action="store_true",
                   help="write the trained model as a course checkpoint to data/checkpoints/<model>/seed<k>.*")
    d = p.add_argument_group("your own data (instead of the course scenes)")
    d.add_argument("--data", type=Path, help="a folder: images/ + masks/ (semantic models) or images/ + instances/ "
                   "[+ classes/] (sds, cascade, maskrcnn); --image-size S resizes every item to S x S")
    d.add_argument("--num-classes", type=int, help="classes in the data, background included (needed with --data)")
    d.add_argument("--class-names", help="a text file: one class name per line, background first")
    d.add_argument("--val-fraction", type=float, default=0.2, help="share of the folder evaluated, not trained on")
    d.add_argument("--binary", action="store_true", help="masks of 0 and one other value (e.g. 0/255): class 1")
    d.add_argument("--anchor-sizes", help="instance models: anchor sides in pixels, e.g. 16,32,64")
    return p


def data_settings(args: argparse.Namespace) -> dict:
    """The RunConfig fields of ``--data`` and its options; ValueError when they do not fit together."""
    if args.data is None:
        given = [f for f, v in (("--num-classes", args.num_classes), ("--class-names", args.class_names),
                                ("--anchor-sizes", args.anchor_sizes)) if v is not None] + (["--binary"] * args.binary)
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise ValueError(f"{' and '.join(given)} {verb} only with --data DIR (your own folder)")
        return {}
    if args.num_classes is None:
        raise ValueError("--data needs --num-classes K: the number of classes, background included (K >= 2)")
    if args.n_train is not None or args.n_test is not None:
        raise ValueError("--n-train / --n-test do not apply with --data: the folder's size decides; use --val-fraction")
    if args.export:
        raise ValueError("--export writes the course checkpoints (course scenes); a run on --data stays in --out")
    anchors = None
    if args.anchor_sizes:
        try:
            anchors = tuple(float(v) for v in args.anchor_sizes.split(","))
        except ValueError:
            raise ValueError(f"--anchor-sizes takes pixel sides separated by commas (e.g. 16,32,64), got "
                             f"{args.anchor_sizes!r}") from None
    return {"data": DataFolder(args.data, args.num_classes, args.class_names, args.image_size, args.val_fraction,
                               args.binary), "anchor_sizes": anchors}


def config_from_args(args: argparse.Namespace, cuda_available: bool) -> RunConfig:
    """The profile (with any size overrides) and the run settings the command line asks for."""
    profile = get_profile(args.profile, cuda_available=cuda_available)
    sizes = {k: v for k, v in (("image_size", args.image_size), ("n_train", args.n_train), ("n_test", args.n_test),
                               ("width", args.width), ("num_workers", args.workers)) if v is not None}
    checked = {**sizes, **{k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size),
                                             ("steps", args.steps)) if v is not None}}
    for k, v in checked.items():
        if v < (0 if k in ("num_workers", "n_test", "steps") else 1):
            raise ValueError(f"--{k.replace('_', '-').replace('num-', '')} must be positive, got {v}")
    if args.lr is not None and not args.lr > 0:
        raise ValueError(f"--lr must be positive, got {args.lr}")
    if sizes:
        profile = profile.scaled(**sizes)
    return RunConfig(profile=profile, out=args.out or Path("runs"), epochs=args.epochs, batch_size=args.batch_size,
                     lr=args.lr, steps=args.steps, seed=args.seed, device=args.device, amp=not args.no_amp,
                     channels_last=args.channels_last, compile=args.compile, sync_bn=args.sync_bn,
                     resume=args.resume, overwrite=args.overwrite, save_every=args.save_every,
                     progress=not args.no_progress, export=args.export, **data_settings(args))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list or not args.target:
        width = max(len(m) for m in MODELS)
        for m, spec in MODELS.items():
            print(f"{m:<{width}}  lesson {spec.lesson}  {spec.description}")
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
        config.command = "python -m lecturelib.train " + " ".join(argv if argv is not None else sys.argv[1:])
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
