"""Progress outside training: `evaluate` and `predict` show training's bars (plain lines without a terminal), and a
sequential study says run i of N with the running run's epoch and the study's ETA (a line per run, live above the
run's bars on a terminal)."""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from rich.console import Console

from cnnlab.config import recipe_from_dict
from cnnlab.engine import progress
from cnnlab.engine.progress import Bars, EventLog
from cnnlab.engine.run import train
from cnnlab.inference.evaluate import evaluate_run
from cnnlab.inference.predict import load_run, predict_paths
from cnnlab.study import runner
from cnnlab.study.parallel import Progress
from cnnlab.study.runner import run_study
from conftest import tiny_recipe

ANSI = "\x1b"


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A small MLP on scikit-learn's digits (450 test images), 1 epoch."""
    raw = {"name": "d", "task": "classification", "out": str(tmp_path_factory.mktemp("pi")),
           "data": {"format": "digits", "root": ".", "val": "test"},
           "model": {"name": "mlp", "params": {"hidden": [16]}},
           "loss": {"name": "cross_entropy"}, "train": {"epochs": 1, "batch_size": 64, "progress": False}}
    return train(recipe_from_dict(raw))


def test_evaluate_prints_plain_progress_lines_without_a_terminal(digits_run: Path, tmp_path: Path, monkeypatch,
                                                                 capsys):
    """450 images in batches of 90, the 5 s gap removed: a line at 20, 40, 60 and 80 %, none at the end."""
    monkeypatch.setattr(progress, "PLAIN_GAP_S", 0.0)
    result, _ = evaluate_run(digits_run, out=tmp_path, batch_size=90)
    assert result["n_images"] == 450
    out = capsys.readouterr().out
    assert ANSI not in out
    lines = [ln for ln in out.splitlines() if ln.startswith("  evaluating 'test': ")]
    assert [ln.split(",")[0] for ln in lines] == [f"  evaluating 'test': {n}/450 images ({p}%)"
                                                  for n, p in ((90, 20), (180, 40), (270, 60), (360, 80))]
    assert all(re.search(r"img/s, ETA \d+:\d\d$", ln) for ln in lines)
    evaluate_run(digits_run, out=tmp_path, batch_size=90, progress=False)
    assert capsys.readouterr().out == ""


def test_predict_prints_plain_progress_lines_without_a_terminal(digits_run: Path, tmp_path: Path, monkeypatch,
                                                                capsys):
    monkeypatch.setattr(progress, "PLAIN_GAP_S", 0.0)
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"{i}.png")
    run = load_run(digits_run)
    predict_paths(run, [folder], tmp_path / "out", batch_size=1)
    out = capsys.readouterr().out
    assert ANSI not in out
    assert [ln.split(",")[0] for ln in out.splitlines()] == [f"  predicting: {n}/5 images ({20 * n}%)"
                                                             for n in (1, 2, 3, 4)]
    predict_paths(run, [folder], tmp_path / "quiet", batch_size=1, progress=False)
    assert capsys.readouterr().out == ""


def test_headers_show_above_a_rich_bar_on_a_terminal():
    out = io.StringIO()
    bars = Bars(Console(file=out, force_terminal=True, width=100), show=True, terminal=True)
    progress.HEADERS.append(lambda: "study s: run 2/3 [1/3 done]")
    try:
        with bars.bar("epoch 1/2", 4) as bar:
            bar.advance(2)
    finally:
        progress.HEADERS.clear()
    text = out.getvalue()
    assert "study s: run 2/3 [1/3 done]" in text and "epoch 1/2" in text
    assert text.index("study s: run 2/3") < text.index("epoch 1/2")


