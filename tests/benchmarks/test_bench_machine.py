"""The benchmarks' machine report: CPU flags read once, bf16 peaks sampled only where bf16 is native, and
"% of peak" against the fp32 peak on a CPU without it (an emulated bf16 matmul once stalled train_speed.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import common  # noqa: E402
import machine  # noqa: E402

AVX2_ONLY = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx f16c fma avx2 bmi2\n\n" \
            "processor\t: 1\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx f16c fma avx2 bmi2\n"
SAPPHIRE = "model name\t: Intel Xeon Platinum 8480+\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"


@pytest.mark.parametrize("text, expected", [
    (AVX2_ONLY, {"model": "AMD EPYC 7B13", "avx2": True, "avx512": False, "avx512_bf16": False, "amx": False}),
    (SAPPHIRE, {"model": "Intel Xeon Platinum 8480+", "avx2": True, "avx512": True, "avx512_bf16": True,
                "amx": True}),
])
def test_cpu_info_reads_model_and_flags(tmp_path: Path, text: str, expected: dict):
    f = tmp_path / "cpuinfo"
    f.write_text(text)
    info = machine.cpu_info(f)
    assert {k: info[k] for k in expected} == expected


def test_cpu_info_without_cpuinfo_says_unknown(tmp_path: Path):
    info = machine.cpu_info(tmp_path / "absent")
    assert info["avx2"] is None and info["avx512_bf16"] is None and info["model"]


@pytest.mark.parametrize("native", [False, True])
def test_peak_sample_takes_bf16_only_where_native(monkeypatch, native: bool):
    import cnnlab.engine.runtime as runtime

    asked = []
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: native)
    monkeypatch.setattr(machine, "matmul_gflops", lambda dtype, device: asked.append(dtype) or 1.0)
    peaks = machine.peak_sample(torch.device("cpu"))
    assert asked == ([torch.float32, torch.bfloat16] if native else [torch.float32])
    assert set(peaks) == ({"fp32_gflops", "bf16_gflops"} if native else {"fp32_gflops"})


def test_without_bf16_the_step_is_reported_against_the_fp32_peak(monkeypatch, capsys):
    monkeypatch.setattr(common, "peak_sample", lambda device: {"fp32_gflops": 100.0})
    side = lambda steps: {"seconds": 2.0, "images": 4 * steps, "data_seconds": 0.5}  # noqa: E731
    result = common.compare_sides({"a": side}, rounds=2, steps=1, warmup=0, device=torch.device("cpu"),
                                  flops_per_image=10e9)
    s = result["sides"]["a"]
    # 2 images/s x 10 GFLOP per image = 20 GFLOP/s = 20% of the 100 GFLOP/s fp32 peak
    assert s["images_per_s"]["median"] == pytest.approx(2.0)
    assert s["frac_fp32_peak"]["median"] == pytest.approx(0.2)
    assert "frac_bf16_peak" not in s and set(result["peaks"]) == {"fp32_gflops"}
    common.print_comparison(result, "a")
    out = capsys.readouterr().out
    assert "% fp32 peak" in out and "% bf16 peak" not in out and "bf16 not sampled" in out


def test_machine_line_names_flags_and_the_fp32_fallback():
    cpu = {"model": "AMD EPYC", "avx2": True, "avx512": False, "avx512_bf16": False, "amx": False,
           "bf16_native": False, "torch_cpu_capability": "AVX2"}
    line = machine.machine_line(cpu, {"device": "cpu", "precision": "fp32", "memory_format": "channels_last"})
    assert "AVX2 yes, AVX-512 no, AVX512_BF16 no, AMX no" in line
    assert "cpu fp32 channels_last" in line and "fp32 matmul peak" in line
