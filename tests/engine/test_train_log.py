"""Issue 29: train.log holds every line the run printed: the first line (what is read), the `data:` line (logged
before the run dir existed), the final tables (printed after the run's log closed).

Oracle: the terminal output of the same command, line for line (stamps and table borders aside)."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from cnnlab.cli import main
from cnnlab.logs import get_logger, run_log
from conftest import tiny_recipe

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")


def test_train_log_has_the_first_line_the_data_line_and_the_final_tables(endovis_root: Path, tmp_path: Path,
                                                                         capsys):
    raw = tiny_recipe(endovis_root, tmp_path / "runs", train={"epochs": 1, "progress": True})
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    get_logger("cnnlab.test").info("a line of an earlier command")  # not this run's: never in its train.log
    assert main(["train", str(recipe)]) == 0
    shown = [line.strip() for line in capsys.readouterr().out.splitlines()]
    (run_dir,) = (tmp_path / "runs").iterdir()
    kept = [STAMP.sub("", line).strip() for line in (run_dir / "train.log").read_text().splitlines()]
    assert kept[0].startswith("training tiny (segmentation, unet): reading ") and kept[0] in shown
    assert any(line.startswith("data: 8 train, 4 validation, 4 test images") for line in kept)
    assert "tiny: test split (4 images), best epoch 1 of 1" in kept
    dice = next(line for line in shown if line.startswith("│ Dice (strict"))
    assert dice in kept  # the metrics table, row for row
    assert any(line.startswith("learnable parameters:") for line in kept)
    assert kept[-1] == shown[-1] == f"report: {run_dir / 'report.html'}"  # the last line printed, last in the log
    assert not any("earlier command" in line for line in kept)


def test_lines_after_a_run_closed_do_not_reach_the_next_run(tmp_path: Path):
    log = get_logger("cnnlab.test")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    log.info("before a")
    with run_log(tmp_path / "a"):
        log.info("in a")
    log.info("after a, before b")
    with run_log(tmp_path / "b"):
        pass
    a = (tmp_path / "a" / "train.log").read_text()
    b = (tmp_path / "b" / "train.log").read_text()
    assert "before a" in a and "in a" in a and "after a" not in a
    assert "after a, before b" in b and "in a" not in b and "before a\n" not in b
