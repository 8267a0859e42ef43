"""Issue 18, engine defects: divergence in weights, what a resumed run dir says, fp16 loss scale across resume,
SIGTERM, two resumes of one run dir, checkpoint file modes. Each test feeds the case that once went wrong."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from cnnlab.cli import main
from cnnlab.config import recipe_from_dict
from cnnlab.engine import checkpoint as checkpoint_mod
from cnnlab.engine.checkpoint import atomic_save, load_checkpoint
from cnnlab.engine.fit import nonfinite_tensors
from cnnlab.engine.run import Interrupted, resume, train
from cnnlab.engine.rundir import LOCK
from cnnlab.engine.runtime import Runtime
from conftest import interrupt_after_first_last_pt, tiny_recipe


def _env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _all_finite(ck: dict) -> bool:
    return all(bool(t.float().isfinite().all()) for t in ck["model"].values() if t.is_floating_point())


# --- 5. divergence in weights and BatchNorm statistics -------------------------------------------------------

def test_nonfinite_tensors_names_bad_buffers_and_does_not_overflow_on_large_finite_weights():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    with torch.no_grad():
        model[0].weight.fill_(1e30)  # finite; its squared L2 norm overflows float32, its max-abs does not
    assert nonfinite_tensors(model) == []
    model[1].running_var[1] = float("inf")
    with torch.no_grad():
        model[0].bias[0] = float("nan")
    assert nonfinite_tensors(model) == ["0.bias", "1.running_var"]


@pytest.mark.parametrize("opt,bad_epoch", [("adam", 1), ("sgd", 2)])
def test_huge_lr_stops_with_exit_2_and_no_nonfinite_checkpoint(endovis_root: Path, tmp_path: Path, capsys,
                                                               opt: str, bad_epoch: int):
    """lr=1e6: the loss stays finite but BatchNorm running variances become inf (adam in epoch 1, sgd in epoch 2)."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(endovis_root, tmp_path / "runs", optim={"name": opt, "lr": 1e6},
                                                 train={"epochs": 3})))
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    run = next((tmp_path / "runs").iterdir())
    assert len(err.splitlines()) == 1
    assert "training diverged: " in err and f"during epoch {bad_epoch} (checked after its step 2;" in err
    hint = f"cnnlab train {run / 'config.yaml'} --set optim.lr=100000"
    assert err.endswith(hint)
    if bad_epoch == 1:
        assert not (run / "best.pt").exists() and not (run / "last.pt").exists()
        assert "no checkpoint was written" in err
        # the hint is a command that works: a new run of the same recipe at the suggested learning rate
        assert main(shlex.split(hint)[1:]) in (0, 2)
        capsys.readouterr()
        new = [d for d in (tmp_path / "runs").iterdir() if d != run]
        assert len(new) == 1 and yaml.safe_load((new[0] / "config.yaml").read_text())["optim"]["lr"] == 1e5
    else:
        assert "last.pt keeps epoch 1, best.pt epoch 1" in err
        for name in ("best.pt", "last.pt"):
            ck = load_checkpoint(run / name)
            assert ck["state"]["epoch"] == 1 and _all_finite(ck), name


# --- 6. a resumed run dir says what ran ----------------------------------------------------------------------

