"""Course checkpoints: the converged weights the lessons' claims rest on, shipped in ``data/checkpoints``.

Each model of ``python -m lecturelib.train --list`` that a lesson compares is trained once per seed with
its lesson's recipe and exported with ``--export``::

    python -m lecturelib.train fcn8s --profile course --seed 0 --export

which writes, under ``data/checkpoints/<model>/``:

- ``seed<k>.pt``: the weights in float16 (``weights_only``-loadable), the recipe and profile they were
  trained with, how (command, commit, machine, wall time, the loss of the first steps) and the test
  metrics *of the stored float16 weights*;
- ``seed<k>.json``: the same information without the weights, for people and tables;
- ``seed<k>.metrics.jsonl``: the training curve (one record per evaluation).

Every file is listed with its sha256 in ``data/MANIFEST``; a missing or changed file raises an error
naming it and the command that retrains it. :mod:`lecturelib.evaluate` rebuilds a model from its
checkpoint and re-checks the stored metrics.
"""
from __future__ import annotations

import dataclasses
import json
import platform
import subprocess
from pathlib import Path

import torch
import torch.nn as nn

from .assets import data_dir, data_file
from .training import evaluate, jsonable

FOLDER = "checkpoints"
FORMAT = 1


def relative_name(model: str, seed: int, suffix: str = ".pt") -> str:
    """The checkpoint's path inside ``data/``: ``checkpoints/<model>/seed<k><suffix>``."""
    return f"{FOLDER}/{model}/seed{int(seed)}{suffix}"


def retrain_command(model: str, seed: int, argv: list[str] | None = None) -> str:
    """The command that (re)makes a checkpoint: the stored one when known, else the course default."""
    if argv:
        return " ".join(argv)
    return f"python -m lecturelib.train {model} --profile course --seed {seed} --export"


def stored_seeds(model: str, folder: Path | None = None) -> list[int]:
    """The seeds of ``model`` with a shipped checkpoint (those listed in the manifest), sorted."""
    from .assets import read_manifest

    folder = Path(folder) if folder is not None else data_dir()
    prefix = f"{FOLDER}/{model}/seed"
    seeds = [name[len(prefix):-3] for name in read_manifest(folder) if name.startswith(prefix) and name.endswith(".pt")]
    return sorted(int(s) for s in seeds if s.isdigit())


def half_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with floating-point tensors in float16 (what is shipped), others unchanged."""
    return {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu().clone())
            for k, v in model.state_dict().items()}


def load_half_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Load float16 weights into ``model`` (converted to each parameter's own dtype); returns the model."""
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"the checkpoint does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}; "
                         "the model's code changed since it was trained: retrain it")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return model


def machine() -> str:
    """One line naming this machine: CPU or GPU model, cores, torch version."""
    import os

    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
        return f"{gpu}, {os.cpu_count()} CPU cores, torch {torch.__version__}"
    return (f"CPU only ({platform.processor() or platform.machine()}), {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}")


def current_commit() -> str:
    """The git commit of the code that trains (``unknown`` outside a git checkout); ``+dirty`` if modified."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "lecturelib"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def write(model_name: str, seed: int, model: nn.Module, info: dict, curve: list[dict],
          folder: Path | None = None) -> Path:
    """Write ``seed<k>.pt`` (float16 weights + ``info``), ``seed<k>.json`` and ``seed<k>.metrics.jsonl``.

    ``info`` holds plain values: recipe, profile, train (command, commit, machine, seconds, first losses)
    and metrics (measured on the float16 weights). Returns the ``.pt`` path. The manifest is not
    rewritten here: run ``python -m lecturelib.assets --write-manifest`` once all checkpoints are in.
    """
    folder = Path(folder) if folder is not None else data_dir()
    path = folder / relative_name(model_name, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = jsonable({"format": FORMAT, "model": model_name, "seed": int(seed), **info})
    torch.save({"state_dict": half_state_dict(model), "info": info}, path)
    path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    path.with_name(path.stem + ".metrics.jsonl").write_text("".join(json.dumps(jsonable(r)) + "\n" for r in curve))
    return path


def export(model_name: str, seed: int, model: nn.Module, task, recipe, profile, history, command: str,
           wall_seconds: float, device: str | torch.device = "cpu", folder: Path | None = None) -> Path:
    """Round a trained model to float16, measure it on the task's test set *as stored*, and :func:`write` it.

    ``history`` is the :class:`lecturelib.training.History` of the run (curve, first losses, seconds).
    """
    load_half_state_dict(model, half_state_dict(model))          # the metrics are those of the shipped weights
    metrics = evaluate(model, task, device, batch_size=64)
    info = {"recipe": dataclasses.asdict(recipe), "profile": profile.as_dict(), "metrics": metrics,
            "train": {"command": command, "commit": current_commit(), "machine": machine(),
                      "wall_seconds": wall_seconds, "train_seconds": history.seconds, "steps": history.steps,
                      "first_losses": history.first_losses}}
    info = json.loads(json.dumps(jsonable(info), default=str))
    return write(model_name, seed, model, info, history.records, folder)


def read(model_name: str, seed: int, folder: Path | None = None) -> dict:
    """The shipped checkpoint of ``model_name`` / ``seed``, sha256-verified: {"state_dict", "info"}.

    Raises FileNotFoundError / ValueError / KeyError naming the file and the command that retrains it
    when it is missing, corrupted or not listed in ``data/MANIFEST``.
    """
    name = relative_name(model_name, seed)
    try:
        path = data_file(name, folder)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        msg = exc.args[0] if exc.args else str(exc)
        raise type(exc)(f"course checkpoint {name}: {msg}. To make it again: {retrain_command(model_name, seed)} "
                        "&& python -m lecturelib.assets --write-manifest") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("info", {}).get("format") != FORMAT:
        raise ValueError(f"{path} is not a course checkpoint of format {FORMAT}; retrain it with "
                         f"{retrain_command(model_name, seed)}")
    return state
