"""A data set without a test split (own folders often have none): validation is evaluated once at the end and the
reports show it once, saying there is no test split (found in a report whose two columns were the same numbers)."""
from __future__ import annotations

import json
from pathlib import Path

import cnnlab.engine.summary as summary_mod
from cnnlab.config import recipe_from_dict
from cnnlab.engine.run import train
from cnnlab.report.build import write_run_report
from cnnlab.report.latex import write_latex_report


def test_no_test_split_evaluates_validation_once_and_reports_one_column(tmp_path: Path, endovis_root: Path,
                                                                         monkeypatch):
    from conftest import tiny_recipe

    calls = []
    real = summary_mod.evaluate

    def counting(model, data, *args, **kwargs):
        calls.append(len(data))
        return real(model, data, *args, **kwargs)

    monkeypatch.setattr(summary_mod, "evaluate", counting)
    raw = tiny_recipe(endovis_root, tmp_path / "runs", data={"test": ""}, train={"epochs": 1, "threads": 1})
    run_dir = train(recipe_from_dict(raw))
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["test_split"] is False and s["evaluated_on"] == "validation"
    assert calls == [4]                                   # the 4 validation images, once
    assert s["validation"] == s["metrics"]
    md = (write_run_report(run_dir).parent / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| metric"))
    assert header.count("|") == 3 and "no test split" in header
    tex = write_latex_report(run_dir)
    table = (tex.parent / "table_metrics.tex").read_text()
    assert "there is no test split" in table and "validation &" not in table


def test_with_a_test_split_both_columns_stay(tmp_path: Path, endovis_root: Path):
    from conftest import tiny_recipe

    run_dir = train(recipe_from_dict(tiny_recipe(endovis_root, tmp_path / "runs", train={"epochs": 1,
                                                                                          "threads": 1})))
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["test_split"] is True and s["evaluated_on"] == "test"
    md = (write_run_report(run_dir).parent / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| metric"))
    assert header.count("|") == 4 and "validation" in header
