"""Issue 29: the listed tracebacks are one line on stderr and exit 2 (a read-only run folder, a missing --out
folder, an impossible --window, a last.pt that is not a checkpoint, a config.yaml with a bad YAML tag, a failed
allocation); a bug elsewhere keeps its traceback."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from cnnlab.cli import main
from cnnlab.config import recipe_from_dict
from cnnlab.engine.run import train
from conftest import tiny_recipe


@pytest.fixture(scope="module")
def run(endovis_root: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("oneline")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("cnnlab.engine.summary.write_run_figures", lambda *a, **k: [])
        return train(recipe_from_dict(tiny_recipe(endovis_root, out, train={"epochs": 1})))


def _one_line(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("cnnlab: error: "), err
    return err


@contextlib.contextmanager
def _read_only(folder: Path):
    """folder made read-only for real: permissions where not root (root ignores them), else a read-only bind
    mount onto itself; skipped where neither is possible."""
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
        try:
            yield
        finally:
            os.chmod(folder, 0o755)
        return
    if shutil.which("mount") is None or subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)],
                                                        capture_output=True).returncode != 0:
        pytest.skip("cannot make a read-only folder here (root without mount)")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_missing_or_read_only_out_folders_and_run_dirs_are_one_line(run: Path, tmp_path: Path, capsys):
    err = _one_line(capsys, "compare", str(run), "--out", str(tmp_path / "no" / "such" / "x.csv"))
    assert "No such file or directory" in err and f"mkdir -p {tmp_path / 'no' / 'such'}" in err
    copy = tmp_path / "ro-run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("report.*", "figures", "latex"))
    with _read_only(copy):
        for argv in (["report", str(copy)], ["report", str(copy), "--format", "latex"], ["evaluate", str(copy)],
                     ["export", str(copy), "--format", "torchscript"], ["compare", str(run), "--out",
                                                                        str(copy / "x.csv")]):
            err = _one_line(capsys, *argv)
            assert str(copy) in err and ("Read-only file system" in err or "Permission denied" in err), argv
            assert f"ls -ld {copy}" in err


@pytest.mark.parametrize("window", ["1x1", "99999x99999"])
def test_predict_with_an_impossible_window_is_one_line(run: Path, endovis_root: Path, tmp_path: Path, capsys,
                                                       window: str):
    image = next(endovis_root.rglob("*_input.jpg"), None) or next(endovis_root.rglob("*.png"))
    err = _one_line(capsys, "predict", str(run), str(image), "--out", str(tmp_path / "p"), "--window", window)
    assert "--window train" in err and not list((tmp_path / "p").glob("*"))  # nothing written


@pytest.mark.parametrize("content", ["state_dict", "list", "string"])
def test_a_last_pt_that_is_not_a_checkpoint_is_one_line_with_a_command_that_works(run: Path, tmp_path: Path,
                                                                                 capsys, content: str):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    ck = torch.load(copy / "last.pt", weights_only=True)
    torch.save({"state_dict": ck["model"], "list": [1, 2], "string": "hello"}[content], copy / "last.pt")
    err = _one_line(capsys, "train", "--resume", str(copy))
    assert "not a cnnlab checkpoint" in err and "cnnlab train --resume" in err
    if content == "list":  # the hint's command (once): the run starts over from config.yaml and finishes
        os.rename(copy / "last.pt", copy / "last.pt.bad")
        (copy / "summary.json").unlink(missing_ok=True)
        assert main(["train", "--resume", str(copy)]) in (0, None)
        assert (copy / "summary.json").is_file()


def test_a_config_yaml_with_a_bad_tag_is_one_line_under_report_latex(run: Path, tmp_path: Path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("*.pt", "latex"))
    text = (copy / "config.yaml").read_text()
    (copy / "config.yaml").write_text(text.replace("name: ", "name: !!python/object:os.system ", 1))
    err = _one_line(capsys, "report", str(copy), "--format", "latex")
    assert "config.yaml: not valid YAML" in err


@pytest.mark.parametrize("failure", [MemoryError(), RuntimeError(
    "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to allocate "
    "119997600012 bytes. Error code 12 (Cannot allocate memory)")])
def test_a_failed_allocation_is_one_line(run: Path, tmp_path: Path, capsys, monkeypatch, failure):
    def fail(*a, **kw):
        raise failure

    monkeypatch.setattr("cnnlab.inference.evaluate.evaluate", fail)
    err = _one_line(capsys, "evaluate", str(run), "--out", str(tmp_path))
    assert "out of memory" in err and "batch" in err
    if isinstance(failure, RuntimeError):
        assert "111.8 GiB" in err


def test_other_errors_keep_their_traceback(run: Path, tmp_path: Path, monkeypatch):
    """A bug is not dressed up as a user error: a RuntimeError of another kind, an OSError naming no file."""
    for failure in (RuntimeError("shape mismatch"), OSError("no file named")):
        def fail(*a, _e=failure, **kw):
            raise _e

        monkeypatch.setattr("cnnlab.inference.evaluate.evaluate", fail)
        with pytest.raises(type(failure)):
            main(["evaluate", str(run), "--out", str(tmp_path)])


def test_a_lost_ddp_peer_is_one_line_in_the_surviving_process(run: Path, tmp_path: Path, capsys, monkeypatch):
    """Probe: torchrun with 2 processes, rank 1 SIGKILLed: rank 0 stopped with gloo's traceback (message as seen)."""
    def fail(*a, **kw):
        raise RuntimeError("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error "
                           "[127.0.0.1]:8380: Connection reset by peer. This is typically caused by a remote worker")

    monkeypatch.setattr("cnnlab.inference.evaluate.evaluate", fail)
    monkeypatch.setenv("WORLD_SIZE", "2")
    err = _one_line(capsys, "evaluate", str(run), "--out", str(tmp_path))
    assert "another process of this distributed run stopped (Read error" in err
    assert "torchrun --nproc_per_node=2 -m cnnlab train --resume" in err
    monkeypatch.setenv("WORLD_SIZE", "1")  # a single process has no peer: the same error is a bug, with its trace
    with pytest.raises(RuntimeError):
        main(["evaluate", str(run), "--out", str(tmp_path)])