def test_resume_with_more_epochs_updates_config_keeps_history_and_sets_aside_derived_files(endovis_root: Path,
                                                                                          tmp_path: Path, capsys):
    run = train(recipe_from_dict(tiny_recipe(endovis_root, tmp_path / "runs", train={"epochs": 1})))
    (run / "export").mkdir()
    (run / "export" / "m.onnx").write_bytes(b"old model")
    (run / "evaluate_test.json").write_text('{"old": 1}')
    (run / "evaluate_test-2.json").write_text('{"old": 2}')

    assert main(["train", "--resume", str(run), "--set", "train.epochs=2"]) == 0
    assert f"moved to {run / 'stale'}" in capsys.readouterr().out.replace("\n", "")
    cfg_text = (run / "config.yaml").read_text()
    assert yaml.safe_load(cfg_text)["train"]["epochs"] == 2
    assert "# resumed " in cfg_text and "after epoch 1 (--set train.epochs=2)" in cfg_text
    report = (run / "report.md").read_text()  # the report shows the config that ran, resume included
    assert "  epochs: 2\n" in report and "after epoch 1 (--set train.epochs=2)" in report
    history = yaml.safe_load((run / "history.yaml").read_text())["resumes"]
    assert [(h["from_epoch"], h["epochs"], h["overrides"]) for h in history] == [(1, 2, ["train.epochs=2"])]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["resumes"] == history
    # files made from the epoch-1 model are gone from the top, kept under stale/<time>/ with a README
    assert not (run / "export").exists() and not list(run.glob("evaluate_*.json"))
    (stale,) = (run / "stale").iterdir()
    assert (stale / "export" / "m.onnx").read_bytes() == b"old model"
    assert json.loads((stale / "evaluate_test-2.json").read_text()) == {"old": 2}
    readme = (stale / "README.txt").read_text()
    assert "epoch 1" in readme and f"cnnlab export {run} --format onnx" in readme

    # a resume that trains nothing (already finished) keeps derived files: they still describe best.pt
    (run / "evaluate_test.json").write_text('{"new": 1}')
    resume(run)
    assert json.loads((run / "evaluate_test.json").read_text()) == {"new": 1}
    assert len(list((run / "stale").iterdir())) == 1
    history = yaml.safe_load((run / "history.yaml").read_text())["resumes"]
    assert [(h["from_epoch"], h["epochs"], h["overrides"]) for h in history] == [(1, 2, ["train.epochs=2"]),
                                                                                (2, 2, [])]


# --- 7. fp16 loss scale: one GradScaler per run, checkpointed, restored ---------------------------------------

def test_grad_scaler_is_made_once_and_its_state_round_trips_through_last_pt_and_resume(endovis_root: Path,
                                                                                       tmp_path: Path, monkeypatch):
    """An enabled CPU GradScaler stands in for fp16 on CUDA; growth_interval=1 doubles the scale every step.

    8 training images, batch 4: 2 steps per epoch, so the scale is 16 * 2**(2 * epochs) with no inf gradients.
    """
    made = []

    def scaler(self):
        made.append(1)
        return torch.amp.GradScaler("cpu", init_scale=16.0, growth_interval=1)

    monkeypatch.setattr(Runtime, "grad_scaler", scaler)
    recipe = recipe_from_dict(tiny_recipe(endovis_root, tmp_path / "runs", train={"precision": "fp32"}))
    straight = train(recipe)
    assert len(made) == 1  # not one per epoch
    assert load_checkpoint(straight / "last.pt")["scaler"]["scale"] == 16.0 * 2 ** 4

    real_save = interrupt_after_first_last_pt(monkeypatch)  # Ctrl-C once epoch 1's last.pt is written
    with pytest.raises(Interrupted):
        train(recipe)
    monkeypatch.setattr(checkpoint_mod, "atomic_save", real_save)
    cut = sorted((tmp_path / "runs").iterdir())[-1]
    assert load_checkpoint(cut / "last.pt")["scaler"]["scale"] == 16.0 * 2 ** 2
    resume(cut)
    assert load_checkpoint(cut / "last.pt")["scaler"] == load_checkpoint(straight / "last.pt")["scaler"]
    summary = lambda d: json.loads((d / "summary.json").read_text())["metrics"]  # noqa: E731
    assert summary(cut) == summary(straight)


# --- minor: SIGTERM, concurrent resumes, checkpoint modes --------------------------------------------------

