"""Benchmark: making course scenes vs training on them, and a notebook kernel's memory.

    python scripts/bench_scenes.py

Reports scenes/s at 64 px and 128 px on one core, the time of one training step of
lesson 06's FCN-8s (quick-profile width) on a batch of the same scenes, and the ratio.
"""
from __future__ import annotations

import time

import torch
import torch.nn as nn

from lecturelib.profiles import PROFILES
from lecturelib.scenes import CourseScenes, SceneConfig, course_scene


def scenes_per_second(size: int, n: int = 300) -> float:
    cfg = SceneConfig(size=size)
    course_scene("train", 0, 123, cfg)  # load items and photographs once
    t = time.perf_counter()
    for i in range(n):
        course_scene("train", i, 123, cfg)
    return n / (time.perf_counter() - t)


def train_step_seconds(size: int, batch: int, width: int) -> float:
    from lecturelib.fcn import fcn8s

    X, Y = CourseScenes("train", n=batch, size=size, seed=5).tensors()
    model = fcn8s(num_classes=11, width=width)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss(ignore_index=255)
    times = []
    for _ in range(6):
        t = time.perf_counter()
        loss = loss_fn(model(X)["out"], Y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return min(times[1:])


def main() -> None:
    torch.set_num_threads(1)
    prof = PROFILES["quick"]
    print(f"torch threads: {torch.get_num_threads()} (one core)")
    for size in (64, 128):
        rate = scenes_per_second(size)
        step = train_step_seconds(size, prof.batch_size, prof.width)
        per_scene_train = step / prof.batch_size
        print(f"{size:4d} px: {rate:7.0f} scenes/s ({1e3 / rate:.2f} ms/scene); FCN-8s training step "
              f"{step * 1e3:.0f} ms per batch of {prof.batch_size}; one scene = {(1 / rate) / step:.1%} of a step, "
              f"{(1 / rate) / per_scene_train:.0%} of one sample's share of it (scenes are cached, so over "
              f"{prof.epochs} epochs: {(1 / rate) / (per_scene_train * prof.epochs):.0%})")


if __name__ == "__main__":
    main()
