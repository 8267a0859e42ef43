"""The LaTeX report of a study (STUDY_DIR/latex/): the variants, the study table (mean ± sample std over seeds,
best mean per column in bold), the paired differences to the baseline with their 95% t-intervals, per-class Dice,
and the study figures as vector PDFs. Every number is a cell of study_table.table_sections or of the markdown
report's per-class table, so the paper and report.md cannot disagree."""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib

from cnnlab.metrics.names import label, lower_is_better
from cnnlab.report.common import Doc, per_class_rows, study_setup
from cnnlab.report.latex_template import Template, template
from cnnlab.report.study_figures import difference_plot, headline_bars, study_loss_curves
from cnnlab.report.tex import (
    bold_best,
    conventions_tex,
    figure_tex,
    header,
    signed,
    slug,
    stacked,
    table_tex,
    tex_escape,
    tt,
    write_pieces,
)
from cnnlab.study.plan import read_plan
from cnnlab.study.table import collect_results, table_sections


def _results_paragraph(results: dict, lab: str, src: str) -> str:
    """Conventions of the metrics and of the statistics, then the best variant by the headline metric."""
    split = ", ".join(results["evaluated_on"]) or "?"
    seeds = ", ".join(str(s) for s in results["seeds"])
    text = [f"% written by cnnlab (results paragraph of {src}); \\input this file",
            f"\\paragraph{{Metric conventions.}} {conventions_tex(results['task'], split)}", "",
            (f"\\paragraph{{Statistics.}} Every variant was trained once per seed ({tex_escape(seeds)}). "
            f"Table~\\ref{{tab:{lab}-study}} gives the mean $\\pm$ sample standard deviation over the finished "
            "seeds; the best mean of each column is in bold (lowest for a loss). "
            f"Table~\\ref{{tab:{lab}-differences}} gives each variant's difference to the baseline "
            f"\\texttt{{{tex_escape(results['baseline'])}}} at the same grid point, paired over the seeds both "
            "finished, with a 95\\% Student-$t$ interval; $*$ marks an interval that excludes zero. With few seeds "
            "these intervals are wide: a difference without $*$ is not evidence of no effect.")]
    metric = results["headline_metric"]
    finished = [r for r in results["rows"] if metric and r["stats"].get(metric, {}).get("mean") is not None]
    if finished:
        low = lower_is_better(metric)
        best = (min if low else max)(finished, key=lambda r: r["stats"][metric]["mean"])
        st = best["stats"][metric]
        where = f" at {tex_escape(best['label'].replace('__', ', '))}" if best["label"] else ""
        text += ["", f"\\paragraph{{Results.}} The best {tex_escape(label(metric))} is reached by "
                 f"{tt(best['variant'])}{where}: {st['mean']:.4f} "
                 + (f"$\\pm$ {st['std']:.4f} " if st["std"] is not None else "")
                 + f"over {st['n']} seed{'s' if st['n'] != 1 else ''} (Figure~\\ref{{fig:{lab}-headline}})."]
    return "\n".join(text) + "\n"


def _difference_cell(cell: str) -> str:
    """'+0.0037 [-0.2066, +0.2140] *' as the difference (starred) over its interval in small print."""
    m = re.fullmatch(r"(\S+) (\[.*\]|\(.*\))( \*)?", cell)
    if not m:
        return signed(tex_escape(cell))
    star = "$^{*}$" if m.group(3) else ""
    return stacked(signed(tex_escape(m.group(1))) + star, "{\\footnotesize " + signed(tex_escape(m.group(2))) + "}",
                   "r", "t")


def _study_tables(results: dict, lab: str, src: str) -> dict[str, str]:
    """table_study (bold best per metric column) and table_differences, from study_table.table_sections."""
    (t1, h1, r1), (t2, h2, r2) = table_sections(results)
    metrics = results["metrics"]
    cols = list(range(len(h1) - len(metrics), len(h1)))
    body = bold_best([[tex_escape(c) for c in r] for r in r1], cols, [lower_is_better(m) for m in metrics])
    out = {"table_study": table_tex(
        [header(h) for h in h1], body,
        f"{tex_escape(t1)}; best mean per column in bold. Seeds: finished/planned runs.", f"tab:{lab}-study", src,
        keep=len(h1) - len(metrics))}
    if r2:
        n_fixed = len(h2) - len(metrics)  # variant, grid values, pairs; then one Δ column per metric
        rows = [[tex_escape(c) if i < n_fixed else _difference_cell(c) for i, c in enumerate(r)] for r in r2]
        out["table_differences"] = table_tex(
            [header(h) for h in h2], rows,
            tex_escape(t2.split(";")[0]) + "; $*$: the interval excludes 0.",
            f"tab:{lab}-differences", src, keep=n_fixed)
    return out


