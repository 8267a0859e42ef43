"""Interrupted runs, untrusted files and escaping paths: what cnnlab guarantees, each fed the bad case."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from cnnlab.cli import main
from cnnlab.data.formats import endovis
from cnnlab.engine.checkpoint import atomic_save, load_checkpoint
from cnnlab.errors import CnnlabError, DataError
from cnnlab.models.weights import load_weights_file
from conftest import tiny_recipe


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "cnnlab", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_gives_the_same_metrics(endovis_root: Path, tmp_path: Path):
    """Kill a 4-epoch run three times at random moments; resuming each time ends with the uninterrupted metrics."""
    raw = tiny_recipe(endovis_root, tmp_path / "runs", train={"epochs": 4})
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    straight = _cli("train", str(recipe), "--set", "name=straight")
    assert straight.wait(timeout=300) == 0, straight.stdout.read()
    run_dirs = lambda: sorted((tmp_path / "runs").glob("tiny-*"))  # noqa: E731
    rng = random.Random(0)
    kills = 0
    while True:
        p = _cli("train", "--resume", str(run_dirs()[0])) if run_dirs() else _cli("train", str(recipe))
        if kills == 3:
            break
        deadline = time.time() + 120
        while not run_dirs() and p.poll() is None and time.time() < deadline:
            time.sleep(0.05)  # wait for the run to exist, then kill at a random moment of its work
        time.sleep(rng.uniform(0.0, 2.5))
        if p.poll() is not None:
            break
        p.send_signal(signal.SIGKILL)
        p.wait()
        kills += 1
        assert len(run_dirs()) == 1  # a resume never makes a second run dir
    assert p.wait(timeout=300) == 0, p.stdout.read()
    done = json.loads((run_dirs()[0] / "summary.json").read_text())
    ref = json.loads(next((tmp_path / "runs").glob("straight-*/summary.json")).read_text())
    assert done["metrics"] == ref["metrics"] and done["epochs_run"] == 4


def test_atomic_save_keeps_the_previous_checkpoint_when_a_write_fails(tmp_path: Path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"model": {"w": torch.ones(2)}}, path)

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        atomic_save({"model": {"w": torch.zeros(2)}}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickled_code_in_a_weights_file_is_refused(tmp_path: Path):
    bad = tmp_path / "evil.pt"
    torch.save({"model": _Exploit()}, bad)
    with pytest.raises(CnnlabError, match="refused.*pickled code"):
        load_weights_file(bad)
    with pytest.raises(CnnlabError, match="refused"):
        load_checkpoint(bad)


def test_truncated_checkpoint_is_one_line(tmp_path: Path):
    p = tmp_path / "best.pt"
    atomic_save({"model": {"w": torch.ones(100)}}, p)
    p.write_bytes(p.read_bytes()[:50])
    with pytest.raises(CnnlabError, match="unreadable checkpoint|not a readable"):
        load_checkpoint(p)


def test_sample_folder_symlinked_outside_the_root_is_refused(endovis_root: Path, tmp_path: Path):
    root = Path(shutil.copytree(endovis_root, tmp_path / "ev"))
    outside = tmp_path / "elsewhere" / "99"
    shutil.copytree(root / "segmentation/train/0", outside)
    for f in outside.iterdir():
        f.rename(outside / f.name.replace("0_", "99_"))
    (root / "segmentation/train/99").symlink_to(outside, target_is_directory=True)
    with pytest.raises(DataError, match="points outside the data root"):
        endovis.load(root, "train")


def test_no_room_for_checkpoints_is_reported_before_training(endovis_root: Path, tmp_path: Path, monkeypatch):
    import shutil as sh
    from collections import namedtuple

    from cnnlab.config import recipe_from_dict
    from cnnlab.engine.run import train

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(sh, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(CnnlabError, match="MiB free.*needs about"):
        train(recipe_from_dict(tiny_recipe(endovis_root, tmp_path / "runs")))


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys):
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "recipe file not found" in err[0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {batch_size: 0}\n")
    assert main(["train", str(bad)]) == 2
    assert "train.batch_size" in capsys.readouterr().err
    assert main(["data", "check", "endovis", str(tmp_path)]) == 2
    assert "no 'segmentation' folder" in capsys.readouterr().err


def test_unusable_output_folder_is_reported_before_training(tmp_path: Path):
    from cnnlab.engine.rundir import new_run_dir

    blocker = tmp_path / "out"
    blocker.write_text("a file where the output folder should be")
    with pytest.raises(CnnlabError, match="cannot create output folder .*out"):
        new_run_dir(blocker / "runs", "x")
    assert blocker.read_text().startswith("a file")  # nothing of the user's was touched


def test_voc_image_set_names_cannot_climb_out_of_the_voc_folder(tmp_path: Path):
    from cnnlab.data.formats import voc
    from cnnlab.data.synthetic import SYNTHETIC

    root = SYNTHETIC["voc"](tmp_path / "voc", n_train=2, n_val=1, n_test=1, height=24, width=24)
    sets = next(root.rglob("ImageSets/Segmentation"))
    (sets / "train.txt").write_text("../../../../etc/passwd\n")
    with pytest.raises(DataError, match="points outside the data root"):
        voc.load(root, "train")
