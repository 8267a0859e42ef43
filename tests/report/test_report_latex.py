"""LaTeX reports and `cnnlab compare`: table rows parsed back from the .tex files against summary.json (and, for a
study, against means, sample stds and paired t-intervals computed here by hand), the best value bolded, special
characters escaped, vector figures, compare's csv against the runs' summaries, and (where pdflatex or tectonic is
installed) the standalone report and a paper that \\input's the pieces compiled for real."""
from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cnnlab.cli import main
from cnnlab.config import recipe_from_dict
from cnnlab.engine.run import train
from cnnlab.errors import CnnlabError
from cnnlab.metrics.names import METRICS, row_label
from cnnlab.report.compare import compare
from cnnlab.report.latex import write_latex_report
from cnnlab.report.tex import bold_best, tex_escape
from cnnlab.study.plan import load_study, plan_to_dict
from conftest import tiny_recipe

T975_2DF = 4.302652729911275  # scipy.stats.t.ppf(0.975, 2)
ODD_CLASSES = ["back_ground", "50% cells", "R&D #1", "x^2 ~ {y}", "a\\b", "<tag>|$"]
UNTEX = [(r"\textbackslash{}", "\\"), (r"\textasciitilde{}", "~"), (r"\textasciicircum{}", "^"),
         (r"\ensuremath{<}", "<"), (r"\ensuremath{>}", ">"), (r"\ensuremath{|}", "|"), (r"\ensuremath{\pm}", "±"),
         (r"\ensuremath{\Delta}", "Δ"), (r"\&", "&"), (r"\%", "%"), (r"\$", "$"), (r"\#", "#"), (r"\_", "_"),
         (r"\{", "{"), (r"\}", "}")]


def untex(cell: str) -> str:
    """Undo tex_escape and the table markup (bold, stacked cells, math signs): the text a reader sees."""
    cell = re.sub(r"\\begin\{tabular\}\[\w\]\{@\{\}\w@\{\}\}", "", cell).replace(r"\end{tabular}", "")
    cell = re.sub(r"\{\\footnotesize (.*?)\}$", r"\1", cell).replace("\\\\", " ")
    cell = re.sub(r"^\\textbf\{(.*)\}$", r"\1", cell)
    cell = cell.replace("$+$", "+").replace("$-$", "-").replace("$^{*}$", " *")
    for tex, char in UNTEX:
        cell = cell.replace(tex, char)
    return cell.strip()


def _part_rows(part: str) -> list[list[str]]:
    body = part.split("\\midrule", 1)[1].split("\\bottomrule", 1)[0]
    return [[c.strip() for c in line.strip().removesuffix("\\\\").split(" & ")] for line in body.strip().splitlines()]


def tex_rows(path: Path) -> list[list[str]]:
    """The body rows of a booktabs table file, cells as written; a table split into parts (each repeating the
    leading columns of the first) is joined back into whole rows."""
    parts = [_part_rows(p) for p in path.read_text().split("\\begin{table}")[1:]]
    rows = parts[0]
    for more in parts[1:]:
        keep = next(i for i in range(len(more[0])) if more[0][i] != rows[0][i])
        assert all(r[:keep] == m[:keep] for r, m in zip(rows, more))
        rows = [r + m[keep:] for r, m in zip(rows, more)]
    return rows


def _png(path: Path) -> None:
    Image.fromarray(np.full((48, 64, 3), (200, 10, 30), np.uint8)).save(path)


