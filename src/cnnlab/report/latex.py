"""LaTeX reports for papers: `cnnlab report RUN_DIR|STUDY_DIR --format latex` writes FOLDER/latex/ with
report.tex (a standalone article) that only \\input's the pieces beside it: results.tex (the paragraph stating the
metric conventions), booktabs tables (table_*.tex) and figure environments (fig_*.tex) with their vector PDF
figures. Each piece can be \\input on its own into a NeurIPS-style paper (needs booktabs and graphicx), so the
same numbers as the md/html report go into the paper without retyping.

Only the run folder is read (summary.json, metrics.csv, config.yaml, figures/); the numbers come from the same
functions as the markdown report (build.METRIC_ROWS and _fmt, study_table.table_sections)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import yaml

from ..errors import CnnlabError

_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\ensuremath{<}",
            ">": r"\ensuremath{>}", "|": r"\ensuremath{|}", "±": r"\ensuremath{\pm}", "Δ": r"\ensuremath{\Delta}",
            "—": "--", "×": r"\ensuremath{\times}"}
_ESCAPE_RE = re.compile("|".join(re.escape(k) for k in _ESCAPES))
HEADER = "% written by cnnlab ({what} of {source}); \\input this file; needs \\usepackage{{booktabs,graphicx}}\n"
# shrink a table to the line width only when it is wider (graphicx's \width is the natural width here)
FIT_OPEN = "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%\n"
LOWER_IS_BETTER = ("loss",)


def tex_escape(text: object) -> str:
    """Plain text (class, variant, run names, labels) safe in LaTeX text mode, OT1 or T1 font encoding alike."""
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], str(text))


def signed(text: str) -> str:
    """Typeset the signs of numbers as math plus/minus (a text hyphen is too short for a minus sign)."""
    return re.sub(r"(?<![\w.}])([+-])(?=\d)", r"$\1$", text)


def slug(name: str) -> str:
    """A label-safe form of a run or study name, so two reports in one paper get distinct \\label's."""
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-") or "cnnlab"


def stacked(top: str, bottom: str, align: str = "c", pos: str = "b") -> str:
    """Two lines in one table cell (a nested tabular: no extra package), to keep wide tables narrow."""
    return f"\\begin{{tabular}}[{pos}]{{@{{}}{align}@{{}}}}{top}\\\\{bottom}\\end{{tabular}}"


def header(label: str) -> str:
    """A column header, its parenthesised convention on a second line ('Dice fg (strict)')."""
    head, sep, rest = label.partition(" (")
    return stacked(tex_escape(head), tex_escape(sep.strip() + rest)) if sep else tex_escape(label)


def bold_best(rows: list[list[str]], columns: list[int], lower: list[bool]) -> list[list[str]]:
    """Bold the best value of each listed column (rows as display strings; the value is the cell's first number,
    e.g. the mean of 'mean ± std'). Ties at the shown precision are all bold; a column with fewer than two
    distinct values gets no bold, as nothing stands out."""
    out = [list(r) for r in rows]
    for col, low in zip(columns, lower):
        vals = {}
        for i, r in enumerate(rows):
            m = re.match(r"\s*([+-]?\d+(?:\.\d+)?(?:e[+-]?\d+)?)", r[col])
            if m:
                vals[i] = m.group(1)
        if len({float(v) for v in vals.values()}) < 2:
            continue  # one value, or all equal: nothing stands out
        best = (min if low else max)(float(v) for v in vals.values())
        for i, v in vals.items():
            if float(v) == best:
                out[i][col] = f"\\textbf{{{out[i][col]}}}"
    return out


def table_tex(headers: list[str], rows: list[list[str]], caption: str, label: str, source: str,
              align: str | None = None) -> str:
    """A booktabs table float; headers and rows must already be LaTeX (escaped). Caption above, NeurIPS style."""
    align = align or "l" + "r" * (len(headers) - 1)
    lines = [HEADER.format(what="table", source=source), "\\begin{table}[t]", "  \\centering",
             f"  \\caption{{{caption}}}", f"  \\label{{{label}}}", "  \\small", "  " + FIT_OPEN.rstrip("\n"),
             f"  \\begin{{tabular}}{{{align}}}", "    \\toprule", "    " + " & ".join(headers) + " \\\\",
             "    \\midrule"]
    lines += ["    " + " & ".join(r) + " \\\\" for r in rows]
    lines += ["    \\bottomrule", "  \\end{tabular}}", "\\end{table}", ""]
    return "\n".join(lines)


def figure_tex(file: str, caption: str, label: str, source: str, width: str = "\\linewidth") -> str:
    """A figure float including one file that sits beside it (report.tex's folder, or \\graphicspath)."""
    size = f"width={width},height=0.7\\textheight,keepaspectratio"  # tall figures stay on one page
    return "\n".join([HEADER.format(what="figure", source=source), "\\begin{figure}[t]", "  \\centering",
                      f"  \\includegraphics[{size}]{{{file}}}", f"  \\caption{{{caption}}}",
                      f"  \\label{{{label}}}", "\\end{figure}", ""])


