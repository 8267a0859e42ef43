"""torchrun/DDP support: process-group setup, sharding of batches, all-reduce of metric sums, rank-0 IO.

Launched as `torchrun --nproc_per_node=N -m cnnlab train RECIPE`: torchrun sets RANK/WORLD_SIZE/LOCAL_RANK.
Every rank draws the same seeded permutation; each takes every world-th sample of each global batch, so the
recipe's batch_size is the global batch size whatever the number of processes.
"""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn


def init_from_env() -> bool:
    """Join the process group torchrun describes (gloo on CPU, NCCL on GPUs); False when not under torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=timedelta(minutes=10))
    return True


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Only rank 0 writes run dirs, checkpoints, logs and reports."""
    return rank() == 0


def local_device() -> str:
    """cuda:LOCAL_RANK under torchrun with GPUs, else the recipe's own choice."""
    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if dist.is_initialized() and torch.cuda.is_available() else ""


def shard(idx: torch.Tensor) -> torch.Tensor:
    """This rank's part of a batch (or of a whole split for evaluation)."""
    return idx[rank()::world()] if world() > 1 else idx


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (metric counts, loss sums); identity in one process."""
    if world() == 1:
        return t
    backend_dev = "cuda" if dist.get_backend() == "nccl" else "cpu"
    out = t.to(backend_dev).clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(t.device)


def broadcast_str(value: str) -> str:
    """Rank 0's string on every rank (the run dir it created)."""
    if world() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def wrap(model: nn.Module, sync_batchnorm: bool) -> nn.Module:
    """DistributedDataParallel around the model when running under torchrun."""
    if world() == 1:
        return model
    if sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [torch.cuda.current_device()] if torch.cuda.is_available() else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP and/or torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
