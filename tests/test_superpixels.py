"""Tests of lecturelib.superpixels: voting on hand-made examples, superpixel maps, combine_everything."""
import numpy as np
import pytest
import torch

from lecturelib.superpixels import (
    SuperpixelConfig,
    combine_everything,
    oracle_vote,
    superpixel_average,
    superpixel_vote,
    superpixels,
    vote_batch,
)


def test_vote_hand_made():
    segments = np.array([[0, 0, 1, 1],
                         [0, 0, 1, 1],
                         [2, 2, 2, 2]])
    labels = np.array([[3, 3, 0, 5],
                       [3, 1, 5, 5],
                       [0, 0, 2, 0]])
    want = np.array([[3, 3, 5, 5],
                     [3, 3, 5, 5],
                     [0, 0, 0, 0]])
    assert np.array_equal(superpixel_vote(labels, segments), want)


def test_vote_ties_go_to_the_smaller_label_and_tensors_work():
    segments = torch.tensor([[0, 0], [1, 1]])
    labels = torch.tensor([[4, 2], [7, 7]])
    assert np.array_equal(superpixel_vote(labels, segments), [[2, 2], [7, 7]])


def test_vote_is_identity_for_one_pixel_superpixels():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 11, size=(9, 7))
    assert np.array_equal(superpixel_vote(labels, np.arange(63).reshape(9, 7)), labels)


def test_average_hand_made():
    segments = np.array([[0, 0, 1]])
    probs = np.array([[[0.6, 0.0, 0.9]],      # class 0
                      [[0.4, 1.0, 0.1]]])     # class 1: sums 1.4 vs 0.6 in segment 0
    assert np.array_equal(superpixel_average(probs, segments), [[1, 1, 0]])


def test_oracle_vote_and_ignore():
    segments = np.array([[0, 0, 0, 1]])
    target = np.array([[2, 2, 255, 4]])
    assert np.array_equal(oracle_vote(target, segments), [[2, 2, 2, 4]])


@pytest.mark.parametrize("method", ["felzenszwalb", "slic"])
def test_superpixels_follow_a_colour_edge(method):
    img = np.zeros((40, 30, 3), np.uint8)
    img[:, 15:] = (200, 40, 40)
    seg = superpixels(img, SuperpixelConfig(method=method))
    assert seg.shape == (40, 30) and seg.dtype == np.int64 and seg.min() == 0
    assert set(np.unique(seg)) == set(range(seg.max() + 1))
    assert not set(np.unique(seg[:, :15])) & set(np.unique(seg[:, 15:]))   # no superpixel crosses the edge


def test_vote_batch_snaps_a_blurred_edge_back():
    img = torch.zeros(1, 3, 32, 32)
    img[:, 0, :, 16:] = 1.0                       # red right half
    labels = torch.zeros(1, 32, 32, dtype=torch.long)
    labels[:, :, 13:] = 2                          # prediction leaks 3 px over the edge
    out = vote_batch(labels, img, SuperpixelConfig(method="felzenszwalb", sigma=0.0, min_size=4))
    want = torch.zeros(1, 32, 32, dtype=torch.long)
    want[:, :, 16:] = 2
    assert torch.equal(out, want)
    probs = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    assert torch.equal(combine_everything(probs, img, SuperpixelConfig(sigma=0.0, min_size=4)), want)


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        superpixel_vote(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match="method"):
        SuperpixelConfig(method="watershed")
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        superpixels(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="same N"):
        vote_batch(torch.zeros(2, 8, 8, dtype=torch.long), torch.zeros(1, 3, 8, 8))
