"""Where and how tensors run: device choice, mixed precision, memory format, seeding."""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnlab.engine.distributed import is_main
from cnnlab.errors import ConfigError
from cnnlab.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Runtime:
    """Resolved execution settings for one run."""

    device: torch.device
    precision: str          # bf16 | fp16 | fp32
    channels_last: bool

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self):
        """bf16 autocast on CPU (AVX-512 BF16 makes convs ~3x faster), fp16/bf16 AMP on CUDA."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """fp16 needs loss scaling; bf16 and fp32 do not."""
        return torch.amp.GradScaler("cuda") if self.precision == "fp16" else None

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        """Move a float batch to the device in the run's memory format."""
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x


def resolve_runtime(device: str, precision: str, channels_last: bool) -> Runtime:
    """'auto' picks CUDA when present, else CPU; precision 'auto' is fp16 AMP on CUDA, bf16 on a CPU that has it."""
    if device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("train.device is 'cuda' but no CUDA device is available", "use train.device=auto")
    if precision == "auto":
        if dev.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_has_bf16() else "fp32"
    if precision == "fp16" and dev.type == "cpu":
        raise ConfigError("train.precision=fp16 is for CUDA", "use bf16 or fp32 on CPU")
    if dev.type == "cpu":
        reuse_freed_memory(True)
    return Runtime(dev, precision, channels_last)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc malloc.h)


@functools.cache
def _glibc_mallopt():
    """libc's mallopt, looked up once; None where the C library has none (musl and others)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return None


def reuse_freed_memory(on: bool) -> bool:
    """glibc malloc: keep freed blocks for the next step (on), or its default steady state (off); True if set.

    By default glibc maps large blocks straight from the kernel (above a threshold that grows to at most 32 MB)
    and trims free heap tops over twice that, so each training step page-faults (the kernel zeroes the pages)
    its activations again: measured 48-64k page faults and 0.16-0.25 s of kernel CPU per course U-Net step
    (6-8k and 0.02-0.04 s kept; images/s 1.12x median, peak memory +0-130 MB, benchmarks/scaling.py
    --glibc-default). CNNLAB_KEEP_FREED_MEMORY=0 leaves glibc as it is.
    """
    if not sys.platform.startswith("linux") or os.environ.get("CNNLAB_KEEP_FREED_MEMORY") == "0":
        return False
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    mib = 1 << 20
    mmap, trim = (1024 * mib, 1024 * mib) if on else (32 * mib, 64 * mib)
    # some glibc builds refuse a threshold above 32 MB (HEAP_MAX_SIZE / 2): take the cap there
    ok = mallopt(_M_MMAP_THRESHOLD, mmap) == 1 or mallopt(_M_MMAP_THRESHOLD, 32 * mib) == 1
    return ok and mallopt(_M_TRIM_THRESHOLD, trim) == 1


def cpu_has_bf16() -> bool:
    """AVX-512 BF16 / AMX support (oneDNN runs bf16 convs natively there; elsewhere bf16 is slow)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


DEFAULT_THREADS = torch.get_num_threads()  # before any run of this process changed it


def busy_cores(samples: int = 10, interval: float = 0.01, loadavg: Path = Path("/proc/loadavg")) -> int | None:
    """Cores other processes keep busy right now: runnable tasks in /proc/loadavg, fewest seen, minus this one.

    Instantaneous on purpose: the load average would also count this process's own previous run in a study.
    """
    import time

    seen = []
    for _ in range(samples):
        try:
            running = loadavg.read_text().split()[3].split("/")[0]
        except (OSError, IndexError):
            return None
        if not running.isdigit():
            return None
        seen.append(int(running))
        time.sleep(interval)
    return max(0, min(seen) - 1)


def choose_threads(requested: int) -> int:
    """torch's CPU thread count: as requested, else fewer than the default when other work fills the cores.

    Measured on a shared 2-core machine: a 2-thread training beside another job ran 5-40x slower than with one
    thread, because every op waits for the slowest thread. OMP_NUM_THREADS, when set, is the user's choice.
    """
    threads = requested or DEFAULT_THREADS
    if not requested and DEFAULT_THREADS > 1 and not os.environ.get("OMP_NUM_THREADS"):
        busy = busy_cores()
        free = max(1, (os.cpu_count() or 1) - busy) if busy is not None else threads
        if free < threads:
            if is_main():
                log.info(f"note: {busy} of {os.cpu_count()} cores busy with other work: training with {free} torch "
                         f"thread(s) instead of {threads} (set train.threads to choose)")
            threads = free
    torch.set_num_threads(threads)
    return threads