@pytest.fixture(scope="module")
def run_dir(endovis_root: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("latex_runs")
    with pytest.MonkeyPatch.context() as mp:  # overlays are tested with training; a stand-in PNG is enough here
        mp.setattr("cnnlab.engine.summary.write_run_figures", lambda *a, **k: [])
        run = train(recipe_from_dict(tiny_recipe(endovis_root, out, train={"epochs": 2})))
    (run / "figures").mkdir(exist_ok=True)
    _png(run / "figures" / "overlays.png")
    return run


@pytest.fixture(scope="module")
def odd_run(run_dir: Path, tmp_path_factory) -> Path:
    """A copy of the run whose name and class names hold every LaTeX special character."""
    d = tmp_path_factory.mktemp("odd") / "odd-run_1"
    shutil.copytree(run_dir, d, ignore=shutil.ignore_patterns("*.pt", "latex"))
    s = json.loads((d / "summary.json").read_text())
    s["name"] = "run_50%_&_#1"
    s["per_class"] = {n: {"dice": 0.1 * (i + 1), "iou": 0.05 * (i + 1), "in_ground_truth": True}
                      for i, n in enumerate(ODD_CLASSES)}
    s["per_class"]["<tag>|$"] = {"dice": None, "iou": None, "in_ground_truth": False}
    (d / "summary.json").write_text(json.dumps(s))
    return d


# hand-set test metrics per variant and seed: different variants are best in different columns, Dice bg is
# equal everywhere (no bold) and lr_low ties wide_net on IoU (both bold)
STUDY_VALUES = {
    "base": {"dice_mean": [0.50, 0.52, 0.57], "dice_mean_foreground": [0.40, 0.41, 0.45], "dice_background": [0, 0, 0],
             "iou_mean": [0.30, 0.31, 0.32], "pixel_accuracy": [0.90, 0.91, 0.93],
             "soft_dice_batch_mean": [0.60, 0.62, 0.61]},
    "wide_net": {"dice_mean": [0.60, 0.61, 0.66], "dice_mean_foreground": [0.50, 0.52, 0.51],
                 "dice_background": [0, 0, 0], "iou_mean": [0.35, 0.36, 0.37], "pixel_accuracy": [0.80, 0.82, 0.81],
                 "soft_dice_batch_mean": [0.55, 0.58, 0.56]},
    "lr_low": {"dice_mean": [0.45, 0.55, 0.50], "dice_mean_foreground": [0.52, 0.53, 0.57],
               "dice_background": [0, 0, 0], "iou_mean": [0.37, 0.36, 0.35], "pixel_accuracy": [0.85, 0.86, 0.84],
               "soft_dice_batch_mean": [0.70, 0.40, 0.50]},
}


@pytest.fixture(scope="module")
def study_dir(run_dir: Path, tmp_path_factory) -> Path:
    """A study folder as `cnnlab study` leaves it (real plan from a study YAML, real run folders) but with the
    hand-set metrics above, so every table cell has an independent oracle."""
    tmp = tmp_path_factory.mktemp("latex_study")
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(yaml.safe_load((run_dir / "config.yaml").read_text())))
    (tmp / "study.yaml").write_text(yaml.safe_dump(
        {"name": "tiny_study", "base": "tiny.yaml", "out": str(tmp / "unused"), "seeds": [0, 1, 2],
         "grid": {"train.batch_size": [4]},
         "variants": {"base": [], "wide_net": ["model.params.width=8"], "lr_low": ["optim.lr=0.001"]}},
        sort_keys=False))
    plan = load_study(tmp / "study.yaml")
    study = tmp / "tiny_study-20260101-000000"
    (study / "runs").mkdir(parents=True)
    shutil.copy(tmp / "study.yaml", study / "study.yaml")
    (study / "plan.json").write_text(json.dumps(plan_to_dict(plan)))
    summary = json.loads((run_dir / "summary.json").read_text())
    classes = list(summary["per_class"])
    for run in plan.runs:
        d = study / "runs" / f"{run.name}-20260101-000000"
        d.mkdir()
        for f in ("config.yaml", "metrics.csv"):
            shutil.copy(run_dir / f, d / f)
        vals = {m: v[run.seed] for m, v in STUDY_VALUES[run.group].items()}
        per_class = {c: {"dice": vals["dice_mean"] - 0.01 * i, "iou": 0.1, "in_ground_truth": True}
                     for i, c in enumerate(classes)}
        (d / "summary.json").write_text(json.dumps({**summary, "name": run.name, "metrics": {**vals, "loss": 1.0},
                                                    "per_class": per_class}))
    return study


@pytest.fixture(scope="module")
def run_report(run_dir: Path) -> Path:
    return write_latex_report(run_dir)


@pytest.fixture(scope="module")
def study_report(study_dir: Path) -> Path:
    return write_latex_report(study_dir)


