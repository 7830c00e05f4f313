"""Mask average precision (AP^r): detection AP where a hit is judged by mask IoU, not box IoU.

SDS (Hariharan et al., ECCV 2014) introduced AP^r: a predicted instance (mask, class, score)
is a true positive when its mask overlaps a not-yet-matched ground-truth mask of the same
class with IoU >= t. We follow the COCO protocol so the numbers agree with pycocotools:

- per image and class, detections sorted by score (at most ``max_dets`` per image) are matched
  greedily, each to the unmatched ground truth with the highest IoU >= t;
- per class, all detections of all images are sorted by score; precision is made monotone and
  read at 101 recall points 0, 0.01, ..., 1 (101-point interpolated AP);
- classes without ground truth are NaN and left out of the mean.

``AP^r@0.5`` is the threshold of the SDS paper's AP^r tables (beside AP^r_vol, AP^r averaged over
thresholds); ``AP^r@0.7`` is the second column of later tables such as the MNC paper's. ``ap`` is
the COCO average over t = 0.50, 0.55, ..., 0.95.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .caps import dropped_confident, warn_cap

COCO_THRESHOLDS = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def _as_bool_masks(masks, what: str) -> torch.Tensor:
    m = torch.as_tensor(masks.detach().cpu() if isinstance(masks, torch.Tensor) else np.asarray(masks))
    if m.dim() != 3:
        raise ValueError(f"{what} must be a stack of masks [N, H, W], got shape {tuple(m.shape)}; "
                         "use masks[None] for a single mask")
    if m.is_floating_point():
        m = m > 0.5
    return m.bool()


def mask_iou(a, b) -> torch.Tensor:
    """Pairwise mask IoU.

    Args:
        a (bool[N, H, W]), b (bool[M, H, W]): binary masks (float masks are thresholded at 0.5).
    Returns:
        float64[N, M]: |a_i ∩ b_j| / |a_i ∪ b_j| (0 where both masks are empty).
    """
    a, b = _as_bool_masks(a, "a"), _as_bool_masks(b, "b")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"mask sizes differ: a is {tuple(a.shape[1:])}, b is {tuple(b.shape[1:])}; "
                         "paste predicted masks into the full image first")
    # counts are exact in float32 up to 2**24 pixels; the division is done in float64
    fa = a.reshape(a.shape[0], -1).float()                # (N, HW)
    fb = b.reshape(b.shape[0], -1).float()                # (M, HW)
    inter = (fa @ fb.T).double()                           # (N, M)
    union = fa.sum(1).double()[:, None] + fb.sum(1).double()[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


def match_image(iou: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy COCO matching in one image for one class.

    Args:
        iou (float[D, G]): IoU of detections (sorted by descending score) with ground truths.
        threshold: the IoU a hit needs.
    Returns:
        bool[D]: which detections are true positives.
    """
    D, G = iou.shape
    tp = np.zeros(D, bool)
    taken = np.zeros(G, bool)
    thr = min(threshold, 1 - 1e-10)
    for d in range(D):
        best, best_g = thr, -1
        for g in range(G):
            if taken[g] or iou[d, g] < best:
                continue
            best, best_g = iou[d, g], g
        if best_g >= 0:
            taken[best_g] = True
            tp[d] = True
    return tp


def average_precision(scores: np.ndarray, tp: np.ndarray, n_gt: int) -> float:
    """101-point interpolated AP (COCO) of detections with ``scores`` and hit flags ``tp``; NaN if ``n_gt == 0``."""
    if n_gt == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, np.float64), kind="mergesort")
    hits = np.asarray(tp, bool)[order]
    if len(hits) == 0:
        return 0.0
    ctp = np.cumsum(hits).astype(np.float64)
    cfp = np.cumsum(~hits).astype(np.float64)
    recall = ctp / n_gt
    precision = ctp / np.maximum(ctp + cfp, np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]   # monotone: best precision at any higher recall
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    sampled = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
    return float(sampled.mean())


