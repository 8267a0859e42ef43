"""LaTeX reports for papers: `cnnlab report RUN_DIR|STUDY_DIR --format latex` writes FOLDER/latex/ with
report.tex (a standalone article) that only \\input's the pieces beside it: results.tex (the paragraph stating the
metric conventions), booktabs tables (table_*.tex) and figure environments (fig_*.tex) with their vector PDF
figures. Each piece can be \\input on its own into a NeurIPS-style paper (needs booktabs and graphicx), so the
same numbers as the md/html report go into the paper without retyping.

Only the run folder is read (summary.json, metrics.csv, config.yaml, figures/); the numbers come from the same
functions as the markdown report (common.fmt, study.table.table_sections) and the labels from metrics.names."""
from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib

from cnnlab.engine.run_files import FIGURES, read_config, read_history, require_summary
from cnnlab.metrics.names import METRICS, PER_CLASS_LABELS, row_label
from cnnlab.report.common import caption, fmt, folder_kind
from cnnlab.report.latex_figures import curve_metric, run_curves_pdf
from cnnlab.report.latex_study import write_study_latex
from cnnlab.report.latex_template import Template, template
from cnnlab.report.study_figures import per_class_dice_bars
from cnnlab.report.tex import (
    conventions_tex,
    figure_tex,
    notes_tex,
    signed,
    slug,
    table_tex,
    tex_escape,
    tt,
    wrapped,
    write_pieces,
)
from cnnlab.tasks import TASKS, Task


def _num(v) -> str:
    """The markdown report's number format (4 decimals, — for undefined), typeset for LaTeX."""
    return signed(tex_escape(fmt(v)))


def _run_metric_rows(s: dict) -> list[list[str]]:
    """The markdown report's headline rows (label naming the convention, evaluated split, validation; without a test
    split the evaluated split is validation, one column)."""
    m, v, both = s.get("metrics", {}), s.get("validation", {}), s.get("test_split", True)
    rows = [[tex_escape(row_label(k)), _num(m.get(k)), *([_num(v.get(k))] if both else [])]
            for k in METRICS if k in m or (both and k in v)]
    b = s.get("binary")
    if b:
        rows += [[wrapped(label), _num(b.get(k)), *(["--"] if both else [])] for label, k in (
            ("per-image Dice (mean over images)", "per_image_dice_mean"),
            (f"boundary-band Dice (band {b.get('boundary_band_width')} px)", "boundary_dice_mean"),
            ("boundary F1", "boundary_f1_mean")) if k in b]
    p = s.get("per_image")
    if p:  # multi-class: each image's mean over the classes present in it, averaged over the images
        rows += [[wrapped(label), _num(p.get(k)), *(["--"] if both else [])] for label, k in (
            ("Dice per image (mean over images of the mean over classes present)", "dice_mean_per_image"),
            ("IoU per image (mean over images of the mean over classes present)", "iou_mean_per_image"))]
    return rows


def _run_sentence(s: dict, lab: str, curves: bool) -> str:
    """What the run reached, in words, pointing at the tables and figures."""
    name, split = tt(s.get("name", "?")), tex_escape(s.get("evaluated_on", "?"))
    where = f"on the {split} split ({s.get('n_images', '?')} images), with the weights of epoch " \
            f"{s.get('best_epoch')} of {s.get('epochs_run')}"
    ref = f"(Table~\\ref{{tab:{lab}-metrics}})"
    words, value, more = (TASKS.get(s.get("task", "")) or Task()).reached(s)  # the run's task says what it reached
    rest = "; " + ", ".join(f"{w} {_num(v)}" for w, v in more) if more else ""
    head = f"Run {name} reaches {words} {_num(value)} {where} {ref}{rest}."
    per_class = f" Table~\\ref{{tab:{lab}-per-class}} lists Dice and IoU per class." if "per_class" in s else ""
    fig = f" Figure~\\ref{{fig:{lab}-curves}} shows the training curves." if curves else ""
    return f"{head}{per_class}{fig}"


def _run_setup(run_dir: Path, s: dict) -> str:
    """One sentence on how the run was trained, from its resolved config.yaml."""
    c = read_config(run_dir)  # a bad tag or syntax: one line naming the file, not a traceback
    model, optim, train = c.get("model", {}), c.get("optim", {}), c.get("train", {})
    params = ", ".join(f"{k}={v}" for k, v in (model.get("params") or {}).items())
    return (f"Setup: model \\texttt{{{tex_escape(model.get('name', '?'))}}}"
            f"{f' ({tex_escape(params)})' if params else ''}, loss \\texttt{{"
            f"{tex_escape((c.get('loss') or {}).get('name', '?'))}}}, optimiser \\texttt{{"
            f"{tex_escape(optim.get('name', '?'))}}} with learning rate {tex_escape(optim.get('lr', '?'))}, batch "
            f"size {tex_escape(train.get('batch_size', '?'))}, at most {tex_escape(train.get('epochs', '?'))} "
            f"epochs, on {tex_escape(s.get('device', '?'))} ({tex_escape(s.get('precision', '?'))}).")


