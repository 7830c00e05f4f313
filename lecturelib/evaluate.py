"""Evaluate the course checkpoints on the test scenes: the numbers every lesson's claims rest on.

    python -m lecturelib.evaluate fcn8s                  # every shipped seed of FCN-8s, one JSON line each
    python -m lecturelib.evaluate fcn8s --seed 1 --json  # one seed
    python -m lecturelib.evaluate 06 --check             # a lesson; exit 1 if a checkpoint no longer
                                                         # reproduces its stored metrics (tolerance 1e-3)

A checkpoint is rebuilt from its own recipe and profile (:mod:`lecturelib.checkpoints`), on the same
test scenes it was measured on; the printed line holds ``model``, ``seed``, ``miou``, ``pixel_acc``,
``boundary_acc`` and the task's own metric where it differs (``psnr`` for the upsamplers,
``miou_by_iteration`` for the recurrent model, box AP ``ap50``, ``ap75`` and ``ap`` for lesson 07's detectors).

A run of ``python -m lecturelib.train`` (its folder, or its ``last.pt``) is evaluated with ``--run``:

    python -m lecturelib.evaluate --run runs/fcn8s                   # on the data it was validated on
    python -m lecturelib.evaluate --run runs/fcn8s --data test_data  # on every item of another folder

The model is rebuilt from the run's ``recipe.json``; the line holds ``model``, ``run``, ``data`` and the
metrics (with ``iou`` per class name for the semantic models).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn as nn

from . import checkpoints
from .datasets import DataFolder, folder_data
from .profiles import Profile
from .train import MODELS, models_of, test_scenes
from .training import CHECKPOINT, load_checkpoint
from .training import evaluate as evaluate_task

TOLERANCE = 1e-3
REPORTED = ("miou", "pixel_acc", "boundary_acc", "psnr", "miou_by_iteration", "ap50", "ap70", "ap75", "ap",
            "loc_acc", "box_iou", "class_acc",
            "exact_match", "item_acc", "exact_match_3plus", "item_acc_3plus", "attention_hit", "attention_chance",
            "accuracy", "window_iou", "centre_inside")


def recipe_of(info: dict):
    """The recipe a checkpoint was trained with, rebuilt by the lesson's code and checked against the stored one.

    Raises ValueError when the code's recipe no longer matches (the checkpoint is then stale: retrain it).
    """
    spec = MODELS[info["model"]]
    profile = Profile(**info["profile"])
    recipe = spec.recipe(profile)
    changes = {k: info["recipe"][k] for k in ("epochs", "batch_size", "lr")
               if info["recipe"].get(k) != getattr(recipe, k)}
    recipe = dataclasses.replace(recipe, **changes) if changes else recipe
    now = json.loads(json.dumps(dataclasses.asdict(recipe), default=str))
    if now != info["recipe"]:
        diff = {k: (info["recipe"].get(k), now.get(k)) for k in set(now) | set(info["recipe"])
                if now.get(k) != info["recipe"].get(k)}
        raise ValueError(f"course checkpoint {info['model']} seed {info['seed']} was trained with another recipe "
                         f"(stored vs code: {diff}); retrain it: {info['train']['command']}")
    return recipe, profile


def load_course_model(name: str, seed: int = 0, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The shipped, converged model ``name`` (a model of ``python -m lecturelib.train --list``) for ``seed``,
    in eval mode on ``device``, and its info (recipe, profile, training, stored metrics).

    Raises KeyError for an unknown model, and the errors of :func:`lecturelib.checkpoints.read` (naming the
    file and the command that retrains it) for a missing or corrupted checkpoint.
    """
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    state = checkpoints.read(name, seed)
    info = state["info"]
    recipe, _ = recipe_of(info)
    model = checkpoints.load_half_state_dict(MODELS[name].build(recipe), state["state_dict"])
    return model.to(device).eval(), info


@lru_cache(maxsize=4)
def _test_data(kind: str, eval_fraction: float, profile_items: tuple):
    """The test scenes of a checkpoint's profile (cached: the models of a lesson share them)."""
    return test_scenes(kind, eval_fraction, Profile(**dict(profile_items)))


