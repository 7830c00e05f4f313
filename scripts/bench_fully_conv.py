"""Benchmark: one fully convolutional pass against the per-pixel patch loop on one 128x128 image.

    python scripts/bench_fully_conv.py [--profile quick] [--patch-size 38] [--size 128] [--strict]

Both are timed in the same run on the same image (a course test scene of that size), with the
lesson's patch CNN (lesson 01/02 sizes from the profile; timing does not depend on the weights).
Prints the measured speed-up beside the theoretical ratio of multiply-adds. The goal is at least
100x on a 128x128 image on a 2-core CPU; --strict makes the script exit with status 1 below it.
"""
from __future__ import annotations

import argparse
import sys

import torch

from lecturelib import fully_conv, get_profile, patch
from lecturelib.scenes import NUM_CLASSES, CourseScenes
from lecturelib.training import time_call

GOAL = 100.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick", help="profile whose lesson sizes to use (default quick)")
    parser.add_argument("--patch-size", type=int, default=None, help="default: the lesson's largest patch")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of the loop; the best one counts")
    parser.add_argument("--strict", action="store_true", help=f"exit 1 if the speed-up is below {GOAL:.0f}x")
    args = parser.parse_args(argv)

    device = torch.device("cpu")
    cfg = patch.PatchLessonConfig.from_profile(get_profile(args.profile))
    P = args.patch_size or cfg.patch_sizes[-1]
    torch.manual_seed(0)
    classifier = patch.patch_cnn(cfg.model_config(P, NUM_CLASSES)).eval()
    fcn = fully_conv.to_fully_convolutional(classifier, P)
    _, stride = fully_conv.receptive_field(fcn)
    image = CourseScenes("test", 1, size=args.size).tensors()[0][0]          # (3, S, S)

    # the same image both ways; check they agree before timing them
    loop = patch.dense_scores_by_patches(classifier, image, P, device)
    one_pass = fully_conv.coarse_scores(fcn, image, P)
    diff = (one_pass - loop[:, ::stride, ::stride]).abs().max().item()
    if diff > 1e-4:
        print(f"error: the FCN differs from the patch loop by {diff:.3g}", file=sys.stderr)
        return 1

    t_loop = time_call(patch.dense_scores_by_patches, classifier, image, P, device, repeat=args.repeat)
    t_fcn = time_call(fully_conv.coarse_scores, fcn, image, P, repeat=20)
    t_stitch = time_call(fully_conv.shift_and_stitch, fcn, image, P, stride, repeat=5)
    S = args.size
    macs_loop = S * S * fully_conv.count_macs(classifier, (3, P, P))
    macs_fcn = fully_conv.count_macs(fcn, (3, S + P - 1, S + P - 1))
    macs_stitch = sum(fully_conv.count_macs(fcn, (3, S + P - 1 - dy, S + P - 1 - dx))
                      for dy in range(stride) for dx in range(stride))
    speedup = t_loop / t_fcn

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, profile {args.profile}, patch {P}, "
          f"stride {stride}, image {S}x{S}")
    print(f"max |FCN - loop| at the window positions: {diff:.2e}")
    print(f"{'method':<28} {'time':>10} {'GMAC':>8} {'speed-up':>9} {'MAC ratio':>10}")
    print(f"{'per-pixel loop':<28} {t_loop * 1e3:>8.1f}ms {macs_loop / 1e9:>8.3f} {1:>8.0f}x {1:>9.0f}x")
    print(f"{'one FCN pass (stride ' + str(stride) + ')':<28} {t_fcn * 1e3:>8.1f}ms {macs_fcn / 1e9:>8.3f} "
          f"{speedup:>8.0f}x {macs_loop / macs_fcn:>9.0f}x")
    print(f"{'shift-and-stitch (' + str(stride ** 2) + ' passes)':<28} {t_stitch * 1e3:>8.1f}ms "
          f"{macs_stitch / 1e9:>8.3f} {t_loop / t_stitch:>8.0f}x {macs_loop / macs_stitch:>9.0f}x")
    verdict = "meets" if speedup >= GOAL else "BELOW"
    print(f"speed-up of one pass {speedup:.0f}x {verdict} the goal of {GOAL:.0f}x")
    return 1 if args.strict and speedup < GOAL else 0


if __name__ == "__main__":
    sys.exit(main())
