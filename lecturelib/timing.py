"""Wall time per image of a model's prediction, the way the detection papers report speed.

``time_per_image(predict, images)`` calls ``predict`` on one image at a time (batch size 1, as a
detector meets a camera frame), after ``warmup`` untimed calls (first-call allocation, lazy
initialisation), ``repeats`` times over the images, and returns the median in milliseconds: the
median shrugs off the odd slow call caused by another process on a shared machine.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch


def _sync(device) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_per_image(predict: Callable, images, repeats: int = 3, warmup: int = 1, device=None) -> float:
    """Median milliseconds of one ``predict(image)`` call.

    Args:
        predict: called with one image at a time, under ``torch.no_grad()``; its result is ignored.
        images: a list of images (any objects ``predict`` takes, e.g. float[3, H, W]) or a batch [N, 3, H, W].
        repeats: timed passes over ``images`` (every call is one sample of the median).
        warmup: untimed calls on the first image before timing.
        device: a CUDA device to synchronise around each call (None or a CPU device: no synchronisation).
    Returns:
        float: the median over ``repeats × len(images)`` calls, in ms.
    Raises:
        ValueError: no image, or repeats < 1 or warmup < 0.
    """
    images = list(images)
    if not images:
        raise ValueError("time_per_image needs at least one image")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    samples = []
    with torch.no_grad():
        for _ in range(warmup):
            predict(images[0])
        for _ in range(repeats):
            for image in images:
                _sync(device)
                start = time.perf_counter()
                predict(image)
                _sync(device)
                samples.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(samples))
