"""Every run dir keeps a train.log: the run's messages with timestamps, appended on resume, closed with the run.

The oracle for the epoch lines is metrics.csv of the same run (written by a different path: csv.DictWriter of the
epoch rows); for the console look it is the line cnnlab printed before logging (the message alone, unwrapped).
"""
from __future__ import annotations

import csv
import logging
import re
import threading
from pathlib import Path

import pytest

from cnnlab.config import recipe_from_dict
from cnnlab.engine import run as run_mod
from cnnlab.engine.run import Interrupted, resume, train
from cnnlab.logs import LOG_FILE, get_logger, run_log
from conftest import interrupt_in_epoch, tiny_recipe

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "
EPOCH = re.compile(STAMP + r"epoch +(\d+)/(\d+)  train loss (\d+\.\d{4})  val loss (\d+\.\d{4})")


def _log_lines(run_dir: Path) -> list[str]:
    return (run_dir / LOG_FILE).read_text().splitlines()


def _epochs_in_log(run_dir: Path) -> list[tuple[int, str, str]]:
    found = [EPOCH.match(line) for line in _log_lines(run_dir)]
    return [(int(m[1]), m[3], m[4]) for m in found if m]


def _epochs_in_csv(run_dir: Path) -> list[tuple[int, str, str]]:
    rows = csv.DictReader(open(run_dir / "metrics.csv"))
    return [(int(r["epoch"]), f"{float(r['train_loss']):.4f}", f"{float(r['val_loss']):.4f}") for r in rows]


def _file_handlers() -> list[logging.Handler]:
    """The train.log handlers on cnnlab's logger (pytest attaches its own capture handlers too)."""
    return [h for h in logging.getLogger("cnnlab").handlers
            if isinstance(h, logging.FileHandler) and Path(h.baseFilename).name == LOG_FILE]


def test_train_log_holds_the_epoch_lines_of_metrics_csv_and_its_handler_lives_as_long_as_the_run(
        endovis_root, tmp_path, monkeypatch, capsys):
    seen, real = [], run_mod._save_epoch

    def spy(ctx, state, improved):
        seen.append([h.baseFilename for h in _file_handlers()])
        real(ctx, state, improved)

    monkeypatch.setattr(run_mod, "_save_epoch", spy)
    before = list(logging.getLogger("cnnlab").handlers)
    run = train(recipe_from_dict(tiny_recipe(endovis_root, tmp_path / "runs")))  # train.progress: false
    assert _epochs_in_log(run) == _epochs_in_csv(run) and len(_epochs_in_csv(run)) == 2
    assert all(re.match(STAMP, line) for line in _log_lines(run))  # every line timestamped
    shown = capsys.readouterr().out.splitlines()  # progress off: no epoch line on the terminal, as before
    assert not any(line.startswith("epoch") for line in shown)
    assert seen == [[str(run / LOG_FILE)]] * 2  # one handler, this run's file, at each epoch
    assert logging.getLogger("cnnlab").handlers == before and not _file_handlers()


def test_resume_appends_to_train_log_and_the_console_shows_the_same_unwrapped_lines(endovis_root, tmp_path,
                                                                                      capsys):
    run = train(recipe_from_dict(tiny_recipe(endovis_root, tmp_path / "runs",
                                             train={"epochs": 1, "progress": True})))
    first = (run / LOG_FILE).read_text()
    resume(run, ["train.epochs=2"])
    text = (run / LOG_FILE).read_text()
    assert text.startswith(first)  # appended, the first run's lines kept
    after = text[len(first):].splitlines()
    # the timestamp is 20 characters with its space; the data line (read before the log opened) comes first
    assert after[0][20:].startswith("data: ") and after[1][20:] == f"resuming {run} at epoch 2"
    assert [e for e, _, _ in _epochs_in_log(run)] == [1, 2] and _epochs_in_log(run) == _epochs_in_csv(run)
    out = capsys.readouterr().out.splitlines()
    assert f"resuming {run} at epoch 2" in out  # longer than 80 columns, yet one line without padding
    logged = [line[20:] for line in _log_lines(run) if EPOCH.match(line)]
    assert [line for line in out if line.startswith("epoch")] == logged


def test_two_runs_in_one_process_each_write_only_their_own_train_log(endovis_root, tmp_path):
    a = train(recipe_from_dict(tiny_recipe(endovis_root, tmp_path / "a", name="a", train={"epochs": 1})))
    a_text = (a / LOG_FILE).read_text()
    b = train(recipe_from_dict(tiny_recipe(endovis_root, tmp_path / "b", name="b", train={"epochs": 2})))
    assert (a / LOG_FILE).read_text() == a_text  # nothing of b's run reached a's file
    # (the end of a run also warns about each class never predicted: such lines are each run's own too)
    own = lambda ln: "warning: class" not in ln and ln[20:25] not in ("data:", "note:")  # noqa: E731
    assert [ln[20:31] for ln in _log_lines(a) if own(ln)] == ["epoch   1/1"]
    assert [ln[20:31] for ln in _log_lines(b) if own(ln)] == ["epoch   1/2", "epoch   2/2"]
    assert sum(ln[20:25] == "data:" for ln in _log_lines(b)) == 1  # b's own data line, not a's


def test_an_interrupted_run_says_so_in_train_log_and_still_removes_its_handler(endovis_root, tmp_path,
                                                                               monkeypatch):
    interrupt_in_epoch(monkeypatch, 2)
    with pytest.raises(Interrupted) as e:
        train(recipe_from_dict(tiny_recipe(endovis_root, tmp_path / "runs")))
    (run,) = (tmp_path / "runs").iterdir()
    assert _log_lines(run)[-1][20:] == f"stopped: {e.value.line()}"
    assert [n for n, _, _ in _epochs_in_log(run)] == [1]
    assert not _file_handlers()


def test_runs_in_two_threads_do_not_mix_and_markup_is_plain_in_the_file(tmp_path, capsys):
    log = get_logger("cnnlab.test")
    both_open = threading.Barrier(2)

    def one_run(name: str) -> None:
        (tmp_path / name).mkdir()
        with run_log(tmp_path / name):
            both_open.wait()  # each file handler is attached while the other thread logs
            log.info(f"[bold]{name}[/bold] says hello", extra={"markup": True})
            both_open.wait()

    threads = [threading.Thread(target=one_run, args=(n,)) for n in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in ("x", "y"):
        assert [ln[20:] for ln in _log_lines(tmp_path / name)] == [f"{name} says hello"]
    assert sorted(capsys.readouterr().out.splitlines()) == ["x says hello", "y says hello"]
