"""Data-parallel training with ``torch.distributed``: the few pieces a training loop needs.

Launch one process per GPU (or per CPU share) with PyTorch's own launcher::

    torchrun --nproc_per_node 2 -m lecturelib.train fcn8s --profile full

``torchrun`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init_distributed` reads them and joins the process group
(NCCL on GPUs, gloo on CPUs). Without those variables everything here degrades
to a single process: the same training code runs under ``python -m`` and under
``torchrun``.

The pieces:

- :class:`DistInfo`: rank, world size, device of this process;
- :func:`wrap_model`: ``DistributedDataParallel`` (gradients averaged across ranks
  during ``backward``); :func:`unwrap` gives the plain model back;
- :class:`ResumableSampler`: ``DistributedSampler`` (each rank a disjoint share of a
  shuffled order fixed by seed and epoch) that can skip what a run already consumed;
- :func:`shard`: each rank's share of an evaluation set, without the padding
  ``DistributedSampler`` adds, so reduced metrics count every image exactly once;
- :func:`all_reduce_sum`, :func:`reduce_confusion`, :func:`gather_objects`: metrics
  computed on every rank's share and summed;
- :func:`barrier` and :func:`is_main`: rank 0 alone writes checkpoints and logs.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DistributedSampler, Subset

from .session import choose_device

ENV_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None          # "nccl", "gloo", or None for a single process
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer (torchrun sets it)") from None


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA devices, gloo for the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_distributed(device: str | torch.device = "auto") -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment, or run alone.

    device: "auto" (CUDA if visible, else CPU), "cpu" or "cuda". Under torchrun with CUDA each
    process takes GPU ``LOCAL_RANK``. Returns this process's :class:`DistInfo`.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world < 1 or not (0 <= rank < world):
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world} are inconsistent; launch with torchrun")
    device = choose_device(device)
    if device.type == "cuda":
        n_gpus = torch.cuda.device_count()
        if local_rank >= n_gpus:
            raise ValueError(f"LOCAL_RANK={local_rank} but this machine has {n_gpus} GPU(s); "
                             f"use --nproc_per_node {n_gpus} or fewer")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world == 1:
        return DistInfo(0, 0, 1, None, device)
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise ValueError(f"WORLD_SIZE={world} but {missing} are not set; launch with torchrun, which sets them")
    backend = backend_for(device)
    if not dist.is_initialized():
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, rank=rank, world_size=world, **kwargs)
    return DistInfo(rank, local_rank, world, backend, device)


def cleanup(info: DistInfo) -> None:
    """Leave the process group (call once at the end of training)."""
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait until every rank reaches this point (no-op for a single process)."""
    if info.distributed:
        if info.backend == "nccl":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def is_main(info: DistInfo) -> bool:
    return info.is_main


# ----------------------------------------------------------------------------- the model
def wrap_model(model: nn.Module, info: DistInfo, *, sync_batchnorm: bool = False,
               find_unused_parameters: bool = False) -> nn.Module:
    """``DistributedDataParallel(model)`` when there are several ranks, else ``model`` unchanged.

    The model must already be on ``info.device``. DDP broadcasts rank 0's parameters and buffers at
    construction, averages gradients across ranks in ``backward`` and (by default) re-broadcasts
    rank 0's buffers (BatchNorm statistics) before every forward, so all ranks hold identical weights.
    ``sync_batchnorm`` (CUDA only) computes BatchNorm statistics over the global batch.
    """
    if not info.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if sync_batchnorm:
        if info.device.type != "cuda":
            raise ValueError("sync_batchnorm needs CUDA devices (SyncBatchNorm has no CPU kernel); drop --sync-bn")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if info.device.type == "cuda":
        return DDP(model, device_ids=[info.device.index], output_device=info.device.index,
                   find_unused_parameters=find_unused_parameters)
    return DDP(model, find_unused_parameters=find_unused_parameters)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DDP and/or ``torch.compile`` wrappers (what a checkpoint should hold)."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module                # DistributedDataParallel
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod             # torch.compile's OptimizedModule
        else:
            return model


# ----------------------------------------------------------------------------- data
class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` that can start an epoch part-way: ``set_epoch(epoch, skip=k)`` drops this
    rank's first ``k`` samples of the epoch (those a resumed run already trained on).

    The order of epoch e depends only on (seed, e), so a resumed run sees exactly the samples the
    interrupted run would have seen next.
    """

    def __init__(self, dataset, info: DistInfo, *, shuffle: bool = True, seed: int = 0, drop_last: bool = True):
        super().__init__(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        super().set_epoch(epoch)
        if skip < 0:
            raise ValueError(f"skip must be >= 0 samples, got {skip}")
        self.skip = int(skip)

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self) -> int:
        return max(0, super().__len__() - self.skip)


def shard(dataset, info: DistInfo):
    """This rank's share of an evaluation set: items ``rank, rank + world, ...`` (no padding, no repeats)."""
    if not info.distributed:
        return dataset
    return Subset(dataset, range(info.rank, len(dataset), info.world_size))


# ----------------------------------------------------------------------------- reductions
def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over all ranks (returns a new CPU tensor; the input is not changed).

    NCCL reduces CUDA tensors only, so the tensor travels through ``info.device``.
    """
    if not info.distributed:
        return tensor.detach().clone()
    t = tensor.detach().to(info.device, copy=True)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu()


def reduce_sums(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Sum a dict of numbers (e.g. loss totals and counts) over all ranks; float64 throughout."""
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    t = all_reduce_sum(t, info)
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def reduce_confusion(cm, info: DistInfo):
    """Sum a :class:`lecturelib.metrics.ConfusionMatrix` over all ranks, in place; returns it."""
    cm.mat.copy_(all_reduce_sum(cm.mat, info))
    return cm


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank: ``[obj_rank0, obj_rank1, ...]``."""
    if not info.distributed:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_buffers(model: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (e.g. BatchNorm running statistics) to every rank, in place.

    DDP re-broadcasts them before each training forward, but each rank's last forward then updates
    its own copy with its own batch: call this before evaluating or saving.
    """
    if not info.distributed:
        return
    for buf in model.buffers():
        t = buf.detach().to(info.device)
        dist.broadcast(t, src=0)
        if t.data_ptr() != buf.data_ptr():
            buf.copy_(t)


@torch.no_grad()
def parameter_spread(model: nn.Module, info: DistInfo) -> float:
    """Largest |parameter - rank 0's parameter| over all parameters and ranks (0.0 when DDP kept them in step)."""
    if not info.distributed:
        return 0.0
    worst = torch.zeros((), dtype=torch.float64)
    for p in model.parameters():
        ref = p.detach().clone()
        dist.broadcast(ref, src=0)
        worst = torch.maximum(worst, (p.detach() - ref).abs().max().double().cpu())
    t = worst.to(info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)
