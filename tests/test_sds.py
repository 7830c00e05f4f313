"""SDS: masking with the mean image, warping, proposal labels, region NMS, the pipeline end to end."""
from __future__ import annotations

import pytest
import torch

from lecturelib.proposals import ProposalConfig
from lecturelib.sds import (
    SDS,
    SDSConfig,
    build_training_crops,
    label_proposals,
    mask_nms,
    mask_with_mean,
    region_task,
    warp_regions,
)
from lecturelib.tasks import RegionTask
from lecturelib.training import fit, train_config


def test_mask_with_mean_hand_computed():
    crops = torch.ones(1, 3, 2, 2)
    masks = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    out = mask_with_mean(crops, masks, torch.tensor([0.1, 0.2, 0.3]))
    assert out[0, :, 0, 0].tolist() == [1, 1, 1]
    assert out[0, :, 0, 1].tolist() == pytest.approx([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="masks must be"):
        mask_with_mean(crops, torch.ones(1, 1, 3, 3), torch.zeros(3))


def test_warp_regions_of_an_aligned_box():
    image = torch.arange(3 * 8 * 8, dtype=torch.float32).reshape(3, 8, 8)
    masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    masks[0, 2:6, 2:6] = True
    crops, mcrops = warp_regions(image, torch.tensor([[2.0, 2.0, 6.0, 6.0]]), masks, size=4, context=0.0)
    torch.testing.assert_close(crops[0], image[:, 2:6, 2:6])
    assert (mcrops >= 0.5).all() and (mcrops[0, 0, 1:3, 1:3] == 1).all()   # edges blend with outside


def test_label_proposals_and_region_nms():
    gt = torch.zeros(1, 6, 6, dtype=torch.bool)
    gt[0, :3, :3] = True
    props = torch.zeros(3, 6, 6, dtype=torch.bool)
    props[0, :3, :3] = True
    props[1, :3, :2] = True          # IoU 6/9 with gt
    props[2, 4:, 4:] = True          # elsewhere
    assert label_proposals(props, gt, torch.tensor([7])).tolist() == [7, 7, 0]
    keep = mask_nms(props, torch.tensor([0.5, 0.9, 0.1]), threshold=0.3)
    assert keep.tolist() == [1, 2]   # props[0] overlaps the better props[1] by 6/9 > 0.3


def test_sds_pipeline_trains_and_predicts():
    from lecturelib.scenes import CourseScenes

    torch.manual_seed(0)
    ds = CourseScenes("train", n=3, size=32, mode="instance")
    cfg = SDSConfig(num_classes=11, width=4, crop=16, per_scene=4, n_scenes=3, epochs=1, batch_size=16,
                    proposals=ProposalConfig(scales=(40.0,), color_spaces=("rgb",)))
    crops = build_training_crops(ds, range(3), cfg, progress=False)
    box, mask, labels = crops.tensors
    assert box.shape[1:] == (3, 16, 16) and mask.shape[1:] == (1, 16, 16) and (labels > 0).any()
    model = SDS(cfg)
    task = RegionTask(cfg, crops, mean=torch.full((3,), 0.4))
    hist = fit(model, task, train_config(cfg, progress=False), "cpu")
    assert torch.isfinite(torch.tensor(hist.train_loss)).all()
    assert torch.equal(model.mean, torch.full((3,), 0.4)), "the task writes the mean image into the model"
    assert len(region_task(cfg, ds, seed=0).train_set) == len(crops)
    pred = model(ds[0][0])
    D = len(pred["scores"])
    assert pred["masks"].shape == (D, 1, 32, 32) and ((pred["labels"] >= 1) & (pred["labels"] <= 10)).all()
    # detect() on the same proposals is forward() without the selective search
    from lecturelib.proposals import selective_search

    again = model.detect(ds[0][0], selective_search(ds[0][0], cfg.proposals))
    assert all(torch.equal(again[k], pred[k]) for k in pred)
    with pytest.raises(ValueError, match="one image"):
        model(torch.rand(2, 3, 32, 32))
