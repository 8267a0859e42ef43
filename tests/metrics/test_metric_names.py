"""One name per metric: the run report (md/html), the terminal table, `cnnlab compare`, the study table, the study
report and the LaTeX pieces label each metric with the text of cnnlab.metrics.names, and read it there when they
render. The first test compares every output with names.py's texts (a caller with its own, different label
fails); the second replaces entries of names.py's table by sentinels and requires every output to follow (a
caller holding a copy, even an identical one today, fails)."""
from __future__ import annotations

import io
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from cnnlab.errors import ConfigError
from cnnlab.metrics import names
from cnnlab.metrics.names import METRICS, PER_CLASS_LABELS, convention, label, row_label
from cnnlab.report.build import write_report
from cnnlab.report.compare import compare
from cnnlab.report.latex import write_latex_report
from cnnlab.report.tables import print_run_table
from cnnlab.report.tex import header, tex_escape
from cnnlab.study.plan import load_study, plan_to_dict
from cnnlab.study.table import collect_results
from cnnlab.tasks import TASKS
from conftest import tiny_recipe

STUDY_METRICS = TASKS["segmentation"].study_metrics
PER_CLASS_KEYS = ("dice", "iou", "in_ground_truth")


def _summary(name: str, shift: float) -> dict:
    """A finished segmentation run's summary.json with every metric of the table (values by hand)."""
    metrics = {k: round(0.1 + 0.05 * i + shift, 4) for i, k in enumerate(METRICS)}
    return {"name": name, "task": "segmentation", "evaluated_on": "test", "n_images": 4, "metrics": metrics,
            "validation": metrics, "best_epoch": 2, "epochs_run": 2, "train_seconds": 1.0,
            "train_images_per_s": 8.0, "device": "cpu", "precision": "fp32",
            "per_class": {"bg": {"dice": 0.9, "iou": 0.8, "in_ground_truth": True},
                          "tool": {"dice": 0.5 + shift, "iou": 0.3, "in_ground_truth": True}}}


def _run(folder: Path, raw: dict, name: str, shift: float) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(raw))
    (folder / "summary.json").write_text(json.dumps(_summary(name, shift)))
    (folder / "metrics.csv").write_text("epoch,train_loss,val_loss,val_dice_mean\n1,1.0,1.1,0.4\n2,0.8,0.9,0.5\n")
    return folder


@pytest.fixture(scope="module")
def dirs(endovis_root: Path, tmp_path_factory) -> dict[str, Path]:
    """Two hand-made runs and a study of two variants x two seeds (plan from a real study file)."""
    tmp = tmp_path_factory.mktemp("names")
    raw = tiny_recipe(endovis_root, tmp / "unused")
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(raw))
    (tmp / "study.yaml").write_text(yaml.safe_dump(
        {"name": "names", "base": "tiny.yaml", "seeds": [0, 1],
         "variants": {"base": [], "wide": ["model.params.width=8"]}}, sort_keys=False))
    study = tmp / "names-20260101-000000"
    (study / "runs").mkdir(parents=True)
    shutil.copy(tmp / "study.yaml", study / "study.yaml")
    plan = load_study(tmp / "study.yaml")
    (study / "plan.json").write_text(json.dumps(plan_to_dict(plan)))
    for i, run in enumerate(plan.runs):
        _run(study / "runs" / f"{run.name}-20260101-000000", raw, run.name, 0.01 * i)
    return {"run": _run(tmp / "run-a", raw, "run-a", 0.0), "other": _run(tmp / "run-b", raw, "run-b", 0.02),
            "study": study}


def _md_table(text: str, first_header: str) -> list[list[str]]:
    """The markdown table whose first header cell is first_header: header row then body rows, as cells."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"| {first_header} |"))
    rows = []
    for ln in lines[start:]:
        if not ln.startswith("|"):
            break
        if not ln.startswith("|---"):
            rows.append([c.strip() for c in ln.strip("|").split(" | ")])
    return rows


def _tex_table(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header cells and body rows of a booktabs table file, as written; a table split into parts (each repeating
    the leading columns) joined back."""
    head, rows = None, None
    for part in path.read_text().split("\\begin{table}")[1:]:
        h = part.split("\\toprule", 1)[1].split("\\midrule", 1)[0].strip().removesuffix("\\\\").strip()
        body = part.split("\\midrule", 1)[1].split("\\bottomrule", 1)[0].strip()
        h = [c.strip() for c in h.split(" & ")]
        b = [[c.strip() for c in ln.strip().removesuffix("\\\\").split(" & ")] for ln in body.splitlines()]
        if head is None:
            head, rows = h, b
            continue
        keep = next(i for i in range(len(h)) if h[i] != head[i])
        head, rows = head + h[keep:], [r + m[keep:] for r, m in zip(rows, b)]
    return head, rows