def _run_figures(run_dir: Path, s: dict, out: Path, lab: str) -> dict[str, str]:
    """fig_curves (PDF from metrics.csv), fig_per_class (PDF from summary.json) and the run's other PNG figures
    (overlays, confusion matrix, ...), copied beside the report so the folder is self-contained."""
    src, pieces = str(run_dir.name), {}
    history = read_history(run_dir)
    if history:
        run_curves_pdf(history, out / "fig_curves.pdf")
        metric = curve_metric(history)
        pieces["fig_curves"] = figure_tex(
            "fig_curves.pdf", "Training (solid) and validation (dashed) loss per epoch"
            + (f"; right: the {metric[1]} per epoch." if metric else "."), f"fig:{lab}-curves", src)
    if s.get("per_class"):
        per_class_dice_bars(s["per_class"], out / "fig_per_class.pdf", f"strict Dice per class, "
                            f"{s.get('evaluated_on', '?')} split")
        pieces["fig_per_class"] = figure_tex("fig_per_class.pdf", tex_escape(caption("per_class_dice.png")),
                                             f"fig:{lab}-per-class", src, "0.8\\linewidth")
    skip = {"loss_curves.png", "per_class_dice.png"}  # re-drawn above as PDF
    for png in sorted((run_dir / FIGURES).glob("*.png")) if (run_dir / FIGURES).is_dir() else []:
        if png.name in skip:
            continue
        shutil.copy2(png, out / png.name)
        stem = slug(png.stem).replace("-", "_")
        pieces[f"fig_{stem}"] = figure_tex(png.name, tex_escape(caption(png.name)), f"fig:{lab}-{slug(png.stem)}",
                                           src)
    return pieces


def write_run_latex(run_dir: str | Path, tpl: Template | None = None) -> Path:
    """RUN_DIR/latex/: report.tex and its pieces (figures in the template's fonts); returns report.tex."""
    run_dir, tpl = Path(run_dir), tpl or template("article")
    s = require_summary(run_dir, f"finish it with cnnlab train --resume {run_dir}, or see its progress with "
                        f"cnnlab report {run_dir}")
    out, lab, src = run_dir / "latex", slug(s.get("name", run_dir.name)), run_dir.name
    split = s.get("evaluated_on", "?")
    out.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(tpl.figure_rc):
        figures = _run_figures(run_dir, s, out, lab)
    results = (f"% written by cnnlab (results paragraph of {src}); \\input this file\n"
               f"\\paragraph{{Metric conventions.}} {conventions_tex(s.get('task', ''), split)}\n\n"
               f"{{\\sloppy\\paragraph{{Results.}} {_run_sentence(s, lab, 'fig_curves' in figures)} "
               f"{_run_setup(run_dir, s)}\\par}}\n")
    both = s.get("test_split", True)
    pieces = {"results": results, "table_metrics": table_tex(
        ["metric (convention)", f"{tex_escape(split)} split", *(["validation"] if both else [])], _run_metric_rows(s),
        f"Headline metrics of run \\texttt{{{tex_escape(s.get('name', '?'))}}} on the {tex_escape(split)} split "
        f"({s.get('n_images', '?')} images)" + (" and on the validation split" if both else
        "; there is no test split") + ". Each row names its convention; the soft "
        "Dice per batch is the course's convention, shown for reference, never the headline.",
        f"tab:{lab}-metrics", src)}
    if s.get("per_class"):
        rows = [[wrapped(n, 30), _num(p.get("dice")), _num(p.get("iou")),
                 "yes" if p.get("in_ground_truth") else "no"] for n, p in s["per_class"].items()]
        pieces["table_per_class"] = table_tex(
            ["class", *(tex_escape(PER_CLASS_LABELS[k]) for k in ("dice", "iou", "in_ground_truth"))], rows,
            f"Strict Dice and IoU per class on the {tex_escape(split)} split (global counts over the split); "
            "-- marks a class in neither ground truth nor prediction, whose score is undefined.",
            f"tab:{lab}-per-class", src, "lrrc")
    pieces.update(figures)
    notes = [n for n in [s.get("fit_note", ""), *s.get("notes", [])] if n]
    if notes:
        pieces["run_notes"] = notes_tex(notes, src)
    tpl.install(out)
    return write_pieces(out, f"Run {tex_escape(s.get('name', run_dir.name))}", pieces, tpl.preamble)


def write_latex_report(path: str | Path, template_name: str = "article") -> Path:
    """A study folder (plan.json) or a run folder (config.yaml): its LaTeX report; returns report.tex.
    template_name: article, neurips or a .sty path (latex_template)."""
    path, tpl = Path(path), template(template_name)
    return write_study_latex(path, tpl) if folder_kind(path) == "study" else write_run_latex(path, tpl)