def test_run_tables_match_summary_json(run_dir: Path, run_report: Path):
    report = run_report
    s = json.loads((run_dir / "summary.json").read_text())
    rows = {untex(r[0]): r[1:] for r in tex_rows(report.parent / "table_metrics.tex")}
    expected = {row_label(key): key for key in METRICS if key in s["metrics"]}
    assert list(rows)[:len(expected)] == list(expected)  # every headline metric, in the markdown report's order
    assert [r.split(" (")[0] for r in list(rows)[len(expected):]] == ["Dice per image", "IoU per image"]
    for label, key in expected.items():
        assert rows[label] == [f"{s['metrics'][key]:.4f}", f"{s['validation'][key]:.4f}"]
    per_class = tex_rows(report.parent / "table_per_class.tex")
    assert [untex(r[0]) for r in per_class] == list(s["per_class"])
    for row, p in zip(per_class, s["per_class"].values()):
        fmt = lambda v: "--" if v is None else f"{v:.4f}"
        assert row[1:] == [fmt(p["dice"]), fmt(p["iou"]), "yes" if p["in_ground_truth"] else "no"]
    assert "Background\\_Tissue" in (report.parent / "table_per_class.tex").read_text()


def test_results_paragraph_names_the_conventions(run_dir: Path, run_report: Path, tmp_path: Path):
    text = (run_report.parent / "results.tex").read_text()
    s = json.loads((run_dir / "summary.json").read_text())
    for phrase in ("argmax", "global counts", "classes present in the ground truth", "never the headline metric"):
        assert phrase in text
    assert f"strict mean Dice of {s['metrics']['dice_mean']:.4f}" in text
    cls = tmp_path / "cls-run"  # a classification run states accuracy, and no Dice convention
    shutil.copytree(run_dir, cls, ignore=shutil.ignore_patterns("*.pt", "latex"))
    c = {**s, "task": "classification", "metrics": {"accuracy": 0.8125, "loss": 0.5}, "validation": {"accuracy": 0.75}}
    del c["per_class"]
    (cls / "summary.json").write_text(json.dumps(c))
    report = write_latex_report(cls)
    text = (report.parent / "results.tex").read_text()
    assert "argmax class equals the label" in text and "accuracy of 0.8125" in text and "Dice" not in text
    assert not (report.parent / "table_per_class.tex").exists()


def test_pieces_exist_and_figures_are_vector_pdfs(run_dir: Path, run_report: Path):
    report = run_report
    pieces = re.findall(r"^\\input\{([^}]+)\}", report.read_text(), re.MULTILINE)
    assert {"results", "table_metrics", "table_per_class", "fig_curves", "fig_per_class", "fig_overlays"} <= set(pieces)
    for p in pieces:
        text = (report.parent / f"{p}.tex").read_text()
        for graphic in re.findall(r"\\includegraphics\[[^]]*\]\{([^}]+)\}", text):
            assert (report.parent / graphic).is_file()
        if p.startswith("fig_"):
            assert "\\caption{" in text and "\\begin{figure}" in text
    for pdf in ("fig_curves.pdf", "fig_per_class.pdf"):
        raw = (report.parent / pdf).read_bytes()
        assert raw.startswith(b"%PDF")
        assert b"/Subtype /Image" not in raw      # drawn as vectors, no embedded bitmap
        assert b"/Type3" not in raw               # TrueType fonts: Type 3 fails conference PDF checks
    assert (report.parent / "overlays.png").read_bytes() == (run_dir / "figures" / "overlays.png").read_bytes()


def test_special_characters_are_escaped(odd_run: Path):
    for text in ["a_b", "50%", "R&D #1", "x^2 ~ {y}", "a\\b", "<t>|$", "±Δ—"]:
        assert untex(tex_escape(text)) == text.replace("—", "--")
    assert tex_escape("R&D #1 50% a_b") == r"R\&D \#1 50\% a\_b"
    report = write_latex_report(odd_run)
    rows = tex_rows(report.parent / "table_per_class.tex")
    assert [untex(r[0]) for r in rows] == ODD_CLASSES
    for r in rows:  # nothing special left unescaped once the escapes themselves are removed
        stripped = re.sub(r"\\(textbackslash|textasciitilde|textasciicircum)\{\}|\\ensuremath\{.\}|\\[&%$#_{}]", "",
                          r[0])
        assert not re.search(r"[&%$#_^~{}\\<>|]", stripped), r[0]
    assert "run\\_50\\%\\_\\&\\_\\#1" in (report.parent / "table_metrics.tex").read_text()


def _study_rows(path: Path) -> dict[str, list[str]]:
    return {untex(r[0]): r for r in tex_rows(path)}


