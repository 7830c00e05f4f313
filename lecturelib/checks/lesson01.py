"""Self-checks for lesson 01 (patch classification)."""
from __future__ import annotations

import torch

from . import CheckFailed, expect_close, run_check


def patch_extractor(student) -> bool:
    """``student(image float[C, H, W], y, x, patch_size) -> float[C, P, P]`` vs. :func:`..patch.extract_patch`."""
    from ..patch import extract_patch

    def test():
        g = torch.Generator().manual_seed(1)
        image = torch.rand(3, 9, 11, generator=g)
        cases = [(4, 5, 5), (0, 0, 5), (8, 10, 5), (0, 10, 3), (8, 0, 7), (3, 1, 4), (2, 9, 6), (5, 5, 1)]
        for y, x, p in cases:
            got = student(image, y, x, p)
            if not isinstance(got, torch.Tensor):
                raise CheckFailed(f"return a torch.Tensor, got {type(got).__name__}.")
            expect_close(got, extract_patch(image, y, x, p), what=f"patch at (y={y}, x={x}) with patch_size={p}",
                         atol=0)
    return run_check("centre-pixel patch extractor", test,
                     "Hint: reflect-pad by P // 2 before and P - 1 - P // 2 after (F.pad(..., mode='reflect') "
                     "needs a batch axis), then the patch of (y, x) starts at (y, x) of the padded image.")


def dense_labelling(student) -> bool:
    """``student(model, image float[3, H, W], patch_size) -> int64[H, W]`` against the per-pixel reference."""
    from ..patch import PatchCNNConfig, dense_labels_by_patches, patch_cnn

    def test():
        torch.manual_seed(3)
        model = patch_cnn(PatchCNNConfig(patch_size=10, num_classes=4, width=4, hidden=8, stages=2)).eval()
        image = torch.rand(3, 7, 9, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            got = student(model, image, 10)
        want = dense_labels_by_patches(model, image[None], 10, torch.device("cpu"))[0]
        if not isinstance(got, torch.Tensor):
            raise CheckFailed(f"return a torch.Tensor of labels, got {type(got).__name__}.")
        if tuple(got.shape) != tuple(want.shape):
            raise CheckFailed(f"labels have shape {tuple(got.shape)}, expected {tuple(want.shape)} (one per pixel).")
        wrong = int((got.long() != want).sum())
        if wrong:
            raise CheckFailed(f"{wrong} of {want.numel()} pixels get a different label than the reference.")
    return run_check("dense labelling, pixel by pixel", test,
                     "Hint: for every (y, x): patch = extract_patch(image, y, x, P); "
                     "label = model(patch[None]).argmax(1).")