@dataclass
class MaskAP:
    """Accumulates predictions and ground truth image by image, then computes AP^r.

    >>> ap = MaskAP(num_classes=11)
    >>> ap.update(preds, targets)      # lists of dicts, torchvision detection format
    >>> ap.compute()["ap50"]

    ``preds[i]``: ``masks`` (bool or float[D, H, W], or float[D, 1, H, W] as torchvision returns),
    ``scores`` float[D], ``labels`` int[D]. ``targets[i]``: ``masks`` [G, H, W], ``labels`` int[G].
    Label 0 (background) is never scored. At most ``max_dets`` detections per image and class are scored,
    the best first (a :class:`lecturelib.caps.CapWarning` says when one scored >= 0.5 is left out).
    """

    num_classes: int
    thresholds: tuple = COCO_THRESHOLDS
    max_dets: int = 100
    _records: dict = field(default_factory=dict, repr=False)   # class -> list of (scores, tp[T, D])
    _n_gt: np.ndarray = field(default=None, repr=False)
    n_images: int = 0

    def __post_init__(self):
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2 (background counts), got {self.num_classes!r}")
        if self.max_dets < 1:
            raise ValueError(f"max_dets must be >= 1, got {self.max_dets}")
        self.thresholds = tuple(float(t) for t in self.thresholds)
        self.reset()

    def reset(self) -> None:
        self._records = {c: [] for c in range(1, self.num_classes)}
        self._n_gt = np.zeros(self.num_classes, np.int64)
        self.n_images = 0

    @staticmethod
    def _masks_of(d: dict, what: str) -> torch.Tensor:
        if "masks" not in d:
            raise KeyError(f"{what} has no 'masks' (keys: {sorted(d)}); pass torchvision-style dicts")
        m = d["masks"]
        if isinstance(m, torch.Tensor) and m.dim() == 4 and m.shape[1] == 1:
            m = m[:, 0]                                    # torchvision's [D, 1, H, W]
        return _as_bool_masks(m, f"{what}['masks']")

    def update(self, preds: list[dict], targets: list[dict]) -> None:
        if len(preds) != len(targets):
            raise ValueError(f"got {len(preds)} predictions for {len(targets)} targets; pass one dict per image")
        for i, (p, t) in enumerate(zip(preds, targets)):
            pm, gm = self._masks_of(p, f"preds[{i}]"), self._masks_of(t, f"targets[{i}]")
            ps = torch.as_tensor(p["scores"]).detach().cpu().double().reshape(-1).numpy()
            pl = torch.as_tensor(p["labels"]).detach().cpu().long().reshape(-1).numpy()
            gl = torch.as_tensor(t["labels"]).detach().cpu().long().reshape(-1).numpy()
            if not (len(pm) == len(ps) == len(pl)):
                raise ValueError(f"preds[{i}]: {len(pm)} masks, {len(ps)} scores, {len(pl)} labels; they must agree")
            if len(gm) != len(gl):
                raise ValueError(f"targets[{i}]: {len(gm)} masks but {len(gl)} labels")
            if len(pm) and len(gm) and pm.shape[1:] != gm.shape[1:]:
                raise ValueError(f"image {i}: predicted masks are {tuple(pm.shape[1:])}, ground truth "
                                 f"{tuple(gm.shape[1:])}; paste predictions into the full image")
            self._add_image(i, mask_iou(pm, gm).numpy() if len(pm) and len(gm) else np.zeros((len(pm), len(gm))),
                            ps, pl, gl)

    def _add_image(self, i: int, iou: np.ndarray, ps: np.ndarray, pl: np.ndarray, gl: np.ndarray) -> None:
        """Record image ``i``: ``iou`` float[D, G] between its detections (scores ``ps``, labels ``pl``) and its
        ground truth (labels ``gl``); detections are matched per class at every threshold."""
        for labels, what in ((pl, "preds"), (gl, "targets")):
            if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(f"{what}[{i}]['labels'] outside 0..{self.num_classes - 1}; check num_classes")
        for c in range(1, self.num_classes):
            g = np.flatnonzero(gl == c)
            self._n_gt[c] += len(g)
            d = np.flatnonzero(pl == c)
            if len(d) == 0:
                continue
            d = d[np.argsort(-ps[d], kind="mergesort")]
            if dropped_confident(ps[d], self.max_dets):
                warn_cap(f"{type(self).__name__}: max_dets={self.max_dets} detections per image and class are "
                         "scored; an image had more, including one scored >= 0.5; raise max_dets")
            d = d[: self.max_dets]
            sub = iou[np.ix_(d, g)]
            tp = np.stack([match_image(sub, t) for t in self.thresholds])   # (T, D)
            self._records[c].append((ps[d], tp))
        self.n_images += 1

    def compute(self) -> dict:
        """``ap50``, ``ap70`` (if 0.5/0.7 are thresholds), ``ap`` (mean over thresholds), each a mean over
        classes with ground truth, and ``per_class`` {threshold: float[num_classes]} (NaN: no ground truth)."""
        T = len(self.thresholds)
        table = np.full((T, self.num_classes), np.nan)
        for c in range(1, self.num_classes):
            recs = self._records[c]
            scores = np.concatenate([r[0] for r in recs]) if recs else np.zeros(0)
            tp = np.concatenate([r[1] for r in recs], axis=1) if recs else np.zeros((T, 0), bool)
            for k in range(T):
                table[k, c] = average_precision(scores, tp[k], int(self._n_gt[c]))
        valid = ~np.isnan(table[0])
        mean = table[:, valid].mean(1) if valid.any() else np.full(T, np.nan)
        out = {"ap": float(mean.mean()), "per_class": {t: table[k] for k, t in enumerate(self.thresholds)},
               "n_gt": self._n_gt.copy(), "n_images": self.n_images}
        for name, t in (("ap50", 0.5), ("ap70", 0.7), ("ap75", 0.75)):
            k = self._index_of(t)
            if k is not None:
                out[name] = float(mean[k])
        return out

    def _index_of(self, t: float):
        for k, th in enumerate(self.thresholds):
            if abs(th - t) < 1e-9:
                return k
        return None


