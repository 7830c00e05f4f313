"""Segment proposals: superpixel adjacency, hierarchical grouping on a hand-made image, recall."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lecturelib.proposals import (
    ProposalConfig,
    best_overlap,
    colour_histograms,
    default_min_area,
    default_min_size,
    hierarchical_grouping,
    masks_to_boxes,
    neighbours,
    proposal_recall,
    selective_search,
)
from lecturelib.scenes import CourseScenes


def test_neighbours_of_a_label_image():
    labels = np.array([[0, 0, 1],
                       [2, 2, 1],
                       [2, 3, 3]])
    assert neighbours(labels) == {(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)}


def test_grouping_merges_similar_neighbours_first():
    # four superpixels in a row: two red-ish ones, then two blue-ish ones
    labels = np.repeat(np.arange(4)[None], 4, axis=0).repeat(2, axis=1)        # (4, 8): columns 0-1 -> 0, ...
    colours = np.array([[0.9, 0.1, 0.1], [0.85, 0.1, 0.1], [0.1, 0.1, 0.9], [0.1, 0.15, 0.9]])
    image = colours[labels]
    hist = colour_histograms(image, labels, 4, bins=8)
    regions = hierarchical_grouping(labels, hist)
    assert regions[:4] == [[0], [1], [2], [3]]
    assert len(regions) == 4 + 3                                    # R superpixels + R - 1 merges
    merges = [sorted(r) for r in regions[4:]]
    assert sorted(merges[:2]) == [[0, 1], [2, 3]]                   # like colours merge before unlike ones
    assert merges[2] == [0, 1, 2, 3]


def test_grouping_only_merges_touching_regions():
    labels = np.array([[0, 1, 2]] * 3)
    image = np.array([[0.9, 0.9, 0.9], [0.1, 0.1, 0.1], [0.9, 0.9, 0.9]])[labels]   # 0 and 2 alike but apart
    regions = hierarchical_grouping(labels, colour_histograms(image, labels, 3, bins=4))
    assert [0, 2] not in [sorted(r) for r in regions]


def test_selective_search_finds_the_squares():
    rng = np.random.default_rng(0)
    img = (rng.random((32, 32, 3)) * 0.1 + 0.45)                   # grey noise background
    gt = np.zeros((2, 32, 32), bool)
    gt[0, 4:14, 4:14] = True
    gt[1, 16:28, 18:30] = True
    img[gt[0]] = [0.9, 0.1, 0.1]
    img[gt[1]] = [0.1, 0.2, 0.9]
    props = selective_search((img * 255).astype(np.uint8), ProposalConfig(scales=(20.0,), color_spaces=("rgb",)))
    assert props.dtype == torch.bool and props.shape[1:] == (32, 32)
    best = best_overlap(props, torch.from_numpy(gt))
    assert (best > 0.9).all()
    rec = proposal_recall(best)
    assert rec[0.5] == 1.0 and rec[0.7] == 1.0
    assert len(torch.unique(props.flatten(1), dim=0)) == len(props)   # no duplicates


def test_masks_to_boxes_pixel_edges():
    m = torch.zeros(2, 6, 6, dtype=torch.bool)
    m[0, 1:3, 2:5] = True
    assert masks_to_boxes(m).tolist() == [[2, 1, 5, 3], [0, 0, 0, 0]]


def test_recall_edge_cases_and_bad_input():
    none = torch.zeros(0, 4, 4, dtype=torch.bool)
    assert best_overlap(none, torch.ones(2, 4, 4, dtype=torch.bool)).tolist() == [0, 0]
    assert np.isnan(proposal_recall(torch.zeros(0))[0.5])
    with pytest.raises(ValueError, match="color_spaces"):
        ProposalConfig(color_spaces=("lab",))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        selective_search(np.zeros((8, 8)))


def disks_image():
    """100 bright disks of 441 pixels on a dark 512 x 512 background, and their masks."""
    img = np.full((512, 512, 3), 30, np.uint8)
    yy, xx = np.mgrid[:512, :512]
    masks = []
    for i in range(10):
        for j in range(10):
            m = (yy - 26 - 51 * i) ** 2 + (xx - 26 - 51 * j) ** 2 <= 12 ** 2
            img[m] = 220
            masks.append(m)
    return img, torch.from_numpy(np.stack(masks))


def test_small_objects_on_a_large_image_are_proposed():
    img, gt = disks_image()
    assert int(gt[0].sum()) == 441
    props = selective_search(img)                    # the default sizes (0.3 % / 0.4 % of 512 x 512 would be
    rec = proposal_recall(best_overlap(props, gt))   # 786 / 1049 px: one proposal, recall 0)
    assert len(props) >= 100 and rec[0.5] == 1.0 and rec[0.7] == 1.0
    one = ProposalConfig(scales=(40.0,), color_spaces=("rgb",), min_size=786, min_area=1049)
    assert len(selective_search(img, one)) == 1


def test_default_sizes_in_pixels_are_the_course_values():
    # 64-px and 128-px course scenes: exactly the earlier shares of the image area; larger images: 128-px values
    assert (default_min_size(64, 64), default_min_area(64, 64)) == (12, pytest.approx(16.384))
    assert (default_min_size(128, 128), default_min_area(128, 128)) == (49, pytest.approx(65.536))
    assert (default_min_size(512, 512), default_min_area(512, 512)) == (49, pytest.approx(65.536))
    assert (default_min_size(32, 32), default_min_area(32, 32)) == (3, pytest.approx(4.096))
    with pytest.raises(ValueError, match="in pixels"):
        ProposalConfig(min_size=0.003)


@pytest.mark.parametrize("side,counts", [(64, [368, 268, 362, 275]), (128, [370, 220, 414, 256])])
def test_course_scenes_give_the_same_proposals(side, counts):
    """The number of proposals on the first test scenes, recorded before sizes were expressed in pixels."""
    scenes = CourseScenes("test", n=4, size=side, mode="instance")
    assert [len(selective_search(scenes[i][0])) for i in range(4)] == counts
