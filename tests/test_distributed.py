"""DDP through torchrun on CPU (gloo): metrics equal a single-process evaluation, one run dir, resume works."""
from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import tiny_recipe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "cnnlab", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_two_process_training_matches_single_process_evaluation(endovis_root: Path, tmp_path: Path):
    from cnnlab.infer import evaluate_run

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(endovis_root, tmp_path / "runs", train={"epochs": 1})))
    done = _torchrun("train", str(recipe))
    assert done.returncode == 0, done.stdout + done.stderr
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1  # rank 0 alone made a run dir
    run = runs[0]
    assert done.stdout.count("tiny: test split") == 1  # only rank 0 prints the results

    resumed = _torchrun("train", "--resume", str(run), "--set", "train.epochs=2")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert list((tmp_path / "runs").iterdir()) == [run]
    assert [r["epoch"] for r in csv.DictReader(open(run / "metrics.csv"))] == ["1", "2"]

    summary = json.loads((run / "summary.json").read_text())
    single, _ = evaluate_run(run, split="test", out=tmp_path / "eval")
    for key in ("dice_mean", "dice_mean_foreground", "dice_background", "iou_mean", "pixel_accuracy"):
        assert summary["metrics"][key] == pytest.approx(single["metrics"][key], abs=1e-12), key
