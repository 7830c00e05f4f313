"""Limits on the instance path (proposals kept, detections returned or scored) that say when they bite.

A cap that silently drops what a model found would make a model look worse on images with many
objects than it is. Each cap of the cascade, SDS, Mask R-CNN and :class:`lecturelib.mask_ap.MaskAP`
calls :func:`warn_cap` when it drops something that counts: a detection scored at least
:data:`CONFIDENT`, or (for the proposal caps, which bound how many objects can be found at all) when
at least half of the allowed proposals became such detections. Warnings are :class:`CapWarning`; with
Python's default filter each distinct message is shown once per place. Silence them with
``warnings.simplefilter("ignore", lecturelib.caps.CapWarning)``.
"""
from __future__ import annotations

import warnings

import torch

CONFIDENT = 0.5     # a detection with at least this score counts as found


class CapWarning(UserWarning):
    """A per-image limit dropped detections (or may have, see :mod:`lecturelib.caps`)."""


def warn_cap(message: str) -> None:
    """Issue ``message`` as a :class:`CapWarning` (shown once per distinct message and place by default)."""
    warnings.warn(message, CapWarning, stacklevel=3)


def dropped_confident(scores, keep: int) -> bool:
    """Whether keeping the ``keep`` best of ``scores`` (1-D tensor or array) drops one >= :data:`CONFIDENT`."""
    s = torch.as_tensor(scores).reshape(-1)
    return len(s) > keep and bool(s.topk(keep + 1).values[-1] >= CONFIDENT)


def proposals_saturated(scores, proposals: int) -> bool:
    """Whether at least half of ``proposals`` allowed proposals became detections scored >= :data:`CONFIDENT`
    (``scores``: the image's detection scores): the image may hold more objects than the cap lets through."""
    return int((torch.as_tensor(scores) >= CONFIDENT).sum()) >= max(1, proposals / 2)