def mask_ap(preds: list[dict], targets: list[dict], num_classes: int, **kwargs) -> dict:
    """One-shot :class:`MaskAP` over lists of per-image predictions and targets."""
    m = MaskAP(num_classes, **kwargs)
    m.update(preds, targets)
    return m.compute()


def semantic_to_instances(semantic, num_classes: int) -> dict:
    """Instances read off a semantic label map as connected components of each class.

    This is what a semantic segmenter can offer as "instances": touching items of the same
    class come out as one component. Returns a prediction dict (``masks`` bool[K, H, W],
    ``labels`` int64[K], ``scores`` float[K] = 1).
    """
    from scipy import ndimage

    sem = np.asarray(semantic.cpu() if isinstance(semantic, torch.Tensor) else semantic)
    if sem.ndim != 2:
        raise ValueError(f"semantic must be a label map [H, W], got shape {sem.shape}")
    masks, labels = [], []
    for c in range(1, num_classes):
        comp, n = ndimage.label(sem == c)                    # 4-connectivity
        for k in range(1, n + 1):
            masks.append(comp == k)
            labels.append(c)
    H, W = sem.shape
    m = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, H, W, dtype=torch.bool)
    return {"masks": m, "labels": torch.tensor(labels, dtype=torch.int64),
            "scores": torch.ones(len(labels), dtype=torch.float64)}


def restrict_to(pred: dict, target: dict, keep) -> tuple[dict, dict]:
    """A prediction and its target restricted to some ground-truth instances (for AP on a subset of them).

    Args:
        pred: ``masks`` [D, H, W] or [D, 1, H, W] (bool, or probabilities thresholded at 0.5), ``labels``,
            ``scores``.
        target: ``masks`` [G, H, W], ``labels`` [G].
        keep (bool[G]): the ground truths kept, e.g. the items of touching same-class pairs
            (:func:`lecturelib.scenes.touching_same_class`).
    Returns:
        (pred, target): the target's kept instances; the detections whose best-overlapping ground truth (mask
        IoU, any class) is a kept one or that overlap none (false positives stay false positives). A detection
        of a left-out item is left out too, neither a hit nor a false positive, as COCO treats detections of
        ignored regions.
    """
    keep = torch.as_tensor(keep, dtype=torch.bool).reshape(-1)
    gm = MaskAP._masks_of(target, "target")
    pm = MaskAP._masks_of(pred, "pred")
    if len(keep) != len(gm):
        raise ValueError(f"keep has {len(keep)} entries for {len(gm)} ground-truth instances; give one per instance")
    if len(pm) and len(gm):
        iou = mask_iou(pm, gm)                                             # (D, G)
        best, idx = iou.max(1)
        chosen = (best == 0) | keep[idx]
    else:
        chosen = torch.ones(len(pm), dtype=torch.bool)
    p = {"masks": pm[chosen], "labels": torch.as_tensor(pred["labels"]).cpu()[chosen],
         "scores": torch.as_tensor(pred["scores"]).cpu()[chosen]}
    return p, {"masks": gm[keep], "labels": torch.as_tensor(target["labels"]).cpu()[keep]}


def evaluate_instances(predict, dataset, indices, num_classes: int, progress: bool = False) -> dict:
    """Run ``predict(image [3, H, W]) -> prediction dict`` on each scene, one image at a time, timing every call.

    Returns the :meth:`MaskAP.compute` dict plus ``seconds_per_image`` (median over images) and ``preds``
    (the predictions, moved to the CPU, in the order of ``indices``).
    """
    import time

    from tqdm.auto import tqdm

    ap = MaskAP(num_classes)
    preds, seconds = [], []
    for i in tqdm(list(indices), desc="evaluate", disable=not progress, leave=False):
        image, target = dataset[i]
        start = time.perf_counter()
        with torch.no_grad():
            p = predict(image)
        seconds.append(time.perf_counter() - start)
        p = {k: v.detach().cpu() for k, v in p.items()}
        ap.update([p], [target])
        preds.append(p)
    out = ap.compute()
    out["seconds_per_image"] = float(np.median(seconds)) if seconds else float("nan")
    out["preds"] = preds
    return out