def test_the_eta_before_any_run_ended_comes_from_the_running_runs_epochs():
    p = Progress(total=3, slots=1, running={"a": 100.0})
    assert p.line(130.0, 2) == "[0/3 done, 0 failed, running: a; ETA after the first run]"
    p.on_event("a", {"event": "start", "epochs": 4})
    assert p.line(130.0, 2) == "[0/3 done, 0 failed, running: a (epoch 1/4); ETA after the first epoch]"
    p.on_event("a", {"event": "epoch", "epoch": 1})
    # 1 of 4 epochs in 30 s: a run takes 120 s; 90 s left of this one, then 2 pending runs of 120 s
    assert p.line(130.0, 2) == "[0/3 done, 0 failed, running: a (epoch 2/4); ETA 5m 30s]"
    # a resumed run counts only the epochs it ran now: epochs 3 of 4 in 30 s after resuming at 2 -> 60 s a run
    p = Progress(total=1, slots=1, running={"r": 0.0})
    for row in ({"event": "start", "epochs": 4}, {"event": "run_dir", "resumed_at_epoch": 2},
                {"event": "epoch", "epoch": 3}):
        p.on_event("r", row)
    assert p.line(30.0, 0) == "[0/1 done, 0 failed, running: r (epoch 4/4); ETA 0m 30s]"
    p.durations.append(50.0)   # once a run has ended, runs take what ended runs took
    assert p.line(30.0, 0).endswith("ETA 0m 20s]")


def _study(tmp: Path, root: Path) -> Path:
    recipe = tiny_recipe(root, tmp / "unused", train={"epochs": 1, "threads": 1})
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    study = {"name": "seq", "base": "tiny.yaml", "out": str(tmp / "studies"), "seeds": [0],
             "variants": {"a": [], "bad": ["optim.lr=1e30", "loss.name=cross_entropy", "train.precision=fp32"],
                          "b": ["optim.lr=0.003"]}}
    (tmp / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    return tmp / "study.yaml"


def test_a_sequential_study_prints_a_plain_line_as_each_run_starts_and_ends(endovis_root: Path, tmp_path: Path,
                                                                           monkeypatch, capsys):
    monkeypatch.setattr("cnnlab.engine.summary.write_run_figures", lambda *a, **k: [])
    run_study(_study(tmp_path, endovis_root))
    out = capsys.readouterr().out
    assert ANSI not in out
    eta = r"ETA \d+m \d\ds"
    expected = [r"\[0/3 done, 0 failed, running: a__seed0; ETA after the first run\] started a__seed0 \(run 1/3\)",
                rf"\[1/3 done, 0 failed, running: none; {eta}\] a__seed0 done",
                rf"\[1/3 done, 0 failed, running: bad__seed0; {eta}\] started bad__seed0 \(run 2/3\)",
                rf"\[1/3 done, 1 failed, running: none; {eta}\] bad__seed0 FAILED: loss became nan at epoch 1.* "
                r"\(the study goes on\)",
                rf"\[1/3 done, 1 failed, running: b__seed0; {eta}\] started b__seed0 \(run 3/3\)",
                r"\[2/3 done, 1 failed, running: none; ETA 0m 00s\] b__seed0 done"]
    lines = [ln for ln in out.splitlines() if ln.startswith("[")]
    assert len(lines) == len(expected)
    for line, pattern in zip(lines, expected):
        assert re.fullmatch(pattern, line), line


def test_the_live_line_follows_the_running_runs_epochs(endovis_root: Path, tmp_path: Path, monkeypatch):
    """While a run runs, the header above its bars says which run of how many, its epoch, and the study's state."""
    seen = []

    def fake_run(run, study_dir, stage_best):
        events = EventLog()
        events.write("start", epochs=5)
        events.write("epoch", epoch=1)
        seen.append([header() for header in progress.HEADERS])
        return study_dir / "runs" / run.name

    monkeypatch.setattr(runner, "execute_one", fake_run)
    run_study(_study(tmp_path, endovis_root))
    assert [s[0].split(";")[0] for s in seen] == [
        "study seq: run 1/3 [0/3 done, 0 failed, running: a__seed0 (epoch 2/5)",
        "study seq: run 2/3 [1/3 done, 0 failed, running: bad__seed0 (epoch 2/5)",
        "study seq: run 3/3 [2/3 done, 0 failed, running: b__seed0 (epoch 2/5)"]
    assert progress.HEADERS == [] and progress.EVENT_HOOKS == []   # removed when the study ends