def document_tex(title: str, pieces: list[str]) -> str:
    """The standalone report: preamble plus one \\input per piece, compiled with `pdflatex report.tex`."""
    return "\n".join([
        "% Standalone cnnlab report: run `pdflatex report.tex` in this folder. To use the pieces in a paper, copy",
        "% this folder next to it, add \\usepackage{booktabs,graphicx} and \\graphicspath{{FOLDER/}}, and",
        "% \\input{FOLDER/table_...} or \\input{FOLDER/fig_...} where they belong.",
        "\\documentclass{article}", "\\usepackage[utf8]{inputenc}",
        # T1 only with Latin Modern (vector fonts); the pieces are escaped to work in OT1 and T1 alike
        "\\IfFileExists{lmodern.sty}{\\usepackage[T1]{fontenc}\\usepackage{lmodern}}{}", "\\usepackage{booktabs}", "\\usepackage{graphicx}",
        f"\\title{{{title}}}", "\\author{}", "\\date{}", "\\begin{document}", "\\maketitle",
        *[f"\\input{{{p}}}" for p in pieces], "\\end{document}", ""])


def write_pieces(folder: Path, title: str, pieces: dict[str, str]) -> Path:
    """Write each piece as NAME.tex and report.tex that inputs them in order; returns report.tex."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in pieces.items():
        (folder / f"{name}.tex").write_text(text)
    path = folder / "report.tex"
    path.write_text(document_tex(title, list(pieces)))
    return path


def _num(v) -> str:
    """The markdown report's number format (4 decimals, — for undefined), typeset for LaTeX."""
    from .build import _fmt

    return signed(tex_escape(_fmt(v)))


def _run_metric_rows(s: dict) -> list[list[str]]:
    """The markdown report's headline rows (label naming the convention, evaluated split, validation)."""
    from .build import METRIC_ROWS

    m, v = s.get("metrics", {}), s.get("validation", {})
    rows = [[tex_escape(label), _num(m.get(k)), _num(v.get(k))] for label, k in METRIC_ROWS if k in m or k in v]
    b = s.get("binary")
    if b:
        rows += [[tex_escape(label), _num(b.get(k)), "--"] for label, k in (
            ("per-image Dice (mean over images)", "per_image_dice_mean"),
            (f"boundary-band Dice (band {b.get('boundary_band_width')} px)", "boundary_dice_mean"),
            ("boundary F1", "boundary_f1_mean")) if k in b]
    return rows


SEG_CONVENTIONS = (
    "All Dice and IoU values are \\emph{{strict}}: each pixel is predicted as its argmax class, true and false "
    "positives are counted over the whole {split} split at once (global counts, not per image or per batch), and "
    "the mean runs over the classes present in the ground truth; a class absent from both prediction and ground "
    "truth has no defined score and is left out of every mean. The foreground mean excludes the background "
    "(class~0). The course's soft Dice per batch (Dice of the softmax probabilities per batch, smoothing~1, "
    "averaged over batches) is listed only for comparison with the course's own numbers: it moves with the "
    "batch composition, is not comparable across reports, and is never the headline metric.")
CLS_CONVENTIONS = ("Accuracy is the share of the {split} images whose argmax class equals the label.")


def _conventions(task: str, split: str) -> str:
    from ..study_table import TASK_CONVENTIONS

    if task == "segmentation":
        return SEG_CONVENTIONS.format(split=tex_escape(split))
    if task == "classification":
        return CLS_CONVENTIONS.format(split=tex_escape(split))
    return tex_escape(TASK_CONVENTIONS.get(task, "").replace("`", ""))


def _run_sentence(s: dict, lab: str, curves: bool) -> str:
    """What the run reached, in words, pointing at the tables and figures."""
    m, name, split = s.get("metrics", {}), f"\\texttt{{{tex_escape(s.get('name', '?'))}}}", tex_escape(
        s.get("evaluated_on", "?"))
    where = f"on the {split} split ({s.get('n_images', '?')} images), with the weights of epoch " \
            f"{s.get('best_epoch')} of {s.get('epochs_run')}"
    ref = f"(Table~\\ref{{tab:{lab}-metrics}})"
    if m.get("dice_mean") is not None:
        head = (f"Run {name} reaches a strict mean Dice of {_num(m['dice_mean'])} {where} {ref}; foreground "
                f"{_num(m.get('dice_mean_foreground'))}, mean IoU {_num(m.get('iou_mean'))}, pixel accuracy "
                f"{_num(m.get('pixel_accuracy'))}.")
    elif m.get("accuracy") is not None:
        train = f"; training accuracy {_num(s['train_accuracy'])}" if "train_accuracy" in s else ""
        head = f"Run {name} reaches an accuracy of {_num(m['accuracy'])} {where} {ref}{train}."
    else:
        head = f"Run {name} reaches a loss of {_num(m.get('loss'))} {where} {ref}."
    per_class = f" Table~\\ref{{tab:{lab}-per-class}} lists Dice and IoU per class." if "per_class" in s else ""
    extra = " ".join(tex_escape(n) for n in [s.get("fit_note", ""), *s.get("notes", [])] if n)
    fig = f" Figure~\\ref{{fig:{lab}-curves}} shows the training curves." if curves else ""
    return f"{head}{per_class}{fig} {extra}".strip()


