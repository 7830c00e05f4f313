"""Benchmark: making course scenes vs training on them, and a notebook kernel's memory.

    python scripts/bench_scenes.py

Reports scenes/s at 64 px and 128 px on one core, the time of one training step of
lesson 06's FCN-8s (quick-profile width) on a batch of the same scenes, and the ratio.
"""
from __future__ import annotations

import time

import torch

from lecturelib.fcn import SkipLessonConfig, fcn8s
from lecturelib.profiles import PROFILES
from lecturelib.scenes import CourseScenes, SceneConfig, course_scene
from lecturelib.tasks import SemanticTask
from lecturelib.training import fit, train_config


def scenes_per_second(size: int, n: int = 300) -> float:
    cfg = SceneConfig(size=size)
    course_scene("train", 0, 123, cfg)  # load items and photographs once
    t = time.perf_counter()
    for i in range(n):
        course_scene("train", i, 123, cfg)
    return n / (time.perf_counter() - t)


def train_step_seconds(size: int, batch: int, width: int) -> float:
    """Best time of one training step of lesson 06's FCN-8s recipe on ``batch`` scenes (the course's ``fit``)."""
    recipe = SkipLessonConfig(width=width, batch_size=batch, epochs=6)
    data = CourseScenes("train", n=batch, size=size, seed=5).tensors()
    model = fcn8s(recipe.num_classes, config=recipe.vgg())
    hist = fit(model, SemanticTask(recipe, data), train_config(recipe, progress=False), "cpu")   # 1 step per epoch
    ends = [r["train_seconds"] for r in hist.records]
    return min(b - a for a, b in zip(ends, ends[1:]))


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
