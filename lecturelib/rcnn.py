"""R-CNN (Girshick, Donahue, Darrell & Malik, CVPR 2014): crop and warp every proposal, one CNN pass each.

1. proposals: selective search (:func:`lecturelib.detection.proposal_boxes`; ~2000 per image in the paper);
2. each proposal's box, enlarged by a margin of context, is cut out of the image and **warped** to a fixed
   ``crop`` × ``crop`` square whatever its aspect ratio (227 × 227 in the paper; bilinear, with
   ``torchvision.ops.roi_align`` on the image);
3. the CNN runs on every warped crop separately: the cost per image grows with the number of proposals;
4. on the crop's features, a class score and class-specific box offsets (the paper trains linear SVMs and a
   separate bounding-box regressor on pool5 features; here both come from the same head as Fast R-CNN's,
   trained jointly with the CNN, so that R-CNN and Fast R-CNN differ only in where the features come from);
5. per class, non-maximum suppression.

The backbone and head are those of :class:`lecturelib.fast_rcnn.FastRCNN`: the crop's feature map
(crop / 4 cells a side) is max-pooled to the same 7 × 7 grid, so the two models have the same parameters.

API: as :class:`lecturelib.fast_rcnn.FastRCNN` (``model(images, targets)`` -> losses in training mode,
``model.predict(images, proposals=None)``, ``model.propose(images)``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from .detection import image_list
from .fast_rcnn import FastRCNN


def warp_boxes_from_image(image: torch.Tensor, boxes: torch.Tensor, size: int, context: float = 0.0) -> torch.Tensor:
    """R-CNN's input: each box of ``image`` [3, H, W] (boxes float[P, 4], pixels), enlarged by ``context`` × its
    side on each side, warped (bilinear, aspect ratio not kept) to float[P, 3, size, size]."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be [3, H, W], got {tuple(image.shape)}")
    if len(boxes) == 0:
        return image.new_zeros(0, 3, size, size)
    b = boxes.to(image)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    b = b + torch.stack([-w, -h, w, h], 1) * context
    return roi_align(image[None], [b], size, 1.0, 2, aligned=True)


class RCNN(FastRCNN):
    """Warp each proposal to ``crop`` px -> backbone on each crop -> 7 × 7 max pool -> class scores and box offsets.

    Everything but :meth:`roi_features` (propose, the losses, detection) is :class:`FastRCNN`'s: the two models
    differ only in where each RoI's features come from.
    """

    def roi_features(self, images, rois: list[torch.Tensor], chunk: int = 256) -> torch.Tensor:
        """float[R, C, s, s]: every RoI warped out of its image and sent through the backbone on its own
        (``chunk`` crops per call, only to bound memory: each crop's result does not depend on the others)."""
        cfg = self.config
        crops = torch.cat([warp_boxes_from_image(im, r, cfg.crop, cfg.context)
                           for im, r in zip(image_list(images), rois)])
        if len(crops) == 0:
            return crops.new_zeros(0, self.backbone.out_channels, cfg.roi_size, cfg.roi_size)
        feats = torch.cat([self.backbone(crops[k:k + chunk]) for k in range(0, len(crops), chunk)])
        return F.adaptive_max_pool2d(feats, cfg.roi_size)
