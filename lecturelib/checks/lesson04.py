"""Self-checks for notebook 04 (recurrent refinement)."""
from __future__ import annotations

import torch

from . import expect_close, run_check


def _tiny_cnn(num_classes: int = 4):
    from ..recurrent import RefinementCNN

    torch.manual_seed(0)
    return RefinementCNN(num_classes, width=4, hidden=8).eval()


def refinement_step(student) -> bool:
    """``student(cnn, image, prev_logits)`` must equal :func:`lecturelib.recurrent.refinement_step`."""
    from ..recurrent import refinement_step as reference

    def test():
        cnn = _tiny_cnn()
        g = torch.Generator().manual_seed(6)
        for shape in [(2, 16, 16), (1, 20, 12)]:
            image = torch.rand(shape[0], 3, *shape[1:], generator=g)
            prev = 3 * torch.randn(shape[0], 4, *shape[1:], generator=g)
            with torch.no_grad():
                expect_close(student(cnn, image, prev), reference(cnn, image, prev), what=f"logits for {shape}",
                             atol=1e-5)

    return run_check("one refinement step", test,
                     "Hint: softmax the previous logits over the class dimension, stack them after the image "
                     "(shifted by -0.5, as the library does) with torch.cat(..., dim=1), and run cnn on that.")


def unrolled_loss(student) -> bool:
    """``student(logits_list, target)`` must equal :func:`lecturelib.recurrent.unrolled_loss`."""
    from ..recurrent import unrolled_loss as reference

    def test():
        g = torch.Generator().manual_seed(7)
        target = torch.randint(0, 4, (2, 8, 8), generator=g)
        target[0, 0, :3] = 255
        for n in (1, 3):
            logits = [torch.randn(2, 4, 8, 8, generator=g) for _ in range(n)]
            expect_close(student(logits, target), reference(logits, target), what=f"loss over {n} iteration(s)")

    return run_check("unrolled loss", test,
                     "Hint: F.cross_entropy(logits, target, ignore_index=255) for each iteration, then the mean.")