def _run_setup(run_dir: Path, s: dict) -> str:
    """One sentence on how the run was trained, from its resolved config.yaml."""
    c = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
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
    from .build import _caption
    from .latex_figures import curve_metric, run_curves_pdf, vector_fonts
    from .study_figures import per_class_dice_bars, read_history

    src, pieces = str(run_dir.name), {}
    history = read_history(run_dir)
    if history:
        run_curves_pdf(history, out / "fig_curves.pdf")
        metric = curve_metric(history)
        pieces["fig_curves"] = figure_tex(
            "fig_curves.pdf", "Training (solid) and validation (dashed) loss per epoch"
            + (f"; right: the {metric[1]} per epoch." if metric else "."), f"fig:{lab}-curves", src)
    if s.get("per_class"):
        with vector_fonts():
            per_class_dice_bars(s["per_class"], out / "fig_per_class.pdf", f"strict Dice per class, "
                                f"{s.get('evaluated_on', '?')} split")
        pieces["fig_per_class"] = figure_tex("fig_per_class.pdf", tex_escape(_caption("per_class_dice.png")),
                                             f"fig:{lab}-per-class", src, "0.8\\linewidth")
    skip = {"loss_curves.png", "per_class_dice.png"}  # re-drawn above as PDF
    for png in sorted((run_dir / "figures").glob("*.png")) if (run_dir / "figures").is_dir() else []:
        if png.name in skip:
            continue
        shutil.copy2(png, out / png.name)
        stem = slug(png.stem).replace("-", "_")
        pieces[f"fig_{stem}"] = figure_tex(png.name, tex_escape(_caption(png.name)), f"fig:{lab}-{slug(png.stem)}",
                                           src)
    return pieces


def write_run_latex(run_dir: str | Path) -> Path:
    """RUN_DIR/latex/: report.tex and its pieces; returns report.tex."""
    run_dir = Path(run_dir)
    if not (run_dir / "summary.json").is_file():
        raise CnnlabError(f"{run_dir}: no summary.json, the run has not finished",
                          f"finish it with cnnlab train --resume {run_dir}, or see its progress with "
                          f"cnnlab report {run_dir}")
    s = json.loads((run_dir / "summary.json").read_text())
    out, lab, src = run_dir / "latex", slug(s.get("name", run_dir.name)), run_dir.name
    split = s.get("evaluated_on", "?")
    out.mkdir(parents=True, exist_ok=True)
    figures = _run_figures(run_dir, s, out, lab)
    results = (f"% written by cnnlab (results paragraph of {src}); \\input this file\n"
               f"\\paragraph{{Metric conventions.}} {_conventions(s.get('task', ''), split)}\n\n"
               f"\\paragraph{{Results.}} {_run_sentence(s, lab, 'fig_curves' in figures)} "
               f"{_run_setup(run_dir, s)}\n")
    pieces = {"results": results, "table_metrics": table_tex(
        ["metric (convention)", f"{tex_escape(split)} split", "validation"], _run_metric_rows(s),
        f"Headline metrics of run \\texttt{{{tex_escape(s.get('name', '?'))}}} on the {tex_escape(split)} split "
        f"({s.get('n_images', '?')} images) and on the validation split. Each row names its convention; the soft "
        "Dice per batch is the course's convention, shown for reference, never the headline.",
        f"tab:{lab}-metrics", src)}
    if s.get("per_class"):
        rows = [[tex_escape(n), _num(p.get("dice")), _num(p.get("iou")),
                 "yes" if p.get("in_ground_truth") else "no"] for n, p in s["per_class"].items()]
        pieces["table_per_class"] = table_tex(
            ["class", "Dice (strict)", "IoU (strict)", "in ground truth"], rows,
            f"Strict Dice and IoU per class on the {tex_escape(split)} split (global counts over the split); "
            "-- marks a class in neither ground truth nor prediction, whose score is undefined.",
            f"tab:{lab}-per-class", src, "lrrc")
    pieces.update(figures)
    return write_pieces(out, f"Run {tex_escape(s.get('name', run_dir.name))}", pieces)


def write_latex_report(path: str | Path) -> Path:
    """A study folder (plan.json) or a run folder (config.yaml): its LaTeX report; returns report.tex."""
    path = Path(path)
    if (path / "plan.json").is_file():
        from .latex_study import write_study_latex

        return write_study_latex(path)
    if (path / "config.yaml").is_file():
        return write_run_latex(path)
    raise CnnlabError(f"{path}: neither a run folder (config.yaml) nor a study folder (plan.json)",
                      "give a folder written by cnnlab train or cnnlab study")
