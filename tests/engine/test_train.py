"""Training end to end on tiny synthetic data: run dir contents, exact resume, never overwriting."""
from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnlab.config import recipe_from_dict
from cnnlab.engine import checkpoint as checkpoint_mod
from cnnlab.engine.checkpoint import load_checkpoint
from cnnlab.engine.fit import TrainingDiverged
from cnnlab.engine.run import Interrupted, resume, train
from conftest import interrupt_after_first_last_pt, tiny_recipe


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())["metrics"]


def test_run_dir_contents_and_exact_resume(endovis_root: Path, tmp_path: Path, monkeypatch):
    recipe = recipe_from_dict(tiny_recipe(endovis_root, tmp_path / "runs", augment={"hflip": True}))
    straight = train(recipe)
    for name in ("config.yaml", "env.json", "metrics.csv", "best.pt", "last.pt", "summary.json",
                 "figures/loss_curves.png", "figures/overlays.png"):
        assert (straight / name).is_file(), name
    assert "# git:" in (straight / "config.yaml").read_text()
    rows = list(csv.DictReader(open(straight / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    s = json.loads((straight / "summary.json").read_text())
    assert s["evaluated_on"] == "test" and set(s["per_class"]) == set(s["class_names"])
    assert 0 <= s["metrics"]["dice_mean"] <= 1

    # interrupt right after epoch 1's last.pt is written, then resume
    real_save = interrupt_after_first_last_pt(monkeypatch)
    with pytest.raises(Interrupted, match="resume with: cnnlab train --resume"):
        train(recipe)
    monkeypatch.setattr(checkpoint_mod, "atomic_save", real_save)
    interrupted = sorted((tmp_path / "runs").iterdir())[-1]
    assert load_checkpoint(interrupted / "last.pt")["state"]["epoch"] == 1
    resumed = resume(interrupted)
    assert resumed == interrupted
    assert _metrics(resumed) == _metrics(straight)  # bit-exact on CPU
    assert len(list(csv.DictReader(open(resumed / "metrics.csv")))) == 2


def test_run_dirs_are_never_reused(endovis_root: Path, tmp_path: Path):
    from cnnlab.engine.rundir import new_run_dir

    a, b = new_run_dir(tmp_path, "x"), new_run_dir(tmp_path, "x")
    assert a != b and a.is_dir() and b.is_dir()


def test_nan_loss_stops_with_epoch_and_step(endovis_root: Path, tmp_path: Path):
    recipe = recipe_from_dict(tiny_recipe(endovis_root, tmp_path / "runs", optim={"lr": 1e30},
                                          loss={"name": "cross_entropy"}, train={"precision": "fp32"}))
    with pytest.raises(TrainingDiverged,
                       match=r"epoch \d+, step \d+"):
        train(recipe)


def test_model_learns_on_synthetic_data(endovis_root: Path, tmp_path: Path):
    """A short training must beat the all-background predictor (foreground Dice 0) and its own first epoch."""
    recipe = recipe_from_dict(tiny_recipe(endovis_root, tmp_path / "runs",
                                          train={"epochs": 15, "patience": 0, "batch_size": 2},
                                          model={"params": {"width": 8, "depth": 2}}))
    run_dir = train(recipe)
    m = json.loads((run_dir / "summary.json").read_text())["validation"]
    assert m["dice_background"] > 0.9 and m["dice_mean_foreground"] > 0.1
    hist = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert float(hist[-1]["train_loss"]) < float(hist[0]["train_loss"])
    assert max(float(h["val_dice_mean"]) for h in hist) > float(hist[0]["val_dice_mean"]) + 0.05
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_optimizers_are_fused_and_step_like_torchs_per_tensor_loop(name: str, tmp_path: Path):
    from cnnlab.engine.fit import build_optimizer
    from cnnlab.models import build_model

    r = recipe_from_dict(tiny_recipe(tmp_path, tmp_path / "runs", optim={"name": name, "lr": 0.01,
                                                                         "weight_decay": 0.01, "momentum": 0.9}))
    torch.manual_seed(0)
    a = build_model("unet", 3, 3, (16, 16), {"width": 4, "depth": 2})
    b = build_model("unet", 3, 3, (16, 16), {"width": 4, "depth": 2})
    b.load_state_dict(a.state_dict())
    start = [p.detach().clone() for p in a.parameters()]
    fast = build_optimizer(a, r)
    assert fast.defaults["fused"] is True
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[name]
    extra = {"momentum": 0.9} if name == "sgd" else {}
    slow = cls(b.parameters(), lr=0.01, weight_decay=0.01, foreach=False, **extra)
    x = torch.rand(2, 3, 16, 16)
    for _ in range(3):
        for model, opt in ((a, fast), (b, slow)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-5)
    assert all(not torch.equal(p0, p) for p0, p in zip(start, a.parameters()))  # every tensor moved


def test_threads_follow_the_request_or_leave_busy_cores_alone(monkeypatch):
    from cnnlab.engine import runtime

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(runtime, "DEFAULT_THREADS", 4)
        monkeypatch.setattr(runtime.os, "cpu_count", lambda: 4)
        monkeypatch.setattr(runtime, "busy_cores", lambda: 3)
        assert runtime.choose_threads(0) == 1 and torch.get_num_threads() == 1  # 3 of 4 cores taken
        monkeypatch.setattr(runtime, "busy_cores", lambda: 1)
        assert runtime.choose_threads(0) == 3
        monkeypatch.setattr(runtime, "busy_cores", lambda: 0)
        assert runtime.choose_threads(0) == 4  # an idle machine keeps torch's default
        assert runtime.choose_threads(2) == 2  # an explicit train.threads always wins
        monkeypatch.setenv("OMP_NUM_THREADS", "4")
        monkeypatch.setattr(runtime, "busy_cores", lambda: 3)
        assert runtime.choose_threads(0) == 4  # and so does the user's OMP_NUM_THREADS
    finally:
        torch.set_num_threads(before)


_FAULTS_SCRIPT = """
import json, os, resource, torch
from cnnlab.engine.runtime import resolve_runtime, reuse_freed_memory

def faults(repeats=16):
    # page faults of the last 4 of `repeats` allocate-fill-free rounds of 96 MB (a training step's pattern);
    # with freed memory kept, the heap takes about 8 rounds to settle, after which no round faults
    out = []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.empty(24 << 20, dtype=torch.float32).fill_(1.0)
        out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return out[-4:]

out = {"set_default": reuse_freed_memory(False), "default": faults()}
os.environ["CNNLAB_KEEP_FREED_MEMORY"] = "0"  # the user's opt-out leaves glibc alone
resolve_runtime("cpu", "fp32", False)
out["opted_out"] = faults()
del os.environ["CNNLAB_KEEP_FREED_MEMORY"]
resolve_runtime("cpu", "fp32", False)  # what every training and prediction run calls
out["kept"] = faults()
print(json.dumps(out))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_cpu_runtime_keeps_freed_activations_instead_of_faulting_them_in_again():
    # A fresh process: this one's heap holds free holes from earlier tests that would serve the block anyway.
    env = {k: v for k, v in os.environ.items() if k != "CNNLAB_KEEP_FREED_MEMORY"}
    proc = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["set_default"]
    assert min(out["default"]) > 20000  # glibc's default: 24,576 fresh 4 KiB pages every time
    assert min(out["opted_out"]) > 20000
    assert max(out["kept"]) < 1000  # the heap has settled and the block is reused


def test_busy_cores_reads_the_runnable_count_minus_this_process(tmp_path: Path):
    from cnnlab.engine.runtime import busy_cores

    (tmp_path / "loadavg").write_text("2.19 2.06 1.53 3/81 4817\n")
    assert busy_cores(2, 0, tmp_path / "loadavg") == 2
    (tmp_path / "loadavg").write_text("0.00 0.00 0.00 1/81 4817\n")
    assert busy_cores(2, 0, tmp_path / "loadavg") == 0
    (tmp_path / "loadavg").write_text("garbage")
    assert busy_cores(2, 0, tmp_path / "loadavg") is None
    assert busy_cores(2, 0, tmp_path / "missing") is None
