"""Unit tests of lecturelib.patch (lesson 01); its self-checks: tests/test_checks_early.py."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from lecturelib import patch
from lecturelib.metrics import segmentation_report
from lecturelib.tasks import PatchTask
from lecturelib.training import fit, train_config


def naive_patch(image: np.ndarray, y: int, x: int, p: int) -> np.ndarray:
    """Reference: index arithmetic with explicit reflection, no padding call."""
    c, h, w = image.shape

    def reflect(i, n):
        while i < 0 or i >= n:
            i = -i if i < 0 else 2 * (n - 1) - i
        return i

    out = np.zeros((c, p, p))
    for dy in range(p):
        for dx in range(p):
            out[:, dy, dx] = image[:, reflect(y - p // 2 + dy, h), reflect(x - p // 2 + dx, w)]
    return out


@pytest.mark.parametrize("p", [1, 3, 4, 5, 8])
def test_extract_patch_matches_naive_reflection_everywhere(p):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 9, 10, generator=g, dtype=torch.float64)
    for y in range(9):
        for x in range(10):
            got = patch.extract_patch(image, y, x, p)
            assert got.shape == (3, p, p)
            np.testing.assert_array_equal(got.numpy(), naive_patch(image.numpy(), y, x, p))
            assert torch.equal(got[:, p // 2, p // 2], image[:, y, x])


def test_corner_patch_hand_example():
    image = torch.arange(25, dtype=torch.float32).reshape(1, 5, 5)
    got = patch.extract_patch(image, 0, 0, 3)[0]
    # reflect: row -1 is row 1, column -1 is column 1
    want = torch.tensor([[6., 5., 6.], [1., 0., 1.], [6., 5., 6.]])
    assert torch.equal(got, want)
    got = patch.extract_patch(image, 4, 4, 3)[0]
    assert torch.equal(got, torch.tensor([[18., 19., 18.], [23., 24., 23.], [18., 19., 18.]]))


def test_extract_patches_batch_equals_single():
    images = torch.rand(2, 3, 12, 11)
    padded = patch.pad_for_patches(images, 6)
    idx, ys, xs = torch.tensor([0, 1, 1]), torch.tensor([0, 11, 5]), torch.tensor([10, 0, 3])
    batch = patch.extract_patches(padded, idx, ys, xs, 6)
    for b in range(3):
        assert torch.equal(batch[b], patch.extract_patch(images[idx[b]], int(ys[b]), int(xs[b]), 6))


def test_bad_patch_inputs_have_clear_messages():
    with pytest.raises(ValueError, match="outside the 5x5 image"):
        patch.extract_patch(torch.rand(3, 5, 5), 5, 0, 3)
    with pytest.raises(ValueError, match="smaller than the image side"):
        patch.extract_patch(torch.rand(3, 5, 5), 2, 2, 13)
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        patch.extract_patch(torch.rand(5, 5), 2, 2, 3)
    with pytest.raises(ValueError, match="positive int"):
        patch.extract_patch(torch.rand(3, 5, 5), 2, 2, 0)


def test_balanced_sampling_equalises_classes():
    masks = torch.zeros(4, 20, 20, dtype=torch.long)
    masks[:, :2, :2] = 1          # class 1: 16 pixels, class 2: 8 pixels, rest background
    masks[:2, 10, :4] = 2
    masks[0, 19, 19] = 255        # ignored
    g = torch.Generator().manual_seed(0)
    idx, ys, xs, labels = patch.sample_centres(masks, 30_000, g, balanced=True)
    assert torch.equal(masks[idx, ys, xs], labels)
    share = torch.bincount(labels, minlength=3).double() / len(labels)
    assert torch.allclose(share, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.02)
    assert not (labels == 255).any()
    _, _, _, uni = patch.sample_centres(masks, 30_000, g, balanced=False)
    assert (uni == 0).double().mean() > 0.9


def test_feature_sizes_and_config_errors():
    assert patch.valid_patch_sizes(2, up_to=40) == [10, 14, 18, 22, 26, 30, 34, 38]
    assert patch.feature_size(38, 2) == 8 and patch.feature_size(22, 3) == 1
    with pytest.raises(ValueError, match="valid sizes"):
        patch.PatchCNNConfig(patch_size=20, stages=2)
    cfg = patch.PatchCNNConfig(patch_size=22, stages=2, width=4, hidden=8)
    assert cfg.stride == 4


@pytest.mark.parametrize("p,stages", [(10, 2), (22, 2), (22, 3), (14, 2)])
def test_patch_cnn_forward_backward(p, stages):
    torch.manual_seed(0)
    model = patch.patch_cnn(patch.PatchCNNConfig(patch_size=p, stages=stages, width=4, hidden=8, num_classes=5))
    x = torch.rand(3, 3, p, p, requires_grad=True)
    out = model(x)
    assert out.shape == (3, 5)
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(out).all()
    # the receptive field is the whole patch and nothing beyond: a one-pixel change anywhere moves the output
    model.eval()
    with torch.no_grad():
        base = model(x[:1])
        for y, xx in [(0, 0), (p - 1, p - 1), (0, p - 1), (p // 2, p // 2)]:
            x2 = x[:1].clone()
            x2[0, :, y, xx] += 5.0
            assert not torch.allclose(model(x2), base)


def test_dense_scores_equal_classifier_on_each_patch():
    torch.manual_seed(1)
    model = patch.patch_cnn(patch.PatchCNNConfig(patch_size=10, stages=2, width=4, hidden=8, num_classes=3)).eval()
    image = torch.rand(3, 7, 8)
    scores = patch.dense_scores_by_patches(model, image, 10, torch.device("cpu"), batch_size=5)
    assert scores.shape == (3, 7, 8)
    with torch.no_grad():
        for y, x in [(0, 0), (6, 7), (3, 2)]:
            want = model(patch.extract_patch(image, y, x, 10)[None])[0]
            torch.testing.assert_close(scores[:, y, x], want, atol=1e-6, rtol=1e-5)


def brute_force_distinct(p, stages, h, w):
    """Count distinct conv output positions per stage by listing them, patch by patch."""
    rows, side = [], p
    for s in range(stages):
        side -= 2
        jump = 2 ** s
        pos = {(y + jump * i, x + jump * j) for y in range(h) for x in range(w)
               for i in range(side) for j in range(side)}
        rows.append((h * w * side * side, len(pos)))
        side //= 2
    return rows


@pytest.mark.parametrize("p,stages,h,w", [(10, 2, 6, 5), (22, 2, 9, 7), (22, 3, 11, 10)])
def test_conv_output_count_matches_brute_force(p, stages, h, w):
    got = [(r["computed"], r["distinct"]) for r in patch.conv_output_count(p, stages, h, w)]
    assert got == brute_force_distinct(p, stages, h, w)


def test_training_reduces_loss_on_an_easy_task():
    torch.manual_seed(0)
    images = torch.rand(6, 3, 16, 16) * 0.2
    masks = torch.zeros(6, 16, 16, dtype=torch.long)
    images[:, 0, 4:12, 4:12] += 0.8          # a red square = class 1
    masks[:, 4:12, 4:12] = 1
    model = patch.patch_cnn(patch.PatchCNNConfig(patch_size=10, stages=2, width=4, hidden=8, num_classes=2))
    recipe = patch.PatchLessonConfig(num_classes=2, n_patches=512, epochs=3, batch_size=64)
    task = PatchTask(recipe, (images, masks), patch_size=10)
    hist = fit(model, task, train_config(recipe, progress=False), "cpu")
    assert hist.train_loss[-1] < hist.train_loss[0]
    pred = patch.dense_labels_by_patches(model, images[:2], 10, torch.device("cpu"))
    report = segmentation_report(pred, masks[:2], 2)
    assert report["pixel_acc"] > 0.9


def test_lesson_config_follows_profile():
    import lecturelib
    quick = patch.PatchLessonConfig.from_profile(lecturelib.get_profile("quick"))
    full = patch.PatchLessonConfig.from_profile(lecturelib.get_profile("full"))
    assert full.n_patches > quick.n_patches and full.width > quick.width and full.epochs >= quick.epochs
    for p in quick.patch_sizes:
        assert quick.model_config(p).num_classes == 11      # every lesson patch size fits the CNN exactly


def test_patch_batches_len_and_shapes():
    images, masks = torch.rand(2, 3, 12, 12), torch.randint(0, 3, (2, 12, 12))
    b = patch.PatchBatches(images, masks, 6, n_patches=10, batch_size=4)
    got = list(b)
    assert len(b) == 3 == len(got)
    assert got[0][0].shape == (4, 3, 6, 6) and got[-1][0].shape == (2, 3, 6, 6)
    with pytest.raises(ValueError, match="same N, H, W"):
        patch.PatchBatches(images, masks[:1], 6, 10, 4)
    assert isinstance(patch.patch_cnn(patch.PatchCNNConfig(10, stages=2)), nn.Sequential)