def test_task(name: str, info: dict):
    """The task (with its test scenes) a checkpoint is evaluated on."""
    recipe, profile = recipe_of(info)
    spec = MODELS[name]
    test = _test_data(spec.data, spec.eval_fraction, tuple(sorted(profile.as_dict().items())))
    return spec.task(recipe, None, test, info["seed"])


def evaluate_course_model(name: str, seed: int = 0, device: str | torch.device = "cpu") -> dict:
    """Evaluate the shipped checkpoint now, on its test scenes: {"model", "seed", metrics..., "stored": {...}}."""
    model, info = load_course_model(name, seed, device)
    metrics = evaluate_task(model, test_task(name, info), device, batch_size=64)
    shown = {k: metrics[k] for k in REPORTED if k in metrics}
    return {"model": name, "seed": seed, **shown, "stored": {k: info["metrics"][k] for k in shown}}


def course_results(names, device: str | torch.device = "cpu") -> dict[str, list[dict]]:
    """Every shipped seed of each model in ``names``, evaluated now: {name: [result of seed 0, seed 1, ...]}.

    Raises FileNotFoundError naming the model when no checkpoint of it is shipped, and ValueError when a
    checkpoint no longer reproduces its stored metrics (the code changed: retrain it).
    """
    out = {}
    for name in names:
        seeds = checkpoints.stored_seeds(name)
        if not seeds:
            raise FileNotFoundError(f"no course checkpoint of {name!r} is shipped in data/checkpoints; train it: "
                                    f"{checkpoints.retrain_command(name, 0)}")
        out[name] = []
        for seed in seeds:
            result = evaluate_course_model(name, seed, device)
            bad = reproduces(result)
            if bad:
                raise ValueError(f"course checkpoint {name} seed {seed} no longer reproduces its stored metrics "
                                 f"({'; '.join(bad)}); the code changed since it was trained: retrain it")
            out[name].append(result)
    return out


def reproduces(result: dict, tolerance: float = TOLERANCE) -> list[str]:
    """The metrics of ``result`` that differ from the stored ones by more than ``tolerance`` (empty: all agree)."""
    bad = []
    for k, stored in result["stored"].items():
        now = result[k]
        pairs = zip(now, stored) if isinstance(now, list) else [(now, stored)]
        if any(not (math.isfinite(a) and abs(a - b) <= tolerance) for a, b in pairs):
            bad.append(f"{k}: now {now}, stored {stored}")
    return bad


# ============================================================================= runs of the command line
def rebuild(template, stored: dict):
    """A recipe dataclass like ``template`` with the values of ``stored`` (its ``dataclasses.asdict`` read back
    from JSON): lists become tuples where the field holds a tuple (or None), nested recipes are rebuilt."""
    values = {}
    for f in dataclasses.fields(template):
        if f.name not in stored:
            raise ValueError(f"the stored recipe lacks {f.name!r}; the code changed since the run: train it again")
        now, value = getattr(template, f.name), stored[f.name]
        if dataclasses.is_dataclass(now) and isinstance(value, dict):
            value = rebuild(now, value)
        elif isinstance(value, list) and (now is None or isinstance(now, tuple)):
            value = tuple(value)
        values[f.name] = value
    return dataclasses.replace(template, **values)


