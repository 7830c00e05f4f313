"""Classification + localization (lesson 07): one object per image, a class head and a box-regression head.

The lecture's first step from classification towards detection: when an image holds exactly one object,
its box is just four more numbers to predict. One shared CNN (lesson 01's patch CNN: valid 3x3
convolutions and 2x2 pooling, then a fully-connected layer) feeds two heads:

- the **class head**: ``num_classes`` scores (0 = background: no object in the window), cross-entropy;
- the **box head**: 4 numbers (x0, y0, x1, y1) as fractions of the window side, trained with smooth-L1
  (Girshick, Fast R-CNN 2015, eq. 3) or L2 on the coordinates, only on windows that hold an object.

The loss is ``CE + box_weight * box loss``. The data are one-item scenes (:class:`OneItemScenes`): a course
scene of side ``window`` with a single Fashion-MNIST item, or, with probability ``p_empty``, only the
background, which teaches the class head to say "nothing here". Because the network is lesson 01's
patch CNN, its two heads are one fully-connected layer split in two (:meth:`LocalizationNet.as_sequential`),
and lesson 02's converter turns it into a fully convolutional sliding-window detector
(:mod:`lecturelib.overfeat`): Overfeat (Sermanet et al., ICLR 2014).

Boxes are pixel-edge ``(x0, y0, x1, y1)`` float32 (a mask whose columns run 3..7 has x0 = 3, x1 = 8).
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.ops import box_iou

from . import distributed as D
from .patch import PatchCNNConfig, patch_cnn
from .scenes import NUM_CLASSES, SceneConfig, _background, load_items, make_scene, scene_rng, to_tensor_image
from .training import to_device

BOX_LOSSES = ("smooth_l1", "l2")
EMPTY_SEED = 7919            # scenes with no item use their own generator stream (seed offset), see OneItemScenes


# ----------------------------------------------------------------------------- the recipe
@dataclass(frozen=True)
class LocalizationConfig:
    """The recipe of the localization network (lesson 07), one per profile (:meth:`from_profile`).

    window: side in pixels of the one-item scenes, the network's input (and Overfeat's sliding window);
        must fit a ``stages``-stage patch CNN exactly (:func:`lecturelib.patch.valid_patch_sizes`).
    stages / width / hidden: the patch CNN (width doubles per stage). min_scale / max_scale: item side as a
    share of the window. p_empty: share of scenes without an item (class 0, no box loss).
    box_loss: "smooth_l1" (beta ``smooth_l1_beta``, in window fractions) or "l2"; box_weight: its weight.
    n_train / n_test: one-item scenes. epochs, batch_size, lr: training.
    """

    num_classes: int = NUM_CLASSES
    window: int = 30
    stages: int = 3
    width: int = 16
    hidden: int = 64
    min_scale: float = 0.5
    max_scale: float = 1.0
    p_empty: float = 0.25
    box_loss: str = "smooth_l1"
    smooth_l1_beta: float = 0.05
    box_weight: float = 5.0
    n_train: int = 2048
    n_test: int = 512
    epochs: int = 6
    batch_size: int = 64
    lr: float = 3e-3

    def __post_init__(self):
        PatchCNNConfig(patch_size=self.window, num_classes=self.num_classes + 4, stages=self.stages)  # validates
        if self.box_loss not in BOX_LOSSES:
            raise ValueError(f"LocalizationConfig.box_loss must be one of {BOX_LOSSES}, got {self.box_loss!r}")
        if not (0 < self.min_scale <= self.max_scale <= 1):
            raise ValueError(f"need 0 < min_scale <= max_scale <= 1 (item side / window), got "
                             f"{self.min_scale}, {self.max_scale}")
        if not (0 <= self.p_empty < 1):
            raise ValueError(f"LocalizationConfig.p_empty is a probability in [0, 1), got {self.p_empty}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes counts the background too: >= 2, got {self.num_classes}")

    @classmethod
    def from_profile(cls, profile, **changes) -> "LocalizationConfig":
        """Four one-item scenes per scene of the profile (they are small), its width and epochs."""
        base = dict(width=profile.width, n_train=4 * profile.n_train, n_test=4 * profile.n_test,
                    epochs=2 * profile.epochs, batch_size=2 * profile.batch_size)
        return cls(**{**base, **changes})

    def scene_config(self) -> SceneConfig:
        """The :class:`~lecturelib.scenes.SceneConfig` of one-item scenes of side ``window``."""
        return SceneConfig(size=self.window, min_items=1, max_items=1, min_scale=self.min_scale,
                           max_scale=self.max_scale, p_touch=0.0)

    def patch_config(self) -> PatchCNNConfig:
        """The shared CNN: lesson 01's patch CNN on the window, ``num_classes + 4`` outputs (both heads)."""
        return PatchCNNConfig(patch_size=self.window, num_classes=self.num_classes + 4, width=self.width,
                              hidden=self.hidden, stages=self.stages)