def test_study_table_mean_std_and_best_in_bold(study_report: Path):
    report = study_report
    rows = _study_rows(report.parent / "table_study.tex")
    assert list(rows) == list(STUDY_VALUES)
    metrics = list(STUDY_VALUES["base"])
    for j, m in enumerate(metrics):
        col = 3 + j  # variant, batch_size, seeds, then one column per metric
        means = {v: round(statistics.mean(STUDY_VALUES[v][m]), 4) for v in STUDY_VALUES}
        best = max(means.values()) if len(set(means.values())) > 1 else None
        for v in STUDY_VALUES:
            cell = rows[v][col]
            assert untex(cell) == f"{statistics.mean(STUDY_VALUES[v][m]):.4f} ± " \
                                  f"{statistics.stdev(STUDY_VALUES[v][m]):.4f}", (v, m)
            assert cell.startswith("\\textbf{") == (means[v] == best), (v, m, cell)
    bold = lambda m: {v for v in STUDY_VALUES if rows[v][3 + metrics.index(m)].startswith("\\textbf")}
    assert bold("dice_mean") == {"wide_net"} and bold("pixel_accuracy") == {"base"}
    assert bold("iou_mean") == {"wide_net", "lr_low"} and bold("dice_background") == set()


def test_study_differences_are_paired_95_intervals(study_report: Path):
    report = study_report
    rows = _study_rows(report.parent / "table_differences.tex")
    assert set(rows) == {"wide_net", "lr_low"}
    for v in rows:
        for j, m in enumerate(STUDY_VALUES["base"]):
            d = [a - b for a, b in zip(STUDY_VALUES[v][m], STUDY_VALUES["base"][m])]
            mean, half = statistics.mean(d), T975_2DF * statistics.stdev(d) / math.sqrt(3)
            got = [float(x) for x in re.findall(r"[+-]\d+\.\d+", untex(rows[v][3 + j]))]
            assert got == pytest.approx([mean, mean - half, mean + half], abs=6e-5), (v, m)
            assert ("*" in untex(rows[v][3 + j])) == (mean - half > 0 or mean + half < 0)
    assert "\\ensuremath{\\Delta}" in (report.parent / "table_differences.tex").read_text()


def test_study_per_class_table_and_figures(study_dir: Path, study_report: Path):
    report = study_report
    rows = tex_rows(report.parent / "table_per_class.tex")
    first = json.loads(next((study_dir / "runs").glob("base__*/summary.json")).read_text())
    for i, (row, cls) in enumerate(zip(rows, first["per_class"])):
        means = [statistics.mean(STUDY_VALUES[v]["dice_mean"]) - 0.01 * i for v in STUDY_VALUES]
        assert untex(row[0]) == cls and [untex(c) for c in row[1:]] == [f"{x:.4f}" for x in means]
        assert row[2].startswith("\\textbf")  # wide_net is best in every class
    for fig in ("fig_headline", "fig_differences", "fig_curves"):
        assert (report.parent / f"{fig}.pdf").read_bytes().startswith(b"%PDF")
        assert f"{fig}.pdf" in (report.parent / f"{fig}.tex").read_text()


def test_bold_best_lower_is_better_and_ties():
    rows = [["a", "0.5000 ± 0.1", "1.2000"], ["b", "0.5000 ± 0.2", "0.9000"], ["c", "—", "0.9000"]]
    out = bold_best(rows, [1, 2], [False, True])
    assert [r[1].startswith("\\textbf") for r in out] == [False, False, False]  # a tie of all: nothing stands out
    assert [r[2].startswith("\\textbf") for r in out] == [False, True, True]    # lowest loss, tie both bold


def test_compare_csv_matches_the_runs_summaries(run_dir: Path, odd_run: Path, tmp_path: Path):
    out = tmp_path / "cmp.csv"
    assert main(["compare", str(run_dir), str(odd_run), "--out", str(out)]) == 0
    table = list(csv.DictReader(io.StringIO(out.read_text())))
    by_key = {r["key"]: r for r in table}
    runs = {run_dir.name: json.loads((run_dir / "summary.json").read_text()),
            odd_run.name: json.loads((odd_run / "summary.json").read_text())}
    for name, s in runs.items():
        for key, v in s["metrics"].items():
            assert float(by_key[key][name]) == v
        classes = set(runs[run_dir.name]["per_class"]) | set(ODD_CLASSES)
        for c in classes:
            for what in ("dice", "iou"):
                cell = by_key[f"per_class.{c}.{what}"][name]
                value = s["per_class"].get(c, {}).get(what)
                assert (cell == "") if value is None else (float(cell) == value)
    assert by_key["dice_mean"]["convention"].startswith("strict: argmax, global counts")
    assert "never the headline" in by_key["soft_dice_batch_mean"]["convention"]


