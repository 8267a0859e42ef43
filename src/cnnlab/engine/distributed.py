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


def prepare(model: nn.Module, sync_batchnorm: bool) -> nn.Module:
    """The module DDP will wrap: BatchNorm layers become SyncBatchNorm when asked (under torchrun only)."""
    if world() > 1 and sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def ddp(model: nn.Module) -> nn.Module:
    """DistributedDataParallel over the parameters that require grad now; the plain model in one process.

    DDP fixes the set of parameters it all-reduces when it is built and then waits for a gradient of each one, so a
    model whose encoder is frozen for the first epochs is wrapped again whenever that set changes (trainable_key):
    a wrapper built before freezing fails with "Expected to have finished reduction"; one built while frozen
    would never reduce the unfrozen encoder's gradients.
    """
    if world() == 1:
        return model
    ids = [torch.cuda.current_device()] if torch.cuda.is_available() else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def trainable_key(model: nn.Module) -> tuple[bool, ...]:
    """Which parameters require grad: when this changes, a DDP wrapper must be rebuilt (see ddp)."""
    return tuple(p.requires_grad for p in model.parameters())


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
