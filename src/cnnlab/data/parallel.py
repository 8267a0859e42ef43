"""Decoding many files at once: a thread pool sized to the cores this process trains with.

Why threads: Pillow's decoders and numpy's copies release the GIL, so on N cores up to N files decode at once in
one process, with nothing pickled. Why in order with a bounded window: results come back in the file order of
the sequential loop (so errors name the same file and tensors are bit-identical), and only a few decoded
images wait at a time (1,000 native-size photos held at once would be a gigabyte before resizing).

The workers only decode (Pillow + numpy). Resizing with torch stays in the calling thread: every torch op runs
its own team of threads, and several teams at once on two cores spin against each other.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
import torch

THREADS_ENV = "CNNLAB_DECODE_THREADS"  # the user's (or a benchmark's) choice of decode threads; 1 = sequential
AHEAD_PER_WORKER = 4                    # decoded results allowed to wait per worker
T = TypeVar("T")
R = TypeVar("R")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity: taskset, cgroups' cpusets), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no sched_getaffinity
        return os.cpu_count() or 1


def decode_workers(requested: int | None = None) -> int:
    """Decode threads: `requested`, else CNNLAB_DECODE_THREADS, else the threads torch trains with.

    torch.get_num_threads() is what engine.runtime.choose_threads set before any data is read (fewer than the
    cores when other work keeps some busy), so decoding uses the cores training will use. Never more than the
    usable cores: threads beyond them only queue."""
    text = os.environ.get(THREADS_ENV, "").strip()
    if requested is None and text.isdigit() and int(text) > 0:
        requested = int(text)
    n = requested if requested else torch.get_num_threads()
    return max(1, min(int(n), usable_cores()))


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int | None = None) -> Iterator[R]:
    """fn over items, results in the items' order, decoded by `decode_workers(workers)` threads.

    One worker is the plain sequential loop (no thread at all). The first failing item (in order) raises its own
    error, as the sequential loop would; items not started yet are cancelled."""
    items = list(items)
    n = decode_workers(workers)
    if n <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(n, thread_name_prefix="cnnlab-decode")
    try:
        todo = iter(items)
        pending = deque(pool.submit(fn, item) for item in islice(todo, n * AHEAD_PER_WORKER))
        while pending:
            result = pending.popleft().result()
            for item in todo:  # refill one slot
                pending.append(pool.submit(fn, item))
                break
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def chw(arr: np.ndarray) -> np.ndarray:
    """H x W (x C) uint8 -> a contiguous, writable C x H x W copy, made by numpy in the worker (GIL released)
    instead of torch's permute().contiguous() in the calling thread (the same values, as common.to_chw)."""
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return arr if arr.flags.c_contiguous and arr.flags.writeable else np.array(arr, order="C")


def concat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """torch.cat(tensors) along the first axis, done as one numpy copy.

    Why: torch.cat over hundreds of small CPU tensors runs torch's thread team once per call; on a busy machine
    that cost seconds where numpy's single copy costs tens of milliseconds. The values are the same."""
    return torch.from_numpy(np.concatenate([t.numpy() for t in tensors]))