def test_compare_md_and_latex(run_dir: Path, odd_run: Path, capsys):
    assert main(["compare", str(run_dir), str(odd_run)]) == 0
    md = capsys.readouterr().out
    header = md.splitlines()[0]
    assert header == f"| metric | convention | {run_dir.name} | {odd_run.name} |"
    row = next(line for line in md.splitlines() if line.startswith("| Dice: R&D #1 |"))
    assert row.endswith("|  | 0.3000 |")  # blank: the first run has no such class; one value: no bold
    latex = compare([run_dir, odd_run], "latex")
    rows = {untex(r[0]): r for r in tex_rows_text(latex)}
    assert rows["Dice: R&D #1"][2:] == ["", "0.3000"]
    assert "\\begin{tabular}" in latex and "\\toprule" in latex and "\\caption{" in latex


def test_compare_says_when_runs_were_evaluated_on_different_splits(run_dir: Path, tmp_path: Path):
    other = tmp_path / "val-run"
    other.mkdir()
    s = json.loads((run_dir / "summary.json").read_text())
    (other / "summary.json").write_text(json.dumps({**s, "evaluated_on": "validation",
                                                    "metrics": {**s["metrics"], "dice_mean": 0.9}}))
    md = compare([run_dir, other], "md")
    assert "evaluated on different splits (test, validation)" in md
    assert f"| {s['metrics']['dice_mean']:.4f} | **0.9000** |" in md   # best of the row in bold
    assert "different splits" not in compare([run_dir, run_dir.parent / run_dir.name], "md")


def tex_rows_text(text: str) -> list[list[str]]:
    body = text.split("\\midrule", 1)[1].split("\\bottomrule", 1)[0]
    return [[c.strip() for c in line.strip().removesuffix("\\\\").split(" & ")] for line in body.strip().splitlines()]


def test_compare_refuses_what_is_not_a_finished_run(run_dir: Path, study_dir: Path, tmp_path: Path, capsys):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(run_dir / "config.yaml", unfinished / "config.yaml")
    with pytest.raises(CnnlabError, match="has not finished"):
        compare([run_dir, unfinished])
    with pytest.raises(CnnlabError, match="is a study folder"):
        compare([study_dir])
    assert main(["compare", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    with pytest.raises(CnnlabError, match="has not finished"):
        write_latex_report(unfinished)


def _tex_engine() -> list[str] | None:
    if shutil.which("pdflatex"):
        return ["pdflatex", "-interaction=nonstopmode", "-halt-on-error"]
    if shutil.which("tectonic"):
        return ["tectonic"]
    return None


def _compile(folder: Path, main_tex: str) -> Path:
    engine = _tex_engine()
    done = subprocess.run([*engine, main_tex], check=False, cwd=folder, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:]
    pdf = folder / main_tex.replace(".tex", ".pdf")
    assert pdf.read_bytes().startswith(b"%PDF")
    return pdf


@pytest.mark.skipif(_tex_engine() is None, reason="no pdflatex or tectonic on PATH")
def test_standalone_reports_compile(odd_run: Path, study_report: Path):
    _compile(write_latex_report(odd_run).parent, "report.tex")     # every special character in names
    _compile(study_report.parent, "report.tex")


@pytest.mark.skipif(_tex_engine() is None, reason="no pdflatex or tectonic on PATH")
def test_pieces_paste_into_a_paper(run_dir: Path, run_report: Path, tmp_path: Path):
    """What the README tells a user: copy the latex folder next to the paper, set \\graphicspath, \\input."""
    shutil.copytree(run_report.parent, tmp_path / "results", ignore=shutil.ignore_patterns("report.*"))
    (tmp_path / "cmp.tex").write_text(compare([run_dir], "latex"))
    (tmp_path / "paper.tex").write_text("\n".join([
        "\\documentclass{article}", "\\usepackage[T1]{fontenc}", "\\usepackage{booktabs,graphicx}",
        "\\graphicspath{{results/}}", "\\begin{document}", "\\section{Results}", "\\input{results/results}",
        "\\input{results/table_metrics}", "\\input{results/fig_curves}", "\\input{results/fig_overlays}",
        "\\input{cmp}", "\\end{document}"]))
    _compile(tmp_path, "paper.tex")