# ----------------------------------------------------------------------------- the data
def one_item_scene(split: str, index: int, seed: int, config: LocalizationConfig) -> tuple[np.ndarray, int, np.ndarray]:
    """Scene ``index``: (image uint8[window, window, 3], label (0 = none), box float32[4] (zeros when none)).

    Deterministic in (split, index, seed). Whether the scene is empty is drawn from its own generator.
    """
    rng = scene_rng(split, index, seed)
    if rng.random() < config.p_empty:
        bg = _background(scene_rng(split, index, seed + EMPTY_SEED), split, config.window, SceneConfig().jitter)
        return np.round(np.clip(bg, 0, 1) * 255).astype(np.uint8), 0, np.zeros(4, np.float32)
    s = make_scene(rng, load_items(split), split, config.scene_config())
    if len(s.labels) != 1:       # the generator could not place the item: fall back to an empty window
        return s.image, 0, np.zeros(4, np.float32)
    return s.image, int(s.labels[0]), s.boxes[0].astype(np.float32)


class OneItemScenes(Dataset):
    """``n`` one-item scenes (or empty ones) of side ``config.window``, each made when first read, then kept.

    Items: (image float32[3, S, S] in [0, 1], label int64 (0 = background), box float32[4] pixel-edge).
    ``images``, ``labels``, ``boxes``: the whole set as tensors (every scene made).
    """

    def __init__(self, config: LocalizationConfig, split: str = "train", n: int | None = None, seed: int = 0):
        n = config.n_train if (n is None and split == "train") else (config.n_test if n is None else n)
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative number of scenes, got {n!r}")
        scene_rng(split, 0, seed)                                      # validates split and seed
        self.config, self.split, self.seed, self.n = config, split, seed, int(n)
        self._made: dict[int, tuple] = {}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if not -self.n <= i < self.n:
            raise IndexError(f"scene {i} out of range for {self.n} scenes")
        i = int(i) % self.n
        if i not in self._made:
            image, label, box = one_item_scene(self.split, i, self.seed, self.config)
            self._made[i] = (to_tensor_image(image), torch.tensor(label), torch.from_numpy(box))
        return self._made[i]

    def _stack(self, k: int) -> torch.Tensor:
        if self.n == 0:
            S = self.config.window
            return (torch.zeros(0, 3, S, S), torch.zeros(0, dtype=torch.int64), torch.zeros(0, 4))[k]
        return torch.stack([self[i][k] for i in range(self.n)])

    @property
    def images(self) -> torch.Tensor:
        """float32[n, 3, S, S]."""
        return self._stack(0)

    @property
    def labels(self) -> torch.Tensor:
        """int64[n] (0 = no item)."""
        return self._stack(1)

    @property
    def boxes(self) -> torch.Tensor:
        """float32[n, 4] pixel-edge (zeros where there is no item)."""
        return self._stack(2)

    def __repr__(self) -> str:
        return f"OneItemScenes(split={self.split!r}, n={len(self)}, window={self.config.window}, seed={self.seed})"


def one_item_scenes(profile, split: str, workers: int = 0) -> OneItemScenes:
    """The one-item scenes of ``split`` for ``profile`` (the command line's data of the localizer)."""
    return OneItemScenes(LocalizationConfig.from_profile(profile), split)


# ----------------------------------------------------------------------------- the network
class LocalizationNet(nn.Module):
    """A shared CNN with two heads.

    forward(images float[N, 3, S, S]) -> {"scores": float[N, num_classes] (logits; 0 = background),
    "boxes": float[N, 4] (x0, y0, x1, y1 as fractions of the window side)}. S = ``config.window``.
    """

    def __init__(self, config: LocalizationConfig):
        super().__init__()
        self.config = config
        net = patch_cnn(config.patch_config())                      # ... flatten, fc1, relu_fc, fc2
        layers = list(net.named_children())
        self.trunk = nn.Sequential(OrderedDict(layers[:-1]))        # (N, hidden)
        self.cls = nn.Linear(config.hidden, config.num_classes)     # class head
        self.box = nn.Linear(config.hidden, 4)                      # box-regression head

    def forward(self, x: torch.Tensor) -> dict:
        S = self.config.window
        if x.dim() != 4 or tuple(x.shape[-2:]) != (S, S):
            raise ValueError(f"LocalizationNet takes windows [N, 3, {S}, {S}], got {tuple(x.shape)}; for larger "
                             "images use lecturelib.overfeat (the same network made fully convolutional)")
        h = self.trunk(x)
        return {"scores": self.cls(h), "boxes": self.box(h)}

    def as_sequential(self) -> nn.Sequential:
        """The same network as one ``Sequential`` whose last Linear is both heads stacked
        (rows 0..C-1: class scores, rows C..C+3: box), the form :func:`lecturelib.fully_conv.to_fully_convolutional`
        converts. Weights are copies."""
        fused = nn.Linear(self.config.hidden, self.config.num_classes + 4).to(self.cls.weight)
        with torch.no_grad():
            fused.weight.copy_(torch.cat([self.cls.weight, self.box.weight]))
            fused.bias.copy_(torch.cat([self.cls.bias, self.box.bias]))
        seq = nn.Sequential(OrderedDict([*((n, m) for n, m in self.trunk.named_children()), ("heads", fused)]))
        seq = copy.deepcopy(seq)
        seq.train(self.training)
        return seq


