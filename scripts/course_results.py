"""The results table of the course checkpoints, from the files shipped beside them (no evaluation).

    python scripts/course_results.py            # markdown table for the README

Reads ``data/checkpoints/<model>/seed<k>.json`` (written by ``python -m lecturelib.train ... --export``)
and prints, per model: lesson, seeds, the test metrics as mean ± std over seeds, the training time per
seed, the machine and the size of one checkpoint file. ``python -m lecturelib.evaluate MODEL --check``
re-measures the metrics themselves.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lecturelib import checkpoints  # noqa: E402
from lecturelib.assets import data_dir  # noqa: E402
from lecturelib.claims import fmt, mean_std  # noqa: E402
from lecturelib.train import MODELS  # noqa: E402


def rows() -> list[dict]:
    out = []
    for name, spec in MODELS.items():
        seeds = checkpoints.stored_seeds(name)
        if not seeds:
            continue
        infos = [json.loads((data_dir() / checkpoints.relative_name(name, s, ".json")).read_text()) for s in seeds]
        metrics = [i["metrics"] for i in infos]
        if spec.lesson == "07" and "ap50" in metrics[0]:   # the detectors: box AP at IoU 0.5 and COCO AP@[.5:.95]
            main = (f"box AP@0.5 {fmt([m['ap50'] for m in metrics])}, "
                    f"AP@[.5:.95] {fmt([m['ap'] for m in metrics])}")
        else:
            key, label, digits = next(((k, lab, d) for k, lab, d in (("psnr", "PSNR (dB)", 2),
                                                                     ("ap50", "AP^r@0.5", 3),
                                                                     ("loc_acc", "localization accuracy", 3),
                                                                     ("exact_match", "caption exact match", 3),
                                                                     ("accuracy", "accuracy", 3))
                                       if k in metrics[0]), ("miou", "mIoU", 3))
            main = f"{label} {fmt([m[key] for m in metrics], digits)}"
        row = {"model": name, "lesson": spec.lesson, "seeds": len(seeds), "main": main,
               "pixel_acc": fmt([m["pixel_acc"] for m in metrics]) if "pixel_acc" in metrics[0] else "-",
               "boundary_acc": fmt([m["boundary_acc"] for m in metrics]) if "boundary_acc" in metrics[0] else "-",
               "minutes": mean_std([i["train"]["wall_seconds"] / 60 for i in infos])[0],
               "size_kib": (data_dir() / checkpoints.relative_name(name, seeds[0])).stat().st_size / 1024,
               # a recipe of its own (the localizer: one-item windows) says its own size and count
               "image": infos[0]["recipe"].get("window", infos[0]["profile"]["image_size"]),
               "n_train": infos[0]["recipe"].get("n_train", infos[0]["profile"]["n_train"]),
               "hours": sum(i["train"]["wall_seconds"] for i in infos) / 3600, "machine": infos[0]["train"]["machine"]}
        out.append(row)
    return out


def main() -> int:
    table = rows()
    if not table:
        print("no course checkpoint is shipped", file=sys.stderr)
        return 1
    print("| model | lesson | seeds | test metric (mean ± std) | pixel acc | boundary acc | training scenes | "
          "training min / seed | file KiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['model']} | {r['lesson']} | {r['seeds']} | {r['main']} | {r['pixel_acc']} | {r['boundary_acc']} | "
              f"{r['n_train']} x {r['image']} px | {r['minutes']:.1f} | {r['size_kib']:.0f} |")
    machines = sorted({r["machine"] for r in table})
    total = sum(p.stat().st_size for p in (data_dir() / checkpoints.FOLDER).rglob("*") if p.is_file())
    print(f"\nTrained on: {'; '.join(machines)}. Training time of all checkpoints: "
          f"{sum(r['hours'] for r in table):.1f} h of runs. Total shipped: {total / 2**20:.1f} MiB.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
