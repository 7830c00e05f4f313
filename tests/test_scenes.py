import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from lecturelib.scenes import (
    BACKGROUND_NAMES,
    NUM_CLASSES,
    CourseScenes,
    SceneConfig,
    background_region,
    course_scene,
    load_items,
)


def digest(scene) -> str:
    h = hashlib.sha256()
    for arr in (scene.image, scene.semantic, scene.instances, scene.labels, scene.boxes):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


CODE = ("import hashlib, numpy as np\nfrom lecturelib.scenes import course_scene, SceneConfig\n"
        "h = hashlib.sha256()\n"
        "for i in range(5):\n"
        "    s = course_scene('{split}', i, {seed}, SceneConfig(size={size}))\n"
        "    for a in (s.image, s.semantic, s.instances, s.labels, s.boxes):\n"
        "        h.update(np.ascontiguousarray(a).tobytes())\n"
        "print(h.hexdigest())\n")


@pytest.mark.parametrize("split,seed,size", [("train", 0, 64), ("test", 3, 96)])
def test_same_scene_in_two_processes(split, seed, size):
    outs = [subprocess.run([sys.executable, "-c", CODE.format(split=split, seed=seed, size=size)],
                           capture_output=True, text=True, check=True).stdout.strip() for _ in range(2)]
    h = hashlib.sha256()
    for i in range(5):
        s = course_scene(split, i, seed, SceneConfig(size=size))
        for a in (s.image, s.semantic, s.instances, s.labels, s.boxes):
            h.update(np.ascontiguousarray(a).tobytes())
    assert outs[0] == outs[1] == h.hexdigest()


def test_different_seeds_splits_and_indices_differ():
    base = digest(course_scene("train", 0, 0))
    assert digest(course_scene("train", 0, 1)) != base
    assert digest(course_scene("test", 0, 0)) != base
    assert digest(course_scene("train", 1, 0)) != base


@pytest.mark.parametrize("size", [48, 64, 128])
def test_mask_consistency_on_hundreds_of_scenes(size):
    cfg = SceneConfig(size=size)
    n_touching = 0
    for i in range(150 if size < 128 else 60):
        for split in ("train", "test"):
            s = course_scene(split, i, 7, cfg)
            n = len(s.labels)
            assert 1 <= n <= cfg.max_items
            masks = s.masks
            assert masks.shape == (n, size, size)
            # the union of instance masks is the semantic foreground
            assert np.array_equal(masks.any(0), s.semantic > 0)
            assert s.instances.max() == n
            for k in range(n):
                m = masks[k]
                assert m.sum() >= cfg.min_pixels, "an instance is (nearly) empty"
                assert np.all(s.semantic[m] == s.labels[k]), "instance label differs from the semantic mask"
                ys, xs = np.nonzero(m)
                assert tuple(s.boxes[k]) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), "box not tight"
                assert s.areas[k] == m.sum()
            # touching items of the same class: the semantic mask merges them
            for a in range(n):
                for b in range(a + 1, n):
                    if s.labels[a] == s.labels[b]:
                        grown = np.zeros_like(masks[a])
                        grown[:-1] |= masks[a][1:]
                        grown[1:] |= masks[a][:-1]
                        grown[:, :-1] |= masks[a][:, 1:]
                        grown[:, 1:] |= masks[a][:, :-1]
                        n_touching += bool((grown & masks[b]).any())
    assert n_touching > 20, "scenes should contain touching items of the same class"


def test_occlusion_leaves_each_item_a_minimum_visible_share():
    # rebuild the full (unoccluded) item area by re-running the generator with occlusion ignored is
    # not possible from outside; instead check the promise through the visible areas
    cfg = SceneConfig(size=64)
    for i in range(100):
        s = course_scene("train", i, 11, cfg)
        assert (s.areas >= cfg.min_pixels).all()


def test_train_and_test_use_disjoint_items_and_background_rows():
    tr, te = load_items("train"), load_items("test")
    tr_set = {x.tobytes() for x in (tr.intensity * 255).astype(np.uint8)}
    te_set = {x.tobytes() for x in (te.intensity * 255).astype(np.uint8)}
    assert not tr_set & te_set
    assert sorted(np.unique(tr.classes)) == list(range(1, NUM_CLASSES))
    for name in BACKGROUND_NAMES:
        a = np.asarray(background_region(name, "train"))
        b = np.asarray(background_region(name, "test"))
        assert a.shape[1] == b.shape[1] and a.shape[0] > b.shape[0] > 0


def test_dataset_semantic_and_instance_modes():
    ds = CourseScenes("train", n=4, size=64, seed=0)
    img, mask = ds[0]
    assert img.shape == (3, 64, 64) and img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
    assert mask.shape == (64, 64) and mask.dtype == torch.int64
    X, Y = ds.tensors()
    assert X.shape == (4, 3, 64, 64) and Y.shape == (4, 64, 64)
    assert torch.equal(X[0], img) and torch.equal(Y[0], mask)
    inst = CourseScenes("train", n=4, size=64, seed=0, mode="instance")
    img2, t = inst[0]
    assert torch.equal(img2, img)
    n = len(t["labels"])
    assert t["boxes"].shape == (n, 4) and t["boxes"].dtype == torch.float32
    assert t["masks"].shape == (n, 64, 64) and t["masks"].dtype == torch.uint8
    assert t["labels"].dtype == torch.int64
    assert torch.equal((t["masks"].sum(0) > 0), mask > 0)


def test_scene_speed_is_far_below_a_training_step():
    import time
    t = time.perf_counter()
    for i in range(50):
        course_scene("train", i, 99, SceneConfig(size=64))
    per_scene = (time.perf_counter() - t) / 50
    assert per_scene < 0.05, f"a 64px scene took {per_scene * 1e3:.1f} ms"
