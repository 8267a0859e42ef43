"""Shared fixtures: tiny synthetic data sets written in the real formats, once per session."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

# The decoded-data cache (cnnlab.data.cache) goes to a folder of this test session, never the user's ~/.cache;
# subprocesses started by tests inherit it. The process that made the folder removes it at exit (each run of the
# suite left one per worker in /tmp: 900 after a day's work).
if "CNNLAB_CACHE_DIR" not in os.environ:
    os.environ["CNNLAB_CACHE_DIR"] = tempfile.mkdtemp(prefix="cnnlab-test-cache-")
    atexit.register(shutil.rmtree, os.environ["CNNLAB_CACHE_DIR"], ignore_errors=True)

torch.set_num_threads(1)  # tests run beside other work on 2 cores; small tensors gain nothing from threads

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def endovis_root(tmp_path_factory) -> Path:
    """EndoVis course layout, 48x64 images: small enough for 2-epoch trainings in seconds."""
    from cnnlab.data.synthetic import endovis

    return endovis.write(tmp_path_factory.mktemp("endovis"), seed=0, n_train=8, n_val=4, n_test=4,
                         n_color_train=4, n_color_val=2, height=48, width=64)


def tiny_recipe(root: Path, out: Path, **extra) -> dict:
    """A raw recipe mapping for a 2-epoch U-Net run on the tiny data."""
    raw = {
        "name": "tiny", "task": "segmentation", "out": str(out),
        "data": {"format": "endovis", "root": str(root)},
        "model": {"name": "unet", "params": {"width": 4, "depth": 2}},
        "loss": {"name": "dice_ce"},
        "optim": {"name": "adam", "lr": 0.01},
        "train": {"epochs": 2, "batch_size": 4, "eval_batch_size": 4, "progress": False},
    }
    for k, v in extra.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    return raw


def interrupt_after_first_last_pt(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict, Path], None]:
    """Make the next training raise KeyboardInterrupt right after its first last.pt is on disk (epoch 1's
    checkpoint), as a Ctrl-C at that moment would; returns the real atomic_save, to put back before resuming."""
    from cnnlab.engine import checkpoint as checkpoint_mod

    real_save, saves = checkpoint_mod.atomic_save, []

    def save_then_interrupt(obj: dict, path: Path) -> None:
        real_save(obj, path)
        saves.append(Path(path).name)
        if saves.count("last.pt") == 1 and Path(path).name == "last.pt":
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_mod, "atomic_save", save_then_interrupt)
    return real_save


def interrupt_in_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int = 2) -> Callable:
    """Make the next training raise KeyboardInterrupt as it starts epoch `epoch` (a Ctrl-C between epochs);
    returns the real train_one_epoch, to put back before resuming."""
    from cnnlab.engine import run as run_mod

    real, calls = run_mod.train_one_epoch, []

    def interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(run_mod, "train_one_epoch", interrupt)
    return real


def train_binary_glas(base: Path, name: str, **train_extra) -> Path:
    """One epoch of a binary (gland / background) FCN on tiny synthetic GlaS images; returns the run dir."""
    from cnnlab.config import recipe_from_dict
    from cnnlab.data.synthetic import SYNTHETIC
    from cnnlab.engine.run import train

    root = SYNTHETIC["glas"](base / "glas", n_train=6, n_test_a=3, n_test_b=2, width=48, height=40)
    raw = {"name": name, "out": str(base / "runs"),
           "data": {"format": "glas", "root": str(root), "train": "train", "test": "test", "size": [32, 32],
                    "val_fraction": 0.3},
           "model": {"name": "course_fcn", "params": {"depth": 2}}, "loss": {"name": "dice"},
           "train": {"epochs": 1, "batch_size": 2, "progress": False, **train_extra}}
    return train(recipe_from_dict(raw))
