"""Benchmark: the command-line trainer on this machine, per lesson model.

    python scripts/bench_training.py                        # the device's default profile, every model
    python scripts/bench_training.py --profile full --models fcn8s,deconvnet
    python scripts/bench_training.py --scaling-only --models fcn8s

For each model it trains the whole profile (``python -m lecturelib.train`` in a fresh process) and reports
from the run's ``metrics.jsonl``: training throughput (images/s over all epochs), the share of step time
spent waiting for data, the time to the model's target metric (``ModelSpec.target``: first epoch at or
above it, training time only) and the final metric. Then the scaling from 1 to 2 processes
(``torchrun --nproc_per_node 2``, the same global batch, a fixed number of steps): on a CPU the two
processes split the cores, on a multi-GPU machine each takes a GPU. And, for FCN-8s, the notebooks'
way of training (``lecturelib.training.fit`` in-process) on the same data as a baseline for the trainer's
overhead (no run folder, no per-epoch evaluation). Results go to ``<out>/bench.json`` and a markdown table on stdout.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lecturelib import train as T  # noqa: E402
from lecturelib.profiles import get_profile  # noqa: E402
from lecturelib.training import fit, read_metrics, train_config  # noqa: E402


def machine() -> str:
    cpu = f"{os.cpu_count()} CPU cores"
    if torch.cuda.is_available():
        names = {torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
        return f"{torch.cuda.device_count()} x {', '.join(sorted(names))}, {cpu}"
    return f"CPU only ({platform.processor() or platform.machine()}), {cpu}, torch {torch.__version__}"


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _env(threads: int | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_cli(name: str, profile: str, out: Path, nproc: int = 1, extra: list[str] | None = None,
            threads: int | None = None) -> tuple[list[dict], float]:
    """Train ``name`` in a fresh process (or ``nproc`` under torchrun); returns its records and wall seconds."""
    args = ["-m", "lecturelib.train", name, "--profile", profile, "--out", str(out), "--overwrite", "--no-progress",
            *(extra or [])]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *args]
    else:
        cmd = [sys.executable, *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(threads), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}")
    return read_metrics(out), wall


def summarise(name: str, records: list[dict], wall: float) -> dict:
    """One table row from a run's records: throughput, data wait, time to target, final metric."""
    metric, target = T.MODELS[name].target
    reached = next((r for r in records if r.get(metric) is not None and r[metric] >= target), None)
    last = records[-1]
    seconds = [r["train_seconds"] - (records[i - 1]["train_seconds"] if i else 0.0) for i, r in enumerate(records)]
    return {
        "model": name, "lesson": T.MODELS[name].lesson, "metric": metric, "target": target,
        "final": last.get(metric), "epochs": last["epoch"], "train_seconds": last["train_seconds"],
        "images_per_s": sum(r["images"] for r in records) / max(last["train_seconds"], 1e-9),
        "data_wait_share": sum(r["data_wait_share"] * s for r, s in zip(records, seconds)) / max(sum(seconds), 1e-9),
        "seconds_to_target": reached["train_seconds"] if reached else None,
        "wall_seconds": wall, "device": last["device"],
    }