def _placeholder(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def _no_drawing(monkeypatch) -> list[str]:
    """Figures are drawn and checked elsewhere (test_report*.py); here each drawing function writes an empty file
    and records the metric label it was given, which keeps the renders fast."""
    given: list[str] = []

    def labelled(results, metric, name, path):  # headline_bars, difference_plot
        given.append(name)
        return _placeholder(path)

    def curves(results, path, metric=None, name=""):  # study_loss_curves
        given.append(name)
        return _placeholder(path)

    for module in ("build", "latex_study"):
        monkeypatch.setattr(f"cnnlab.report.{module}.headline_bars", labelled)
        monkeypatch.setattr(f"cnnlab.report.{module}.difference_plot", labelled)
        monkeypatch.setattr(f"cnnlab.report.{module}.study_loss_curves", curves)
    for name in ("latex.per_class_dice_bars", "latex.run_curves_pdf"):  # the run's own PNGs: drawn by the engine
        monkeypatch.setattr(f"cnnlab.report.{name}", lambda data, path, *rest: _placeholder(path))
    return given


def _render(dirs: dict[str, Path], monkeypatch) -> dict:
    """Every output that labels metrics, freshly rendered."""
    given = _no_drawing(monkeypatch)
    run, study = dirs["run"], dirs["study"]
    write_report(run)
    write_report(study)
    run_tex, study_tex = write_latex_report(run).parent, write_latex_report(study).parent
    buf = io.StringIO()
    print_run_table(run, Console(file=buf, width=250, highlight=False))
    return {"run_md": (run / "report.md").read_text(), "run_html": (run / "report.html").read_text(),
            "terminal": buf.getvalue(), "compare": compare([run, dirs["other"]], "md"),
            "table_md": (study / "table.md").read_text(), "study_md": (study / "report.md").read_text(),
            "run_tex": _tex_table(run_tex / "table_metrics.tex"),
            "run_tex_per_class": _tex_table(run_tex / "table_per_class.tex"),
            "run_tex_curves": (run_tex / "fig_curves.tex").read_text(),
            "study_tex": _tex_table(study_tex / "table_study.tex"),
            "study_tex_diff": _tex_table(study_tex / "table_differences.tex"),
            "study_tex_results": (study_tex / "results.tex").read_text(), "figure_labels": given}


def _check(out: dict) -> None:
    """Each output's labels are exactly names.py's (short label, row label, convention, per-class columns)."""
    rows = [label(k) for k in STUDY_METRICS]
    assert [r[0] for r in _md_table(out["run_md"], "metric")[1:]] == [row_label(k) for k in METRICS]
    assert _md_table(out["run_md"], "class")[0] == ["class", *(PER_CLASS_LABELS[k] for k in PER_CLASS_KEYS)]
    for k in METRICS:
        assert f"<td>{row_label(k)}</td>" in out["run_html"]
        assert re.search(rf"│ {re.escape(row_label(k))} +│", out["terminal"]), k
    for k in PER_CLASS_KEYS:
        assert f" {PER_CLASS_LABELS[k]} " in out["terminal"]
    assert [r[:2] for r in _md_table(out["compare"], "metric")[3:3 + len(METRICS)]] == \
        [[label(k), convention(k)] for k in METRICS]
    for text in (out["table_md"], out["study_md"]):
        assert _md_table(text, "variant")[0][-len(rows):] == rows
        assert _md_table(text, "variant")[0][-len(rows):] == rows
        diff = next(t for t in re.split(r"\n\n", text) if "| pairs |" in t)
        assert [f"Δ {r}" for r in rows] == _md_table(diff, "variant")[0][-len(rows):]
    assert [r[0] for r in out["run_tex"][1]] == [tex_escape(row_label(k)) for k in METRICS]
    assert out["run_tex_per_class"][0][1:] == [tex_escape(PER_CLASS_LABELS[k]) for k in PER_CLASS_KEYS]
    assert f"the {tex_escape('validation ' + label('dice_mean'))} per epoch" in out["run_tex_curves"]
    assert out["study_tex"][0][-len(rows):] == [header(r) for r in rows]
    assert out["study_tex_diff"][0][-len(rows):] == [header(f"Δ {r}") for r in rows]
    assert f"The best {tex_escape(label(STUDY_METRICS[0]))} is reached" in out["study_tex_results"]
    assert out["figure_labels"] == [label(STUDY_METRICS[0])] * 6  # headline, differences, curves: md and LaTeX


def test_reports_tables_and_latex_label_each_metric_as_metrics_names_does(dirs, monkeypatch):
    _check(_render(dirs, monkeypatch))


def _cells(out: dict) -> set[str]:
    """Every table cell of every output: markdown tables, the terminal tables, LaTeX headers and first columns."""
    cells = set()
    for key in ("run_md", "compare", "table_md", "study_md", "terminal"):
        for line in out[key].splitlines():
            if line.startswith(("|", "│", "┃")):
                cells |= {c.strip() for c in re.split(r"[|│┃]", line)}
    for key in ("run_tex", "run_tex_per_class", "study_tex", "study_tex_diff"):
        head, body = out[key]
        cells |= set(head) | {r[0] for r in body}
    return cells


def test_every_label_is_read_from_metrics_names_when_rendering(dirs, monkeypatch):
    real = [t for m in METRICS.values() for t in (m.label, m.row_label)] + list(PER_CLASS_LABELS.values())
    for i, key in enumerate(METRICS):
        monkeypatch.setitem(METRICS, key, replace(METRICS[key], label=f"short{i} (by names)",
                                                  row_label=f"row{i} (by names)", convention=f"convention {i}"))
    for key in PER_CLASS_KEYS:
        monkeypatch.setitem(PER_CLASS_LABELS, key, f"{key} by names")
    out = _render(dirs, monkeypatch)
    _check(out)  # the outputs follow the replaced table...
    # ...and no table cell or conventions paragraph still spells a label of its own
    cells = _cells(out)
    left = {t for t in real if t in cells or tex_escape(t) in cells or header(t) in cells}
    assert not left, f"labels still written by a copy outside metrics/names.py: {left}"
    for t in real:
        assert f"{t} = " not in out["table_md"] + out["study_md"], t
    assert "short0 (by names) = `dice_mean`" in out["table_md"]


def test_loss_is_the_one_metric_where_lower_is_better():
    assert [k for k in METRICS if names.lower_is_better(k)] == ["loss"]
    assert not names.lower_is_better("psnr_db") and label("psnr_db") == "psnr_db"  # unknown: shown as its key


def test_a_study_takes_its_metrics_from_its_task(dirs, endovis_root, tmp_path, monkeypatch):
    """The study table (columns, headline) and the check of a study file's `metric:` read the one list per task,
    the task's study_metrics (study/plan.py used to keep its own, HEADLINE; metrics/names.py kept one per task name)."""
    monkeypatch.setattr(TASKS["segmentation"], "study_metrics", ("iou_mean", "dice_mean"))
    results = collect_results(dirs["study"])
    assert results["metrics"] == ["iou_mean", "dice_mean"] and results["headline_metric"] == "iou_mean"
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_recipe(endovis_root, tmp_path / "unused")))
    study = {"name": "m", "base": "tiny.yaml", "seeds": [0], "variants": {"base": []}}
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump({**study, "metric": "iou_mean"}))
    assert load_study(tmp_path / "ok.yaml").metric == "iou_mean"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**study, "metric": "pixel_accuracy"}))  # not in the list now
    with pytest.raises(ConfigError, match="study key 'metric' is 'pixel_accuracy'"):
        load_study(tmp_path / "bad.yaml")


def test_summary_conventions_come_from_the_table_and_name_only_the_metrics_the_run_reports():
    """summary.json's metric_conventions used to be a second set of texts, with Dice conventions written into
    classification runs too; now it is the table's own text for exactly the metrics of the run."""
    from cnnlab.metrics.names import EMPTY_CLASS_RULE, convention, metric_conventions

    cls = metric_conventions({"accuracy": 0.9, "loss": 0.3})
    assert cls == {"accuracy": convention("accuracy"), "loss": convention("loss")}
    seg = metric_conventions({"dice_mean": 0.8, "dice_background": 0.9, "psnr_db": 20.0})
    assert seg == {"dice_mean": convention("dice_mean"), "dice_background": convention("dice_background"),
                   "empty_class_rule": EMPTY_CLASS_RULE}