def _variants_table(plan, lab: str, src: str) -> str:
    """What each row of the study table is: its recipe and overrides (the markdown report's setup table)."""
    doc = Doc("")
    study_setup(doc, plan)
    headers, rows, _ = next(p for k, p in doc.blocks if k == "table")
    tt = lambda c: "--" if c == "—" else f"\\texttt{{{tex_escape(c)}}}"
    body = [[tex_escape(r[0]), tt(r[1]), tt(r[2])] for r in rows]
    return table_tex([tex_escape(h) for h in headers], body,
                     "Runs of the study: the recipe and the overrides that define each variant (applied in this "
                     "order; the seed and grid values are set per run).", f"tab:{lab}-variants", src,
                     "llp{0.5\\linewidth}")


def _per_class_table(results: dict, lab: str, src: str) -> str | None:
    """Mean strict Dice per class over seeds: one row per class (class names are long, so they go down the
    side), one column per variant and grid point, the best of each class in bold."""
    names, rows = per_class_rows(results)
    if not names:
        return None
    bolded = bold_best([[tex_escape(c) for c in r] for r in rows], list(range(2, 2 + len(names))),
                       [False] * len(names))
    heads = [tex_escape(r[0]) if r[1] == "—" else stacked(tex_escape(r[0]), tex_escape(r[1])) for r in rows]
    body = [[tex_escape(n)] + [r[2 + j] for r in bolded] for j, n in enumerate(names)]
    return table_tex(["class", *heads], body,
                     "Strict Dice per class (global counts over the split), mean over each variant's finished "
                     "seeds; best per class in bold; -- undefined (class in neither prediction nor ground truth).",
                     f"tab:{lab}-per-class", src)


def _study_figures(results: dict, out: Path, lab: str, src: str) -> dict[str, str]:
    """The study figures of the markdown report, drawn as PDF (vector) into the latex folder."""
    metric, pieces = results["headline_metric"], {}
    name = label(metric) if metric else ""
    if metric:
        headline_bars(results, metric, name, out / "fig_headline.pdf")
        pieces["fig_headline"] = figure_tex(
            "fig_headline.pdf", f"{tex_escape(name)} per variant and grid point: bars are the mean over seeds, "
            "error bars the sample standard deviation, dots single seeds.", f"fig:{lab}-headline", src,
            "0.8\\linewidth")
        difference_plot(results, metric, name, out / "fig_differences.pdf")
        pieces["fig_differences"] = figure_tex(
            "fig_differences.pdf", f"Paired difference of {tex_escape(name)} to the baseline "
            f"\\texttt{{{tex_escape(results['baseline'])}}} with 95\\% $t$-intervals.", f"fig:{lab}-differences",
            src)  # drawn 6.4 in wide: at 0.7 of the text its labels were 5 pt
    study_loss_curves(results, out / "fig_curves.pdf", metric, name)
    pieces["fig_curves"] = figure_tex(
        "fig_curves.pdf", "Loss curves per variant (colour): training solid, validation dashed; thin lines single "
        "seeds, thick lines the mean over seeds. Losses of different loss functions are on different scales; the "
        "validation metric per epoch (bottom row, where recorded) compares across them.", f"fig:{lab}-curves", src)
    return pieces


def write_study_latex(study_dir: str | Path, tpl: Template | None = None) -> Path:
    """STUDY_DIR/latex/: report.tex and its pieces, from the runs' summary.json files (figures in the template's
    fonts); returns report.tex."""
    study_dir, tpl = Path(study_dir), tpl or template("article")
    plan, results = read_plan(study_dir), collect_results(study_dir)
    out, lab, src = study_dir / "latex", slug(results["name"]), study_dir.name
    out.mkdir(parents=True, exist_ok=True)
    pieces = {"results": _results_paragraph(results, lab, src), "table_variants": _variants_table(plan, lab, src)}
    pieces.update(_study_tables(results, lab, src))
    per_class = _per_class_table(results, lab, src)
    if per_class:
        pieces["table_per_class"] = per_class
    with matplotlib.rc_context(tpl.figure_rc):
        pieces.update(_study_figures(results, out, lab, src))
    tpl.install(out)
    return write_pieces(out, f"Study {tex_escape(results['name'])}", pieces, tpl.preamble)
