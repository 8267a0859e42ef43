"""What a benchmark ran on: the CPU's model and vector/matrix flags, the precision and memory format cnnlab's
side uses there, and the matmul peaks that CPU (or GPU) has natively.

Why it matters: oneDNN runs bf16 convolutions natively only with AVX512_BF16 or AMX; on an AVX2-only CPU cnnlab
falls back to fp32, and a bf16 matmul there is emulated at about 1.2 GFLOP/s (a 2048-cubed one took ~14 s, which
once kept train_speed.py silent for over 10 minutes). Every script prints `machine_line` first and stores
`machine()` in its --json output, so a number is never read against the wrong kind of CPU.
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

from course_baseline import sync

_SEEN: dict = {}  # the last announce(): what write_json records beside the numbers


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """The CPU's model name and the flags that decide cnnlab's CPU kernels (None where they cannot be read).

    The one place benchmarks read CPU flags. Whether bf16 is native comes from cnnlab's own test
    (cnnlab.engine.runtime.cpu_has_bf16), so the benchmark and the runtime's choice of precision always agree.
    """
    from cnnlab.engine.runtime import cpu_has_bf16

    model, flags = None, None
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model is None:
                model = value.strip()
            elif key.strip() in ("flags", "Features") and flags is None:
                flags = set(value.split())
    except OSError:
        pass  # not Linux: flags unknown, the model from platform
    model = model or platform.processor() or platform.machine()

    def has(*names: str) -> bool | None:
        return None if flags is None else any(n in flags for n in names)

    return {"model": model, "avx2": has("avx2"), "avx512": has("avx512f"), "avx512_bf16": has("avx512_bf16"),
            "amx": has("amx_bf16", "amx_tile"), "bf16_native": cpu_has_bf16(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def cnnlab_setting(device: str = "auto", precision: str = "auto", channels_last: bool = True) -> dict:
    """Device, precision and memory format cnnlab's side resolves to here (cnnlab's own resolve_runtime)."""
    from cnnlab.engine.runtime import resolve_runtime

    rt = resolve_runtime(device, precision, channels_last)
    return {"device": str(rt.device), "precision": rt.precision,
            "memory_format": "channels_last" if rt.channels_last else "NCHW (contiguous)"}


def machine_line(cpu: dict, side: dict) -> str:
    """'cpu: AMD EPYC | AVX2 yes, AVX-512 no, AVX512_BF16 no, AMX no | cnnlab side: cpu fp32 channels_last'."""
    word = {True: "yes", False: "no", None: "unknown"}
    flags = ", ".join(f"{name} {word[cpu[key]]}" for name, key in
                      (("AVX2", "avx2"), ("AVX-512", "avx512"), ("AVX512_BF16", "avx512_bf16"), ("AMX", "amx")))
    line = (f"cpu: {cpu['model']} | {flags} (torch kernels: {cpu['torch_cpu_capability']}) | cnnlab side: "
            f"{side['device']} {side['precision']} {side['memory_format']}")
    if side["device"] == "cpu" and not cpu["bf16_native"]:
        line += " (no native bf16 here: fp32, and % of peak is of the fp32 matmul peak)"
    if side["device"].startswith("cuda"):
        line += f" | gpu: {torch.cuda.get_device_name(0)}"
    return line


def announce(args) -> dict:
    """Print the machine line at a script's start (not in its child probes) and keep it for write_json."""
    cpu = cpu_info()
    side = cnnlab_setting(getattr(args, "device", "auto"), getattr(args, "precision", "auto"), True)
    _SEEN.update(cpu=cpu, cnnlab_side=side)
    if not getattr(args, "probe", None):
        print(machine_line(cpu, side), flush=True)
    return dict(_SEEN)


def machine() -> dict:
    """The CPU and cnnlab side this process announced (or reads them now, at cnnlab's defaults)."""
    if not _SEEN:
        _SEEN.update(cpu=cpu_info(), cnnlab_side=cnnlab_setting())
    return dict(_SEEN)


def environment() -> dict:
    """What the numbers were measured on."""
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
           "cuda": torch.cuda.is_available(), "load_avg_1min": os.getloadavg()[0]}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def bf16_native(device: torch.device) -> bool:
    """bf16 matrix units present: CUDA's own test on a GPU, cnnlab's (AVX512_BF16 / AMX) on a CPU."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    from cnnlab.engine.runtime import cpu_has_bf16
    return cpu_has_bf16()


def matmul_gflops(dtype: torch.dtype, device: torch.device, n: int | None = None, reps: int = 5) -> float:
    """Best GFLOP/s of an n x n x n torch.matmul in dtype (the machine's practical dense peak)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.matmul(a, b)  # warm-up: kernel selection, page faults
    sync(device)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def peak_sample(device: torch.device) -> dict:
    """The matmul peaks this device has natively, one sample each (taken once per round, beside the sides).

    fp32 always; bf16 only where it is native: emulated bf16 is ~100x slower than fp32 on an AVX2 CPU, and no
    cnnlab side runs bf16 there, so it would measure nothing anyone uses.
    """
    out = {"fp32_gflops": matmul_gflops(torch.float32, device)}
    if bf16_native(device):
        out["bf16_gflops"] = matmul_gflops(torch.bfloat16, device)
    return out
