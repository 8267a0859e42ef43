"""cnnlab.logs, the one console and every run's train.log (issue 32): a line a run logs before its run dir exists
reaches that run's train.log, and the console is widened for piped tables only for as long as they print."""
from __future__ import annotations

import ast
from pathlib import Path

import torch

from cnnlab import logs
from cnnlab.config import recipe_from_dict
from cnnlab.engine import runtime
from cnnlab.engine.run import train
from conftest import tiny_recipe

NOTE = ("note: 3 of 4 cores busy with other work: training with 1 torch thread(s) instead of 4 "
        "(set train.threads to choose)")


def test_the_busy_cores_note_from_before_the_run_dir_reaches_its_train_log(endovis_root, tmp_path, monkeypatch,
                                                                          capsys):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runtime, "DEFAULT_THREADS", 4)
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(runtime, "busy_cores", lambda: 3)
    before = torch.get_num_threads()
    try:
        run = train(recipe_from_dict(tiny_recipe(endovis_root, tmp_path / "runs", train={"epochs": 1})))
    finally:
        torch.set_num_threads(before)
    assert NOTE in capsys.readouterr().out.splitlines()  # on the terminal, as before
    lines = [line[20:] for line in (run / logs.LOG_FILE).read_text().splitlines()]  # past the timestamp
    epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch"))
    assert NOTE in lines[:epoch]  # chosen before the run dir existed, written first when train.log opened


def test_piped_width_widens_the_one_console_for_its_block_only():
    before = logs.console.width  # pytest captures stdout: not a terminal
    with logs.piped_width(200) as console:
        assert console is logs.console and console.width == 200
    assert logs.console.width == before


def test_no_module_but_logs_makes_a_rich_console():
    """One terminal per process: a second Console draws over the progress bars and ignores piped_width."""
    src = Path(__file__).resolve().parents[2] / "src" / "cnnlab"
    makers = []
    for path in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            func = node.func if isinstance(node, ast.Call) else None
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name == "Console" and path.name != "logs.py":
                makers.append(f"{path.relative_to(src)}:{node.lineno}")
    assert makers == []