def load_run(run: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The model trained by a ``python -m lecturelib.train`` run, in eval mode on ``device``, and the run's
    ``recipe.json`` (model, recipe, profile and, for ``--data`` runs, the data).

    run: the run folder or a checkpoint file in it. Raises FileNotFoundError naming the missing file.
    """
    path = Path(run)
    folder, ckpt = (path.parent, path) if path.suffix == ".pt" else (path, path / CHECKPOINT)
    if not (folder / "recipe.json").is_file():
        raise FileNotFoundError(f"{folder / 'recipe.json'} does not exist; --run takes the folder of a run of "
                                "python -m lecturelib.train (its --out)")
    about = json.loads((folder / "recipe.json").read_text())
    if about.get("model") not in MODELS:
        raise KeyError(f"{folder / 'recipe.json'} names model {about.get('model')!r}, not one of {sorted(MODELS)}")
    spec = MODELS[about["model"]]
    recipe = rebuild(spec.recipe(Profile(**about["profile"])), about["recipe"])
    model = spec.build(recipe)
    load_checkpoint(ckpt, model)
    return model.to(device).eval(), {**about, "recipe_object": recipe}


def evaluate_run(run: str | Path, data: str | Path | None = None, device: str | torch.device = "cpu") -> dict:
    """Evaluate a run's model: on every item of folder ``data`` (same layout and settings as the run's own
    data), else on what the run was validated on (its folder's validation split, or the course test scenes).

    Returns {"model", "run", "data", metrics...}; ``iou`` maps class names to IoU for the semantic models.
    Raises ValueError when there is nothing to evaluate on.
    """
    model, about = load_run(run, device)
    spec, recipe = MODELS[about["model"]], about["recipe_object"]
    stored = about.get("data") or {}
    if data is None and not stored:
        test = test_scenes(spec.data, spec.eval_fraction, Profile(**about["profile"]))
        shown, names = "course test scenes", None
    else:
        keep = {k: stored[k] for k in ("class_names", "size", "binary", "val_fraction", "split_seed") if k in stored}
        if data is None:
            folder = DataFolder(Path(stored["root"]), stored["num_classes"], **keep)
        else:
            keep["val_fraction"] = 1                                   # every item of the other folder
            folder = DataFolder(Path(data), stored.get("num_classes", recipe.num_classes), **keep)
        _, test, facts = folder_data(spec.data, folder)
        shown, names = str(folder.root), facts["class_names"]
    if test is None:
        raise ValueError(f"no item to evaluate in {shown} (the run held out none: pass --data DIR)")
    metrics = evaluate_task(model, spec.task(recipe, None, test, 0), device, batch_size=16)
    out = {"model": about["model"], "run": str(run), "data": shown,
           **{k: metrics[k] for k in REPORTED if k in metrics}}
    if "iou" in metrics:
        out["iou"] = dict(zip(names or [str(c) for c in range(len(metrics["iou"]))], metrics["iou"]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lecturelib.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", nargs="?", help="a model or a lesson (see python -m lecturelib.train --list)")
    p.add_argument("--run", type=Path, help="evaluate a run of python -m lecturelib.train (its folder or last.pt)")
    p.add_argument("--data", type=Path, help="with --run: evaluate on every item of this folder")
    p.add_argument("--seed", type=int, help="one seed (default: every shipped seed)")
    p.add_argument("--json", action="store_true", help="print only the JSON lines")
    p.add_argument("--check", action="store_true", help="exit 1 unless every checkpoint reproduces its metrics")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if (args.run is None) == (args.target is None) or (args.data is not None and args.run is None):
        p.error("give a model or lesson (course checkpoints), or --run RUN [--data DIR]")
    if args.run is not None:
        try:
            print(json.dumps(evaluate_run(args.run, args.data, args.device)))
        except (KeyError, ValueError, FileNotFoundError) as exc:
            print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
            return 2
        return 0
    try:
        names = models_of(args.target)
        failures, done = [], 0
        for name in names:
            seeds = [args.seed] if args.seed is not None else checkpoints.stored_seeds(name)
            for seed in seeds:
                result = evaluate_course_model(name, seed, args.device)
                bad = reproduces(result)
                failures += [f"{name} seed {seed}: {b}" for b in bad]
                line = {k: v for k, v in result.items() if k != "stored"}
                print(json.dumps(line) if args.json else f"{json.dumps(line)}  {'ok' if not bad else 'DIFFERS'}")
                done += 1
    except (KeyError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    if not done:
        shipped = sorted(name for name in MODELS if checkpoints.stored_seeds(name))
        print(f"error: no course checkpoint of {args.target!r} is shipped; the shipped ones: {', '.join(shipped)}. "
              f"Train one: {checkpoints.retrain_command(names[0], 0)}", file=sys.stderr)
        return 2
    for f in failures:
        print(f"stale: {f}", file=sys.stderr)
    return 1 if failures and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