def localizer(config: LocalizationConfig) -> LocalizationNet:
    """The lesson's localization network for ``config`` (the command line's ``localizer``)."""
    return LocalizationNet(config)


# ----------------------------------------------------------------------------- loss and metrics
def localization_loss(out: dict, labels: torch.Tensor, boxes: torch.Tensor, config: LocalizationConfig) -> tuple:
    """(total, class loss, box loss): CE over all windows + ``box_weight`` x box loss over windows with an item.

    boxes: float[N, 4] in pixels of the window (targets); the prediction is in window fractions.
    """
    cls_loss = F.cross_entropy(out["scores"].float(), labels)
    has = labels > 0
    if has.any():
        pred, target = out["boxes"][has].float(), boxes[has] / config.window
        if config.box_loss == "l2":
            box_loss = F.mse_loss(pred, target)
        else:
            box_loss = F.smooth_l1_loss(pred, target, beta=config.smooth_l1_beta)
    else:
        box_loss = out["boxes"].sum() * 0.0
    return cls_loss + config.box_weight * box_loss, cls_loss, box_loss


def paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of box a[i] with box b[i]: float[N] for a, b float[N, 4] (pixel-edge (x0, y0, x1, y1))."""
    if a.shape != b.shape or a.dim() != 2 or a.shape[-1] != 4:
        raise ValueError(f"need two [N, 4] box tensors, got {tuple(a.shape)} and {tuple(b.shape)}")
    if len(a) == 0:
        return torch.zeros(0)
    return box_iou(a.float(), b.float()).diagonal()


def localization_metrics(labels: torch.Tensor, boxes: torch.Tensor, pred_labels: torch.Tensor,
                         pred_boxes: torch.Tensor) -> dict:
    """Metrics of one-item windows (boxes in pixels).

    class_acc: share of all windows with the right class (background included). box_iou: mean IoU of the
    predicted box on windows with an item. loc_acc: share of windows with an item whose class is right AND
    whose box has IoU >= 0.5 (the ImageNet localization criterion).
    """
    has = labels > 0
    iou = paired_iou(pred_boxes[has], boxes[has])
    right = pred_labels[has] == labels[has]
    n = int(has.sum())
    return {"class_acc": float((pred_labels == labels).float().mean()) if len(labels) else float("nan"),
            "box_iou": float(iou.mean()) if n else float("nan"),
            "loc_acc": float((right & (iou >= 0.5)).float().mean()) if n else float("nan")}


@torch.no_grad()
def predict(model: LocalizationNet, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels int64[N], boxes float[N, 4] in window pixels, clipped to the window) of windows float[N, 3, S, S]."""
    out = model(images)
    S = model.config.window
    return out["scores"].argmax(1), (out["boxes"].float() * S).clamp(0, S)


def baseline_metrics(train: OneItemScenes, test: OneItemScenes) -> dict:
    """The trivial baseline: always the most frequent item class of the training set and its mean box
    (and never "background"), scored like the model by :func:`localization_metrics`."""
    has = train.labels > 0
    cls = int(torch.bincount(train.labels[has]).argmax())
    mean_box = train.boxes[has].mean(0)
    n = len(test)
    return localization_metrics(test.labels, test.boxes, torch.full((n,), cls), mean_box.expand(n, 4))


# ----------------------------------------------------------------------------- the task (the one training loop)
class LocalizationTask:
    """Lesson 07: one-item windows -> class + box; loss :func:`localization_loss`; metrics
    :func:`localization_metrics` (key: ``loc_acc``). train / test: :class:`OneItemScenes` (or None)."""

    key_metric = "loc_acc"

    def __init__(self, recipe: LocalizationConfig, train, test=None):
        for name, data in (("train", train), ("test", test)):
            if data is not None and not isinstance(data, OneItemScenes):
                raise ValueError(f"LocalizationTask: {name} must be OneItemScenes (or None), got {type(data).__name__}")
        self.recipe, self.train_set, self.test_set = recipe, train, test

    def loss(self, model, batch, device, channels_last=False):
        images, labels, boxes = batch
        out = model(to_device(images, device, channels_last))
        total, cls_loss, box_loss = localization_loss(out, labels.to(device), boxes.to(device), self.recipe)
        return total, images.shape[0], {"class_loss": cls_loss.detach(), "box_loss": box_loss.detach()}

    @torch.no_grad()
    def evaluate(self, model, test_set, info, batch_size, autocast) -> dict:
        parts = []
        for images, labels, boxes in DataLoader(D.shard(test_set, info), batch_size=batch_size):
            with autocast():
                pl, pb = predict(model, images.to(info.device))
            parts.append((labels, boxes, pl.cpu(), pb.cpu().float()))
        records = [tuple(torch.cat(p) for p in zip(*parts))] if parts else []
        everything = [r for part in D.gather_objects(records, info) for r in part]
        if not everything:
            return {"class_acc": float("nan"), "box_iou": float("nan"), "loc_acc": float("nan")}
        return localization_metrics(*(torch.cat(t) for t in zip(*everything)))
