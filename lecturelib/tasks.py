"""Tasks: what a model trains on, its loss and its evaluation. Training itself is :func:`lecturelib.training.fit`.

Every task is made from a lesson's recipe and its data, ``Task(recipe, train, test=None)``, and offers:

- ``train_set`` / ``test_set``: datasets (``test_set`` may be None: then nothing is evaluated);
- ``loss(model, batch, device, channels_last) -> (loss, items, parts)``: the scalar loss of one batch,
  how many items it held and a dict of named loss terms to log (may be empty);
- ``evaluate(model, test_set, info, batch_size, autocast) -> dict``: metrics over the test set, each
  process scoring its share under ``torchrun`` and the sums reduced (``info``: a
  :class:`lecturelib.distributed.DistInfo`);
- ``key_metric``: the metric the command line prints;
- optional: ``collate`` (the DataLoader's collate function), ``persistent_workers``,
  ``find_unused_parameters`` (for DDP), ``set_epoch(epoch)`` (redraw per-epoch data),
  ``trainable(model)`` (the module whose ``forward`` the loss calls) and ``prepare(model)``
  (set data-derived buffers before training, e.g. SDS's mean image).

Tasks are small independent classes: what they share is composed from the functions below
(:func:`pixel_metrics`), never inherited. Images are float[N, 3, H, W] in [0, 1]; label maps
int64[N, H, W] with ``IGNORE_INDEX`` (255) for unlabelled pixels.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from . import distributed as D
from .box_ap import BoxAP
from .fully_conv import dense_labels_fully_convolutional
from .mask_ap import MaskAP
from .metrics import IGNORE_INDEX, BoundaryAccuracy, ConfusionMatrix, labels_from_scores, psnr_from_mse
from .multiscale import class_weights
from .patch import extract_patches, pad_for_patches, sample_centres
from .recurrent import unrolled_loss
from .scenes import collate_instances
from .training import to_device


def logits_of(output) -> torch.Tensor:
    """The logits of a segmentation model's output: every one returns ``{"out": logits, ...}`` (torchvision's
    contract). Raises ValueError, naming the fix, for anything else."""
    if not isinstance(output, dict) or "out" not in output:
        got = f"a dict with keys {sorted(output)}" if isinstance(output, dict) else type(output).__name__
        raise ValueError(f"a segmentation model must return {{'out': logits}} (like torchvision's), got {got}; "
                         "wrap it or return that dict from forward")
    return output["out"]


def _pairs(data, name: str) -> Dataset | None:
    """(images, masks) tensors or a Dataset -> a Dataset (None stays None)."""
    if data is None or isinstance(data, Dataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        images, masks = data
        if len(images) != len(masks):
            raise ValueError(f"{name}: {len(images)} images but {len(masks)} masks")
        return TensorDataset(images, masks)
    raise ValueError(f"{name} must be a pair (images float[N, 3, H, W], masks int64[N, H, W]) or a Dataset, "
                     f"got {type(data).__name__}")


CLASS_WEIGHT_SCENES = 2048   # class frequencies are counted on (at most) the first 2048 training scenes


def _masks_of(data, n: int) -> torch.Tensor:
    if isinstance(data, TensorDataset):
        return data.tensors[1][:n]
    return torch.stack([data[i][1] for i in range(min(n, len(data)))])


def _class_weight(recipe, train_set) -> torch.Tensor | None:
    """Class-balancing weights of the loss when the recipe asks (``class_balance`` = the power, 0: none),
    from the class frequencies of the first :data:`CLASS_WEIGHT_SCENES` training scenes."""
    power = getattr(recipe, "class_balance", 0.0)
    if not power or train_set is None:
        return None
    return class_weights(_masks_of(train_set, CLASS_WEIGHT_SCENES), recipe.num_classes, power=power)


@torch.no_grad()
def pixel_metrics(predict: Callable[[torch.Tensor], torch.Tensor], test_set, info: D.DistInfo, num_classes: int,
                  batch_size: int) -> dict:
    """miou, pixel_acc, boundary_acc, iou of label maps ``predict(images) -> int64[B, H, W]`` over ``test_set``.

    One accumulated confusion matrix (rows = truth), summed over processes; boundary accuracy within
    2 pixels of object edges.
    """
    cm, ba = ConfusionMatrix(num_classes), BoundaryAccuracy(2)
    for images, masks in DataLoader(D.shard(test_set, info), batch_size=batch_size):
        pred = predict(images.to(info.device)).cpu()
        if pred.shape[-2:] != masks.shape[-2:]:
            raise ValueError(f"the prediction {tuple(pred.shape[-2:])} differs from the target size "
                             f"{tuple(masks.shape[-2:])}; upsample the logits to the input size")
        cm.update(pred, masks)
        ba.update(pred, masks)
    D.reduce_confusion(cm, info)
    sums = D.reduce_sums({"correct": ba.correct, "total": ba.total}, info)
    out = cm.compute()
    out["boundary_acc"] = sums["correct"] / sums["total"] if sums["total"] else float("nan")
    return {k: out[k] for k in ("miou", "pixel_acc", "boundary_acc", "iou")}


def mask_ap_metrics(pairs, info: D.DistInfo, num_classes: int) -> dict:
    """ap50, ap70, ap (mask AP, :class:`lecturelib.mask_ap.MaskAP`) of (prediction, target) pairs.

    Predictions hold ``masks`` (probabilities or bool), ``labels``, ``scores``; targets ``masks`` and
    ``labels``. Every process's pairs are gathered so each scores every image: the exact global AP.
    """
    records = [({"masks": (p["masks"].float() > 0.5).cpu(), "labels": p["labels"].cpu(),
                 "scores": p["scores"].float().cpu()}, {"masks": t["masks"], "labels": t["labels"]})
               for p, t in pairs]
    ap = MaskAP(num_classes, thresholds=(0.5, 0.7))
    for part in D.gather_objects(records, info):
        ap.update([p for p, _ in part], [t for _, t in part])
    out = ap.compute()
    return {"ap50": out["ap50"], "ap70": out["ap70"], "ap": out["ap"]}


class SemanticTask:
    """Scenes -> per-pixel class scores; (class-weighted) cross-entropy ignoring 255; mIoU.

    recipe: needs ``num_classes``; ``class_balance`` (power of the inverse-frequency weights, 0 or
    absent: unweighted). train / test: (images, masks) tensors, a Dataset of such pairs, or None.
    """

    key_metric = "miou"

    def __init__(self, recipe, train, test=None):
        self.num_classes = recipe.num_classes
        self.train_set, self.test_set = _pairs(train, "train"), _pairs(test, "test")
        self.class_weight = _class_weight(recipe, self.train_set)

    def loss(self, model, batch, device, channels_last=False):
        images, masks = batch
        logits = logits_of(model(to_device(images, device, channels_last)))      # (B, C, H, W)
        weight = None if self.class_weight is None else self.class_weight.to(device)
        loss = F.cross_entropy(logits.float(), masks.to(device, non_blocking=True), weight=weight,
                               ignore_index=IGNORE_INDEX)
        return loss, images.shape[0], {}

    def evaluate(self, model, test_set, info, batch_size, autocast) -> dict:
        def predict(images):
            with autocast():
                return labels_from_scores(logits_of(model(images)))
        return pixel_metrics(predict, test_set, info, self.num_classes, batch_size)


class _Unrolled(nn.Module):
    """forward(x) -> the logits of every iteration of a recurrent refiner (DDP syncs gradients only through
    ``forward``, so the whole unrolled pass must be one call)."""

    def __init__(self, refiner: nn.Module, iterations: int):
        super().__init__()
        self.refiner, self.iterations = refiner, iterations

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.refiner.forward_all(x, self.iterations)


class RecurrentTask:
    """Lesson 04: the same CNN refines its own labels; loss averaged over ``recipe.train_iterations`` unrolled
    iterations (class-weighted when ``recipe.class_balance``); mIoU after every iteration."""

    key_metric = "miou"

    def __init__(self, recipe, train, test=None):
        self.num_classes, self.iterations = recipe.num_classes, recipe.train_iterations
        self.train_set, self.test_set = _pairs(train, "train"), _pairs(test, "test")
        self.class_weight = _class_weight(recipe, self.train_set)

    def trainable(self, model):
        return _Unrolled(model, self.iterations)

    def loss(self, model, batch, device, channels_last=False):
        images, masks = batch
        per_iteration = model(to_device(images, device, channels_last))         # [(B, C, H, W)] * iterations
        weight = None if self.class_weight is None else self.class_weight.to(device)
        loss = unrolled_loss([lg.float() for lg in per_iteration], masks.to(device, non_blocking=True), weight=weight)
        return loss, images.shape[0], {}

    @torch.no_grad()
    def evaluate(self, model, test_set, info, batch_size, autocast) -> dict:
        by_iteration = []
        for t in range(self.iterations):
            def predict(images, t=t):
                with autocast():
                    return labels_from_scores(model.forward_all(images, t + 1)[-1])
            by_iteration.append(pixel_metrics(predict, test_set, info, self.num_classes, batch_size))
        out = dict(by_iteration[-1])
        out["miou_by_iteration"] = [m["miou"] for m in by_iteration]
        return out


class PatchSet(Dataset):
    """``n`` patches (float[3, P, P], centre label) drawn class-balanced from scenes; redrawn each epoch.

    The centres of epoch e depend only on (seed, e), so every process holds the same list and the
    sampler splits it.
    """

    def __init__(self, images, masks, patch_size: int, n: int, num_classes: int, seed: int = 0):
        self.padded = pad_for_patches(images, patch_size)                       # (N, 3, H+P-1, W+P-1)
        self.masks, self.patch_size, self.n, self.num_classes, self.seed = masks, patch_size, n, num_classes, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        self.centres = sample_centres(self.masks, self.n, gen, balanced=True, num_classes=self.num_classes)

    def __len__(self) -> int:
        return self.n

    def __getitems__(self, indices):
        idx = torch.as_tensor(indices)
        index, ys, xs, labels = (c[idx] for c in self.centres)
        patches = extract_patches(self.padded, index, ys, xs, self.patch_size)  # (B, 3, P, P)
        return list(zip(patches, labels))

    def __getitem__(self, i):
        return self.__getitems__([i])[0]


class PatchTask:
    """Lesson 01: patches -> centre-pixel class (cross-entropy); evaluated by dense labelling of test scenes.

    recipe: ``num_classes``, ``n_patches`` (fresh class-balanced patches per epoch). ``patch_size``: P.
    train / test: (images, masks) tensors of whole scenes.
    """

    key_metric = "miou"
    persistent_workers = False          # workers must see the centres redrawn for each epoch

    def __init__(self, recipe, train, test=None, *, patch_size: int, seed: int = 0):
        self.num_classes, self.patch_size = recipe.num_classes, patch_size
        self.train_set = None if train is None else PatchSet(*train, patch_size, recipe.n_patches, recipe.num_classes,
                                                             seed)
        self.test_set = _pairs(test, "test")

    def set_epoch(self, epoch: int) -> None:
        if self.train_set is not None:
            self.train_set.set_epoch(epoch)

    def loss(self, model, batch, device, channels_last=False):
        patches, labels = batch
        logits = model(to_device(patches, device, channels_last))                # (B, C)
        return F.cross_entropy(logits.float(), labels.to(device, non_blocking=True)), patches.shape[0], {}

    def evaluate(self, model, test_set, info, batch_size, autocast) -> dict:
        """Dense labelling of the test scenes by the exact fully convolutional twin of the classifier."""
        def predict(images):
            with autocast():
                return dense_labels_fully_convolutional(model, images, self.patch_size, info.device)
        return pixel_metrics(predict, test_set, info, self.num_classes, 16)


class _LowHigh(Dataset):
    """(image average-pooled by 2, image) pairs made item by item from a dataset of (image, mask) pairs."""

    def __init__(self, scenes: Dataset, crop: int | None):
        self.scenes, self.crop = scenes, crop

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i):
        image = self.scenes[i][0]
        if self.crop:
            image = image[..., :self.crop, :self.crop]
        return F.avg_pool2d(image[None], 2)[0], image


class UpsamplingTask:
    """Lesson 05: x2 super-resolution. Input: the image average-pooled by 2; target: the image; MSE; PSNR.

    recipe: ``crop`` (train on the top-left crop x crop of each image, None: whole images).
    train / test: images float[N, 3, H, W] in [0, 1], (images, masks) pairs (the masks are unused) or a
    Dataset of (image, mask) pairs (read item by item).
    """

    key_metric = "psnr"

    def __init__(self, recipe, train, test=None):
        def pairs(images, crop):
            if images is None:
                return None
            if isinstance(images, Dataset):
                return _LowHigh(images, crop)
            images = images[0] if isinstance(images, (tuple, list)) else images
            if crop:
                images = images[..., :crop, :crop]
            if images.shape[-1] % 2 or images.shape[-2] % 2:
                raise ValueError(f"UpsamplingTask: image size {tuple(images.shape[-2:])} must be even")
            return TensorDataset(F.avg_pool2d(images, 2), images)
        self.train_set = pairs(train, getattr(recipe, "crop", None))
        self.test_set = pairs(test, None)

    def loss(self, model, batch, device, channels_last=False):
        low, high = batch
        pred = model(to_device(low, device, channels_last))
        return F.mse_loss(pred.float(), high.to(device, non_blocking=True)), low.shape[0], {}

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
        return {"psnr": psnr_from_mse(mse), "mse": mse}


def summed_losses(model, batch, device) -> tuple[torch.Tensor, int, dict]:
    """The loss of a detection-style batch (list of images, list of target dicts): ``model(images, targets)``
    returns a dict of named losses; their sum, the number of images and the detached terms to log."""
    images, targets = batch
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
    losses = model(images, targets)
    return sum(v.float() for v in losses.values()), len(images), {k: v.detach() for k, v in losses.items()}


def box_ap_metrics(pairs, info: D.DistInfo, num_classes: int) -> dict:
    """ap50, ap75, ap (box AP, :class:`lecturelib.box_ap.BoxAP`) of (prediction, target) pairs, every process's
    pairs gathered so that each scores every image (the exact global AP)."""
    records = [({k: p[k].cpu() for k in ("boxes", "labels", "scores")}, {k: t[k] for k in ("boxes", "labels")})
               for p, t in pairs]
    ap = BoxAP(num_classes)
    for part in D.gather_objects(records, info):
        ap.update([p for p, _ in part], [t for _, t in part])
    out = ap.compute()
    return {"ap50": out["ap50"], "ap75": out["ap75"], "ap": out["ap"]}


class _WithProposals(Dataset):
    """(image, target) pairs whose targets also hold ``proposals`` float32[P, 4]: selective search runs the first
    time a scene is read and its boxes are kept (they are deterministic), so every later epoch reuses them.
    ``seconds``: the time spent in selective search so far."""

    def __init__(self, scenes, config):
        self.scenes, self.config = scenes, config
        self.boxes: dict[int, torch.Tensor] = {}
        self.seconds = 0.0

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i):
        from time import perf_counter

        from .detection import proposal_boxes

        image, target = self.scenes[i]
        if i not in self.boxes:
            start = perf_counter()
            self.boxes[i] = proposal_boxes(image, self.config)
            self.seconds += perf_counter() - start
        return image, {**target, "proposals": self.boxes[i]}


class DetectionTask:
    """Lesson 07: object detectors. ``model(images, targets)`` returns a dict of named losses in training mode (each
    logged); in eval mode ``model(images)`` (or ``model(images, proposals=...)``) returns per-image ``boxes``,
    ``labels``, ``scores``; scored by box AP (``ap50``: IoU 0.5, ``ap``: COCO's AP@[.5:.95]).

    recipe: ``num_classes`` and ``proposals`` (a :class:`lecturelib.proposals.ProposalConfig`). train / test:
    datasets of (image, target) pairs in the detection format (``CourseScenes(..., mode="instance")``), or None.
    proposals: the model takes selective-search proposals (R-CNN, Fast R-CNN): each scene's are computed the first
    time it is read, kept (they are deterministic) and passed with every batch.
    """

    key_metric = "ap50"
    find_unused_parameters = True       # the box branch gets no gradient in a step without positive RoIs
    collate = staticmethod(collate_instances)

    def __init__(self, recipe, train, test=None, *, proposals: bool = False):
        self.num_classes, self.proposals = recipe.num_classes, proposals

        def with_proposals(scenes):
            return scenes if scenes is None or not proposals else _WithProposals(scenes, recipe.proposals)

        self.train_set, self.test_set = with_proposals(train), with_proposals(test)

    def loss(self, model, batch, device, channels_last=False):
        return summed_losses(model, batch, device)

    def evaluate(self, model, test_set, info, batch_size, autocast) -> dict:
        pairs = prediction_pairs(model, test_set, info, batch_size, autocast, self.proposals)
        return box_ap_metrics(pairs, info, self.num_classes)


@torch.no_grad()
def prediction_pairs(model, test_set, info, batch_size: int, autocast, proposals: bool = False) -> list[tuple]:
    """(prediction, target) for every image of this process's shard of ``test_set``: the model in eval mode on
    lists of images (torchvision's detection format), given each target's ``"proposals"`` when ``proposals``."""
    loader = DataLoader(D.shard(test_set, info), batch_size=batch_size, collate_fn=collate_instances)
    pairs = []
    for images, targets in loader:
        images = [im.to(info.device) for im in images]
        with autocast():
            preds = model(images, proposals=[t["proposals"] for t in targets]) if proposals else model(images)
        pairs += zip(preds, targets)
    return pairs


class InstanceTask:
    """Lesson 08: instance-segmentation models. ``model(images, targets)`` returns a dict of losses in training
    mode and per-image predictions (``masks``, ``labels``, ``scores``) in eval mode; scored by mask AP.

    recipe: ``num_classes``. train / test: datasets of (image, target) pairs in torchvision's detection
    format (``CourseScenes(..., mode="instance")``).
    """

    key_metric = "ap50"
    find_unused_parameters = True       # some heads get no gradient in a step without positive RoIs
    collate = staticmethod(collate_instances)

    def __init__(self, recipe, train, test=None):
        self.num_classes = recipe.num_classes
        self.train_set, self.test_set = train, test

    def loss(self, model, batch, device, channels_last=False):
        return summed_losses(model, batch, device)

    def evaluate(self, model, test_set, info, batch_size, autocast) -> dict:
        return mask_ap_metrics(prediction_pairs(model, test_set, info, batch_size, autocast), info, self.num_classes)


class _RegionScorer(nn.Module):
    """forward(box crops, mask crops) -> class logits of an SDS model's two-pathway network."""

    def __init__(self, sds: nn.Module):
        super().__init__()
        self.sds = sds

    def forward(self, box: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.sds.net(*self.sds.inputs(box, mask))


class RegionTask:
    """Lesson 08's SDS: warped proposal crops (box crop, mask crop, label) -> class, cross-entropy.

    recipe: ``num_classes``. train: a TensorDataset of (box crops float[M, 3, s, s], mask crops
    float[M, 1, s, s], labels int64[M]) from :func:`lecturelib.sds.build_training_crops`, or None to only
    evaluate; ``mean`` (float[3], or None to keep the model's) is written into the model's mean-image buffer
    by :meth:`prepare`. test: scenes in the detection format (scored by mask AP like :class:`InstanceTask`),
    or None.
    """

    key_metric = "ap50"

    def __init__(self, recipe, train: TensorDataset | None, test=None, *, mean: torch.Tensor | None):
        self.num_classes = recipe.num_classes
        self.mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        self.train_set, self.test_set = train, test

    def prepare(self, model) -> None:
        if self.mean is not None:
            model.mean.copy_(self.mean)

    def trainable(self, model):
        return _RegionScorer(model)

    def loss(self, model, batch, device, channels_last=False):
        box, mask, label = (t.to(device, non_blocking=True) for t in batch)
        return F.cross_entropy(model(box, mask).float(), label), label.shape[0], {}

    @torch.no_grad()
    def evaluate(self, model, test_set, info, batch_size, autocast) -> dict:
        pairs = []
        for i in range(info.rank, len(test_set), info.world_size):
            image, target = test_set[i]
            pairs.append((model(image.to(info.device)), target))
        return mask_ap_metrics(pairs, info, self.num_classes)


class CaptionTask:
    """Lesson 09: scenes -> captions (the items read left to right), teacher forcing, cross-entropy without the
    padding; evaluated by greedy decoding.

    recipe: ``max_len``. train / test: scenes in the detection format (``CourseScenes(..., mode="instance")``), a
    :class:`lecturelib.captioning.CaptionData`, or None. Metrics: ``exact_match`` (the whole caption right),
    ``item_acc`` (items named right at their position), both also on scenes of >= 3 items (``*_3plus``); for an
    attention model, ``attention_hit``: the share of items named right whose attention peak lies on the item's
    mask, and ``attention_chance``: the same share for a peak drawn at random (:func:`captioning.attention_hits`).
    """

    key_metric = "exact_match"

    def __init__(self, recipe, train, test=None):
        from .captioning import CaptionData, caption_data

        def data(pairs, keep_masks):
            if pairs is None or isinstance(pairs, CaptionData):
                return pairs
            return caption_data(pairs, recipe.max_len, keep_masks=keep_masks)

        self.max_len = recipe.max_len
        self.train_set, self.test_set = data(train, False), data(test, True)

    def loss(self, model, batch, device, channels_last=False):
        from .captioning import caption_loss

        images, tokens = batch
        tokens = tokens.to(device, non_blocking=True)
        out = model(to_device(images, device, channels_last), tokens)
        return caption_loss(out["out"], tokens), images.shape[0], {}

    @torch.no_grad()
    def evaluate(self, model, test_set, info, batch_size, autocast) -> dict:
        from .captioning import attention_hits, caption_scores

        sums = {k: 0.0 for k in ("scenes", "exact", "right", "items", "scenes3", "exact3", "right3", "items3",
                                 "words", "hits", "chance")}
        mine = list(range(info.rank, len(test_set), info.world_size))
        side = test_set.images.shape[-1] // 8
        for start in range(0, len(mine), batch_size):
            idx = mine[start:start + batch_size]
            images, truth = test_set.images[idx], test_set.tokens[idx]
            with autocast():
                tokens, alphas = model.greedy(images.to(info.device), self.max_len)
            tokens, alphas = tokens.cpu(), alphas.float().cpu()
            s = caption_scores(tokens, truth)
            many = s["count"] >= 3
            sums["scenes"] += len(idx)
            sums["exact"] += float(s["exact"].sum())
            sums["right"] += float(s["right"].sum())
            sums["items"] += float(s["count"].sum())
            sums["scenes3"] += float(many.sum())
            sums["exact3"] += float(s["exact"][many].sum())
            sums["right3"] += float(s["right"][many].sum())
            sums["items3"] += float(s["count"][many].sum())
            if getattr(model, "attention", None) is not None and test_set.masks is not None:
                hits = attention_hits(tokens, truth, alphas, [test_set.masks[i] for i in idx], side)
                for k in ("words", "hits", "chance"):
                    sums[k] += hits[k]
        sums = D.reduce_sums(sums, info)
        ratio = lambda a, b: sums[a] / sums[b] if sums[b] else float("nan")   # noqa: E731
        out = {"exact_match": ratio("exact", "scenes"), "item_acc": ratio("right", "items"),
               "exact_match_3plus": ratio("exact3", "scenes3"), "item_acc_3plus": ratio("right3", "items3"),
               "scenes_3plus": int(sums["scenes3"])}
        if sums["words"]:
            out.update(attention_hit=ratio("hits", "words"), attention_chance=ratio("chance", "words"),
                       attended_words=int(sums["words"]))
        return out


def _item_triples(data, name: str) -> Dataset | None:
    """(images float[N, 3, S, S], labels int64[N], boxes float[N, 4]) -> a TensorDataset (None stays None)."""
    if data is None or isinstance(data, Dataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 3 and all(isinstance(t, torch.Tensor) for t in data):
        if not len(data[0]) == len(data[1]) == len(data[2]):
            raise ValueError(f"{name}: {len(data[0])} images, {len(data[1])} labels and {len(data[2])} boxes")
        return TensorDataset(*data)
    raise ValueError(f"{name} must be (images float[N, 3, S, S], labels int64[N], boxes float[N, 4]), "
                     f"got {type(data).__name__}")


class ClutterTask:
    """Lesson 09: one small item in clutter -> its class (cross-entropy), for the spatial-transformer classifiers.

    train / test: (images, labels, boxes) tensors (:func:`lecturelib.clutter.cluttered_set`) or a Dataset of such
    triples. The model returns ``{"out": logits, "theta": float[N, 2, 3]}``. Metrics: ``accuracy``,
    ``window_iou`` (mean IoU of the box around the window θ shows, :func:`spatial_transformer.window_box`, with the
    item's box) and ``centre_inside`` (share of windows whose centre lies in the item's box).
    """

    key_metric = "accuracy"

    def __init__(self, recipe, train, test=None):
        self.train_set, self.test_set = _item_triples(train, "train"), _item_triples(test, "test")

    def loss(self, model, batch, device, channels_last=False):
        images, labels, _ = batch
        logits = model(to_device(images, device, channels_last))["out"]
        return F.cross_entropy(logits.float(), labels.to(device, non_blocking=True)), images.shape[0], {}

    @torch.no_grad()
    def evaluate(self, model, test_set, info, batch_size, autocast) -> dict:
        from torchvision.ops import box_iou

        from .spatial_transformer import window_box

        sums = {"n": 0.0, "correct": 0.0, "iou": 0.0, "inside": 0.0}
        for images, labels, boxes in DataLoader(D.shard(test_set, info), batch_size=batch_size):
            with autocast():
                out = model(images.to(info.device))
            theta = out["theta"].float().cpu()
            window = window_box(theta, images.shape[-2], images.shape[-1])
            centre = (window[:, :2] + window[:, 2:]) / 2
            sums["n"] += len(labels)
            sums["correct"] += float((out["out"].argmax(dim=1).cpu() == labels).sum())
            sums["iou"] += float(box_iou(window, boxes).diagonal().sum())
            sums["inside"] += float(((centre >= boxes[:, :2]) & (centre <= boxes[:, 2:])).all(dim=1).sum())
        sums = D.reduce_sums(sums, info)
        n = max(sums["n"], 1)
        return {"accuracy": sums["correct"] / n, "window_iou": sums["iou"] / n, "centre_inside": sums["inside"] / n}
