"""CUDA paths (fp32 and fp16 AMP training, GradScaler resume, predict, TorchScript export) against the CPU.

Skipped where torch sees no CUDA device; `benchmarks/device_check.sh` runs them on a GPU machine
(`python -m pytest -m cuda tests/engine/test_cuda.py`). Comparisons switch TF32 off: with it, cuDNN convolutions round
inputs to 10 mantissa bits and no fp32 tolerance would tell a real bug from TF32's own error.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.config import recipe_from_dict
from conftest import tiny_recipe

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch sees none)")]


def _set_exact(on: bool) -> dict:
    """IEEE fp32 matmuls/convolutions and deterministic cuDNN algorithms (on), returning what was set before."""
    b = torch.backends
    before = {"deterministic": b.cudnn.deterministic, "benchmark": b.cudnn.benchmark}
    new_api = hasattr(b.cudnn, "conv") and hasattr(b.cudnn.conv, "fp32_precision")  # torch >= 2.9
    if new_api:
        before.update(conv=b.cudnn.conv.fp32_precision, matmul=b.cuda.matmul.fp32_precision)
        b.cudnn.conv.fp32_precision = b.cuda.matmul.fp32_precision = "ieee" if on else "tf32"
    else:
        before.update(conv=b.cudnn.allow_tf32, matmul=b.cuda.matmul.allow_tf32)
        b.cudnn.allow_tf32 = b.cuda.matmul.allow_tf32 = not on
    b.cudnn.deterministic, b.cudnn.benchmark = on, False
    return before


@pytest.fixture
def exact_cuda():
    before = _set_exact(True)
    yield
    b = torch.backends
    b.cudnn.deterministic, b.cudnn.benchmark = before["deterministic"], before["benchmark"]
    if hasattr(b.cudnn, "conv") and hasattr(b.cudnn.conv, "fp32_precision"):
        b.cudnn.conv.fp32_precision, b.cuda.matmul.fp32_precision = before["conv"], before["matmul"]
    else:
        b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32 = before["conv"], before["matmul"]


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _train(root: Path, out: Path, **train) -> Path:
    from cnnlab.engine.run import train as run_train

    return run_train(recipe_from_dict(tiny_recipe(root, out, train={"progress": False, **train})))


def test_fp32_training_step_on_cuda_matches_cpu(endovis_root: Path, tmp_path: Path, exact_cuda):
    """One plain-SGD step (no momentum: the step is lr x gradient) from the same seed on each device.

    A third CPU run with lr=1e-12 gives the starting weights, so the check also proves the step moved them far
    more than the tolerance allows the devices to differ.
    """
    from cnnlab.engine.checkpoint import load_checkpoint

    def one_step(dev: str, lr: float) -> dict:
        raw = tiny_recipe(endovis_root, tmp_path / f"{dev}{lr}", optim={"name": "sgd", "lr": lr, "momentum": 0.0},
                          train={"epochs": 1, "max_steps_per_epoch": 1, "precision": "fp32", "device": dev,
                                 "progress": False})
        from cnnlab.engine.run import train as run_train
        run = run_train(recipe_from_dict(raw))
        assert _summary(run)["device"].split(":")[0] == dev
        return load_checkpoint(run / "last.pt")

    cpu, gpu, start = one_step("cpu", 0.5), one_step("cuda", 0.5), one_step("cpu", 1e-12)
    loss = [ck["state"]["history"][0]["train_loss"] for ck in (cpu, gpu)]
    assert loss[1] == pytest.approx(loss[0], rel=1e-5)
    moved = 0.0
    for name, w in cpu["model"].items():
        if w.is_floating_point():
            torch.testing.assert_close(gpu["model"][name], w, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
            if name.endswith("weight"):
                moved = max(moved, float((w - start["model"][name]).abs().max()))
    assert moved > 1e-2  # 1000x the tolerance: the devices agree on a real step


def test_fp16_gradscaler_resume_is_exact(endovis_root: Path, tmp_path: Path, exact_cuda, monkeypatch):
    """2 epochs in one go vs 1 epoch + resume, fp16 AMP: same metrics, weights and loss scale.

    The scaler grows its scale after every good step here (growth_interval=1), so a resume that forgot the
    checkpointed scale would end on another scale (and, after overflows, other weights).
    """
    from cnnlab.engine.checkpoint import load_checkpoint
    from cnnlab.engine.run import resume
    from cnnlab.engine.runtime import Runtime

    init_scale = 2.0 ** 10
    monkeypatch.setattr(Runtime, "grad_scaler", lambda self: torch.amp.GradScaler(
        "cuda", init_scale=init_scale, growth_interval=1) if self.precision == "fp16" else None)
    straight = _train(endovis_root, tmp_path / "a", precision="fp16", device="cuda")
    again = _train(endovis_root, tmp_path / "b", precision="fp16", device="cuda")
    assert _summary(again)["metrics"] == _summary(straight)["metrics"], \
        "two identical fp16 CUDA runs differ: the GPU run is not deterministic, so resume cannot be judged"
    assert _summary(straight)["precision"] == "fp16"
    first = _train(endovis_root, tmp_path / "c", precision="fp16", device="cuda", epochs=1)
    resumed = resume(first, ["train.epochs=2"])
    assert _summary(resumed)["metrics"] == _summary(straight)["metrics"]
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(resumed / "last.pt")
    assert a["scaler"]["scale"] != init_scale  # the scale moved during training: its state mattered
    assert b["scaler"]["scale"] == a["scaler"]["scale"]
    for name, w in a["model"].items():
        assert torch.equal(b["model"][name], w), name


@pytest.fixture(scope="module")
def cuda_run(endovis_root: Path, tmp_path_factory) -> Path:
    """A tiny run trained on CUDA in fp32 (what a user brings from a GPU machine)."""
    return _train(endovis_root, tmp_path_factory.mktemp("cuda_run"), epochs=1, precision="fp32", device="cuda")


def test_predict_on_cuda_matches_cpu(cuda_run: Path, endovis_root: Path, tmp_path: Path, exact_cuda):
    from cnnlab.inference.predict import class_probabilities, load_run, predict_paths

    cpu, gpu = load_run(cuda_run, device="cpu", precision="fp32"), load_run(cuda_run, device="cuda", precision="fp32")
    assert gpu.rt.device.type == "cuda" and next(gpu.model.parameters()).is_cuda
    x = torch.randn(3, cpu.in_channels, *cpu.input_size, generator=torch.Generator().manual_seed(0))
    p_cpu = class_probabilities(cpu.model, x, cpu.rt)
    torch.testing.assert_close(class_probabilities(gpu.model, x, gpu.rt), p_cpu, rtol=0, atol=1e-4)
    amp = load_run(cuda_run, device="cuda")  # the default on CUDA: bf16 (or fp16) autocast
    assert amp.rt.precision in ("bf16", "fp16")
    torch.testing.assert_close(class_probabilities(amp.model, x, amp.rt), p_cpu, rtol=0, atol=3e-2)

    files = sorted((endovis_root / "segmentation" / "test").glob("*/*_input.jpg"))
    masks = {}
    for name, run in (("cpu", cpu), ("cuda", gpu)):
        predict_paths(run, files, tmp_path / name, progress=False)
        masks[name] = {p.name: np.asarray(Image.open(p)) for p in sorted((tmp_path / name).glob("*_mask.png"))}
    assert len(masks["cpu"]) == len(files) and masks["cuda"].keys() == masks["cpu"].keys()
    same = sum(int((masks["cuda"][k] == m).sum()) for k, m in masks["cpu"].items())
    assert same / sum(m.size for m in masks["cpu"].values()) >= 0.999  # argmax may flip only at exact ties


def test_torchscript_export_runs_on_cuda_like_cpu(cuda_run: Path, tmp_path: Path, exact_cuda):
    from cnnlab.inference.export import export_run

    path = export_run(cuda_run, "torchscript", tmp_path / "model.pt")
    on_cpu, on_gpu = torch.jit.load(str(path), map_location="cpu"), torch.jit.load(str(path), map_location="cuda")
    x = torch.randn(3, 3, 48, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, got = on_cpu(x), on_gpu(x.cuda())
    assert got.is_cuda
    torch.testing.assert_close(got.cpu(), ref, rtol=0, atol=1e-4 + 1e-4 * float(ref.abs().max()))