def baseline_fit(profile_name: str) -> float:
    """Images/s of FCN-8s trained the notebook's way (``fit`` in this process, no run folder), one epoch."""
    profile = get_profile(profile_name)
    spec = T.MODELS["fcn8s"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    recipe = dataclasses.replace(spec.recipe(profile), epochs=1)
    data = T.scene_tensors(profile, "train", workers=profile.num_workers if device.type == "cuda" else 0)
    torch.manual_seed(0)
    model = spec.build(recipe)
    hist = fit(model, spec.task(recipe, data, None, 0), train_config(recipe, amp=profile.amp, progress=False), device)
    return hist.steps * recipe.batch_size / hist.seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default=None, help="quick or full (default: full on a GPU, quick on a CPU)")
    p.add_argument("--models", default="all", help="comma-separated model names, or 'all'")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    p.add_argument("--scaling-steps", type=int, default=32, help="steps of the 1- vs 2-process comparison")
    p.add_argument("--scaling-only", action="store_true", help="only the 1- vs 2-process comparison")
    p.add_argument("--no-scaling", action="store_true")
    args = p.parse_args(argv)
    profile = get_profile(args.profile).name
    names = list(T.MODELS) if args.models == "all" else [m.strip() for m in args.models.split(",")]
    for n in names:
        if n not in T.MODELS:
            p.error(f"unknown model {n!r}; choose from {sorted(T.MODELS)}")
    cores = os.cpu_count() or 1
    gpus = torch.cuda.device_count()
    report = {"machine": machine(), "profile": profile, "load_before": load_average(), "models": [], "scaling": []}
    print(f"machine: {report['machine']} | profile {profile} | load average before: {report['load_before']}",
          flush=True)

    if not args.scaling_only:
        for name in names:
            records, wall = run_cli(name, profile, args.out / profile / name)
            row = summarise(name, records, wall)
            report["models"].append(row)
            print(json.dumps(row), flush=True)
        fcn_rows = [r for r in report["models"] if r["model"] == "fcn8s"]
        if fcn_rows:
            report["baseline_fit_images_per_s"] = baseline_fit(profile)
            report["trainer_vs_fit"] = fcn_rows[0]["images_per_s"] / report["baseline_fit_images_per_s"]

    if not args.no_scaling:
        two_ok = gpus >= 2 or gpus == 0
        for name in names if two_ok else []:
            steps = ["--steps", str(args.scaling_steps), "--save-every", "0"]
            # on a CPU: 1 process with every core vs 2 processes with half the cores each
            one, _ = run_cli(name, profile, args.out / "scaling" / f"{name}_1", 1, steps,
                             threads=None if gpus else cores)
            two, _ = run_cli(name, profile, args.out / "scaling" / f"{name}_2", 2, steps,
                             threads=None if gpus else max(1, cores // 2))
            row = {"model": name, "steps": args.scaling_steps, "images_per_s_1": one[-1]["images_per_s"],
                   "images_per_s_2": two[-1]["images_per_s"], "rank_spread": two[-1].get("rank_spread")}
            row["speedup"] = row["images_per_s_2"] / row["images_per_s_1"]
            if not gpus and cores > 1:   # one process with one thread: what each of the two processes has
                single, _ = run_cli(name, profile, args.out / "scaling" / f"{name}_1t", 1, steps, threads=1)
                row["images_per_s_1_one_thread"] = single[-1]["images_per_s"]
            report["scaling"].append(row)
            print(json.dumps(row), flush=True)
        if not two_ok:
            print("scaling: one GPU only, 1 vs 2 processes not measured (needs 2 GPUs)")

    report["load_after"] = load_average()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench_{profile}.json"
    path.write_text(json.dumps(report, indent=2))
    print_table(report)
    print(f"written {path}")
    return 0


def print_table(report: dict) -> None:
    print(f"\n### {report['profile']} profile on {report['machine']} "
          f"(load average {report['load_before']} -> {report['load_after']})\n")
    if report["models"]:
        print("| model | lesson | images/s | data wait | train s | target | s to target | final |")
        print("|---|---|---|---|---|---|---|---|")
        for r in report["models"]:
            tt = f"{r['seconds_to_target']:.0f}" if r["seconds_to_target"] is not None else "not reached"
            final = f"{r['final']:.3f}" if r["final"] is not None else "n/a"
            print(f"| {r['model']} | {r['lesson']} | {r['images_per_s']:.0f} | {r['data_wait_share']:.1%} | "
                  f"{r['train_seconds']:.0f} | {r['metric']} >= {r['target']:g} | {tt} | {final} |")
    if "trainer_vs_fit" in report:
        print(f"\nFCN-8s: trainer {report['trainer_vs_fit']:.2f}x the images/s of the notebooks' train_one_epoch "
              f"({report['baseline_fit_images_per_s']:.0f} images/s)")
    if report["scaling"]:
        print("\n| model | 1 process images/s | 2 processes images/s | speed-up | 1 process, 1 thread |")
        print("|---|---|---|---|---|")
        for r in report["scaling"]:
            one_thread = r.get("images_per_s_1_one_thread")
            print(f"| {r['model']} | {r['images_per_s_1']:.0f} | {r['images_per_s_2']:.0f} | {r['speedup']:.2f}x | "
                  f"{f'{one_thread:.0f}' if one_thread else 'n/a'} |")


if __name__ == "__main__":
    sys.exit(main())