@pytest.mark.slow
def test_sigterm_prints_the_resume_hint_and_leaves_a_resumable_last_pt(endovis_root: Path, tmp_path: Path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(endovis_root, tmp_path / "runs", train={"epochs": 500})))
    p = subprocess.Popen([sys.executable, "-m", "cnnlab", "train", str(recipe)], env=_env(), text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not list((tmp_path / "runs").glob("*/last.pt")) and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert p.poll() is None, p.communicate()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    run = next((tmp_path / "runs").iterdir())
    assert p.returncode == 2, out + err
    line = err.strip().splitlines()[-1]
    assert line.startswith("cnnlab: error: terminated (SIGTERM); ") and line.endswith(
        f"resume with: cnnlab train --resume {run}")
    epoch = load_checkpoint(run / "last.pt")["state"]["epoch"]
    assert f"last.pt holds epoch {epoch}" in line
    resume(run, [f"train.epochs={epoch + 1}"])
    assert json.loads((run / "summary.json").read_text())["epochs_run"] == epoch + 1


def test_a_second_resume_of_a_run_dir_in_use_is_refused(endovis_root: Path, tmp_path: Path, capsys):
    run = train(recipe_from_dict(tiny_recipe(endovis_root, tmp_path / "runs", train={"epochs": 1})))
    # another process holding the lock as cnnlab does (flock, its PID in the file), without importing torch
    holder = subprocess.Popen(
        [sys.executable, "-c", ("import fcntl, os, sys\nf = open(sys.argv[1], 'a+')\nfcntl.flock(f, fcntl.LOCK_EX)\n"
                                "f.truncate(0); f.write(str(os.getpid())); f.flush()\n"
                                "print('locked', flush=True); sys.stdin.read()"),
         str(run / LOCK)], env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        capsys.readouterr()
        assert main(["train", "--resume", str(run), "--set", "train.epochs=2"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"cnnlab: error: run dir is in use by process {holder.pid}: {run} — wait for it to end "
                       f"(or stop it), then: cnnlab train --resume {run}")
        assert not (run / "history.yaml").exists()  # the refused resume changed nothing
        assert load_checkpoint(run / "last.pt")["state"]["epoch"] == 1
    finally:
        holder.communicate("", timeout=60)
    resume(run, ["train.epochs=2"])  # the lock died with its holder
    assert load_checkpoint(run / "last.pt")["state"]["epoch"] == 2


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_checkpoints_get_the_users_umask(tmp_path: Path, umask: int, mode: int):
    old = os.umask(umask)
    try:
        atomic_save({"x": torch.zeros(1)}, tmp_path / "c.pt")
    finally:
        os.umask(old)
    assert (tmp_path / "c.pt").stat().st_mode & 0o777 == mode


def test_a_new_run_refused_before_training_leaves_no_run_dir_but_a_diverged_one_keeps_its_own(
        endovis_root: Path, tmp_path: Path, monkeypatch, capsys):
    """A tracker that cannot open (its store gone between the check and the start) is one line and leaves no run
    dir; a run that diverges in its first epoch keeps its run dir, whose config.yaml the hint names."""
    from cnnlab.engine import tracking

    def store_gone(self, r, run_dir, first_epoch):
        raise RuntimeError("store gone")

    monkeypatch.setattr(tracking.TensorBoardTracker, "__init__", store_gone)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(endovis_root, tmp_path / "runs", train={"log_to": ["tensorboard"]})))
    assert main(["train", str(recipe)]) == 2
    assert "could not open the tracker: RuntimeError: store gone" in capsys.readouterr().err
    assert list((tmp_path / "runs").iterdir()) == []
    recipe.write_text(yaml.safe_dump(tiny_recipe(endovis_root, tmp_path / "runs", optim={"lr": 1e30})))
    assert main(["train", str(recipe)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    (run,) = (tmp_path / "runs").iterdir()
    assert "no checkpoint was written" in line and f"cnnlab train {run / 'config.yaml'}" in line
    assert (run / "config.yaml").is_file()
