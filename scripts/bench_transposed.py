"""Benchmark of lesson 05: the gather view against F.conv_transpose2d, and the widget's frame render time.

    python scripts/bench_transposed.py

Goal: the vectorised gather view within 3x of ``F.conv_transpose2d`` on a 1x64x32x32 input, 64 output channels,
4x4 kernel, stride 2; a widget frame well under 0.2 s. Both numbers are measured in the same run; report them as
ratios when the machine is busy.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

from lecturelib import frames as fr
from lecturelib import transposed as T
from lecturelib.training import time_call


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=30, help="interleaved timed runs; the best of each counts")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for the timing (default 1: stable on a busy machine; 0 = leave as is)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    x = torch.randn(1, 64, 32, 32)
    w = torch.randn(64, 64, 4, 4)
    want = F.conv_transpose2d(x, w, stride=2, padding=1)
    got = T.conv_transpose_gather(x, w, stride=2, padding=1)
    err = (got - want).abs().max().item()
    if err > 1e-3:
        print(f"gather differs from F.conv_transpose2d by {err:.2e}", file=sys.stderr)
        return 1
    contenders = {"torch": lambda: F.conv_transpose2d(x, w, stride=2, padding=1),
                  "skip": lambda: T.conv_transpose_gather(x, w, stride=2, padding=1, skip_zeros=True),
                  "plain": lambda: T.conv_transpose_gather(x, w, stride=2, padding=1)}
    best = {name: float("inf") for name in contenders}
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    for _ in range(args.repeat):          # interleaved: a busy machine slows every contender alike
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    torch.set_num_threads(threads)
    t_torch, t_gather, t_plain = best["torch"], best["skip"], best["plain"]
    t_matrix = time_call(T.conv_transpose_matrix, x[:, :4, :8, :8], w[:4, :4], stride=2, padding=1, repeat=3)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, timed with {args.threads or threads} thread(s), load average {load:.1f}")
    print(f"1x64x32x32 -> 64 channels, 4x4 kernel, stride 2, padding 1 (best of {args.repeat}):")
    print(f"  F.conv_transpose2d      {t_torch * 1e3:8.2f} ms")
    print(f"  gather, skip_zeros      {t_gather * 1e3:8.2f} ms   {t_gather / t_torch:.2f}x  (goal: within 3x)")
    print(f"  gather, zero-inserted   {t_plain * 1e3:8.2f} ms   {t_plain / t_torch:.2f}x  (the teaching version)")
    print(f"  matrix (4 ch, 8x8)      {t_matrix * 1e3:8.2f} ms   (dense C, for teaching only)")
    worst = 0.0
    for view in fr.VIEW_NAMES:
        for st in (fr.Settings(), fr.Settings(4, 3, 2, 1, 1, 1), fr.Settings(6, 4, 2, 1, 0, 1)):
            step = fr.n_steps(st, view) - 1
            seconds = time_call(fr.frame_png, fr.make_frame(st, view, step), repeat=5)
            worst = max(worst, seconds)
            print(f"  frame {view:7s} n={st.in_size} k={st.kernel_size} s={st.stride}: {seconds * 1e3:6.1f} ms")
    print(f"slowest frame: {worst * 1e3:.1f} ms (goal: well under 200 ms)")
    return 0 if t_gather < 3 * t_torch else 2


if __name__ == "__main__":
    sys.exit(main())
