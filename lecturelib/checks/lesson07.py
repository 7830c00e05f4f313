"""Self-checks for lesson 07 (object detection): box IoU, non-maximum suppression, where a sliding window looks."""
from __future__ import annotations

import torch

from . import CheckFailed, expect_close, run_check


def _as_index_list(got, what: str) -> list[int]:
    if isinstance(got, torch.Tensor):
        got = got.tolist()
    try:
        return [int(v) for v in got]
    except (TypeError, ValueError):
        raise CheckFailed(f"{what}: return a list or a 1-D tensor of box indices, got {type(got).__name__}.") from None


def box_iou(student) -> bool:
    """Check ``student(a float[N, 4], b float[M, 4]) -> float[N, M]`` against ``torchvision.ops.box_iou``."""
    from torchvision.ops import box_iou as reference

    def test():
        a = torch.tensor([[0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 6.0, 8.0]])
        b = torch.tensor([[0.0, 0.0, 4.0, 4.0],      # the same box: IoU 1
                          [4.0, 0.0, 8.0, 4.0],      # touching along an edge: IoU 0
                          [1.0, 1.0, 3.0, 3.0],      # inside the first: 4 / 16
                          [10.0, 10.0, 12.0, 13.0]])  # far away
        g = torch.Generator().manual_seed(11)
        xy = torch.rand(6, 2, generator=g) * 20
        c = torch.cat([xy, xy + 1 + torch.rand(6, 2, generator=g) * 10], 1)
        for i, (p, q) in enumerate([(a, b), (c, c[:4]), (c[:1], a)]):
            got = student(p, q)
            if not isinstance(got, torch.Tensor):
                raise CheckFailed(f"case {i + 1}: return a tensor, got {type(got).__name__}.")
            expect_close(got, reference(p, q), what=f"case {i + 1} ({len(p)} x {len(q)} boxes)")

    return run_check("box IoU", test, "Hint: the intersection is the box max(x0)..min(x1), max(y0)..min(y1), with "
                     "negative sides clamped to 0; union = area_a + area_b - intersection. Broadcast a[:, None] "
                     "against b[None] for all pairs.")


def nms(student) -> bool:
    """Check ``student(boxes float[N, 4], scores float[N], iou_threshold) -> kept indices, best first`` against
    ``torchvision.ops.nms``."""
    from torchvision.ops import nms as reference

    def test():
        boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [0.0, 0.0, 10.0, 5.0],
                              [20.0, 20.0, 30.0, 30.0], [21.0, 19.0, 30.0, 29.0], [5.0, 0.0, 15.0, 10.0]])
        scores = torch.tensor([0.9, 0.8, 0.75, 0.6, 0.7, 0.5])
        g = torch.Generator().manual_seed(5)
        xy = torch.rand(30, 2, generator=g) * 40
        rand_boxes = torch.cat([xy, xy + 5 + torch.rand(30, 2, generator=g) * 15], 1)
        rand_scores = torch.randperm(30, generator=g).float() / 30          # no ties: one right answer
        cases = [(boxes, scores, 0.5), (boxes, scores, 0.3), (boxes, scores, 0.9), (rand_boxes, rand_scores, 0.4),
                 (rand_boxes, rand_scores, 0.1), (boxes[:0], scores[:0], 0.5)]
        for i, (b, s, t) in enumerate(cases):
            got = _as_index_list(student(b, s, t), f"case {i + 1}")
            want = reference(b, s, t).tolist()
            if got != want:
                raise CheckFailed(f"case {i + 1} ({len(b)} boxes, IoU threshold {t}): you keep {got}, expected "
                                  f"{want} (indices, highest score first).")

    return run_check("non-maximum suppression", test,
                     "Hint: visit the boxes by decreasing score; keep a box unless it overlaps an already kept box "
                     "by IoU > iou_threshold.")


def window_box(student) -> bool:
    """Check ``student(i, j, scale, window, stride) -> (x0, y0, x1, y1)``: the window of score-map position (i, j),
    the image having been resized by ``scale`` before the pass, in the original image's pixels."""
    from ..overfeat import window_box as reference

    def test():
        cases = [(0, 0, 1.0, 30, 8), (2, 3, 1.0, 30, 8), (1, 4, 0.5, 30, 8), (3, 0, 2.0, 30, 8), (5, 2, 1.25, 22, 4)]
        for i, j, scale, window, stride in cases:
            got = student(i, j, scale, window, stride)
            want = reference(i, j, scale, window, stride)
            expect_close(torch.as_tensor(got, dtype=torch.float64), torch.tensor(want, dtype=torch.float64),
                         what=f"window of position (i={i}, j={j}) at scale {scale}, window {window}, stride {stride}")

    return run_check("the window of a score-map position", test,
                     "Hint: in the resized image, position (i, j) reads columns stride*j .. stride*j + window and "
                     "rows stride*i .. stride*i + window; divide by the scale to go back to the original image.")
