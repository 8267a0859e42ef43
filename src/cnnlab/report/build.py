"""Reports of a run or a study: report.md (figures linked) and a self-contained report.html (figures embedded as
base64 data URIs, so the one file can be mailed or uploaded). Both are rendered from one list of blocks (common.Doc),
so they always say the same thing."""
from __future__ import annotations

import os
from pathlib import Path

from cnnlab.engine.run_files import (
    FIGURES,
    has_config,
    read_config_text,
    read_env,
    read_history,
    read_summary,
    read_transfer,
)
from cnnlab.errors import CnnlabError
from cnnlab.figures.palette import class_colors
from cnnlab.metrics.names import METRICS, PER_CLASS_LABELS, label, row_label
from cnnlab.metrics.per_image import per_image_line
from cnnlab.report.common import Doc, caption, fmt, folder_kind, per_class_rows, study_setup, write_doc
from cnnlab.report.latex_figures import curve_metric
from cnnlab.report.study_figures import (
    difference_plot,
    headline_bars,
    study_loss_curves,
)
from cnnlab.study.plan import read_plan
from cnnlab.study.table import failure_lines, table_sections, write_study_table

FIGURE_ORDER = ["loss_curves.png", "per_class_dice.png", "per_class_iou.png", "overlays.png",
                "colorization_samples.png"]


def add_figures(doc: Doc, fig_dir: Path) -> None:
    """Every PNG in a figures folder, known ones first, each with its caption."""
    pngs = sorted(fig_dir.glob("*.png")) if fig_dir.is_dir() else []
    rank = {n: i for i, n in enumerate(FIGURE_ORDER)}
    for p in sorted(pngs, key=lambda p: (rank.get(p.name, len(rank)), p.name)):
        doc.figure(p, caption(p.name))


def add_environment(doc: Doc, run_dir: Path) -> None:
    """The resolved config and the hardware/software it ran on."""
    env = read_env(run_dir)
    if env is not None:
        doc.h("Hardware and software")
        doc.table(["item", "value"], [[k, v] for k, v in env.items()])
    config = read_config_text(run_dir)
    if config is not None:
        doc.h("Resolved config (config.yaml)")
        doc.pre(config)


def _results_section(doc: Doc, s: dict) -> None:
    m, v = s.get("metrics", {}), s.get("validation", {})
    doc.h("Results")
    if s.get("test_split", True):
        doc.table(["metric", f"{s.get('evaluated_on', '?')} split", "validation"],
                  [[row_label(k), fmt(m.get(k)), fmt(v.get(k))] for k in METRICS if k in m or k in v])
    else:  # no test split: the evaluated split is validation, shown once
        doc.table(["metric", f"{s.get('evaluated_on', '?')} split (no test split)"],
                  [[row_label(k), fmt(m.get(k))] for k in METRICS if k in m])
    conv = s.get("metric_conventions", {})
    doc.items([f"{k}: {text}" for k, text in conv.items()])
    if "per_class" in s:
        names = list(s["per_class"])
        cols = class_colors(len(names))
        doc.h("Per-class Dice and IoU (strict)")
        doc.table(["class", *(PER_CLASS_LABELS[k] for k in ("dice", "iou", "in_ground_truth"))],
                  [[n, fmt(p.get("dice")), fmt(p.get("iou")), "yes" if p.get("in_ground_truth") else "no"]
                   for n, p in s["per_class"].items()], swatches=[tuple(int(c) for c in col) for col in cols])
        if s.get("per_image"):  # multi-class: each image's mean over its classes, averaged (metrics.per_image)
            doc.items([per_image_line(s["per_image"]) + "; " + s["per_image"].get("convention", "")])
        if s.get("warnings"):  # classes in the ground truth that the model never predicted
            doc.items(s["warnings"])


def _expected_figures(s: dict) -> list[str]:
    """The figures the engine draws for every finished run with these results (engine/figures.py); the task's
    own figures vary with the data and are shown where present."""
    names = ["loss_curves.png"]
    if s.get("per_class"):
        names.append("per_class_dice.png")
        if any("pixel_share" in p for p in s["per_class"].values()):  # runs saved before the share have none
            names.append("per_class_iou.png")
    return names


def add_run_figures(doc: Doc, run_dir: Path, s: dict | None) -> None:
    """The run's figures as the engine drew them; the report draws none. A run that has not finished has none
    yet (the engine draws them as a run ends); a finished run lacking one (from an older cnnlab, or a figure
    that could not be drawn) gets a line naming it."""
    fig_dir = run_dir / FIGURES
    add_figures(doc, fig_dir)
    if s is None:
        if not (fig_dir.is_dir() and any(fig_dir.glob("*.png"))):
            doc.p("No figures yet: the engine draws a run's figures when the run ends.")
        return
    doc.items([f"{name}: not in {FIGURES}/ (the engine draws it as a run ends; this run's cnnlab did not, or "
               "could not draw it)" for name in _expected_figures(s) if not (fig_dir / name).is_file()])


def _training_so_far(doc: Doc, run_dir: Path) -> None:
    """An unfinished run's epochs as metrics.csv holds them: its loss curves are drawn when the run ends."""
    history = read_history(run_dir)
    doc.h("Training so far")
    if not history:
        doc.p("No epoch has finished yet.")
        return
    cols = [("train_loss", "training loss"), ("val_loss", "validation loss")]
    cols += [metric] if (metric := curve_metric(history)) else []
    doc.table(["epoch", *(name for _, name in cols)],
              [[int(h["epoch"]), *(fmt(h.get(key)) for key, _ in cols)] for h in history])


def _window_words(s: dict) -> str:
    """How a patch-trained run saw whole images (summary.json's sliding_window), for the run's opening line."""
    w = s.get("sliding_window")
    if not w:
        return ""
    h, wd = w["size"]
    blend = {"gaussian": "Gaussian"}.get(w.get("blend", ""), w.get("blend", ""))  # a name, capitalised
    return (f", whole images scored by {blend}-weighted sliding windows of {h}x{wd} (overlap "
            f"{w['overlap']:g}: the patch size it trained on)")


def _flips_words(s: dict) -> str:
    """How the final scores were made where they average flips (train.tta), for the run's opening line; with
    train.tta auto, what validation chose by."""
    flips = s.get("test_time_flips") or []
    words = f", averaged over each image and its flips ({', '.join(flips)})" if flips else ""
    if c := s.get("tta_choice"):
        words += (f"{'' if flips else ', in one pass'}, chosen by train.tta auto on validation ({c['score']} "
                  f"{c['one_pass']:.4f} in one pass, {c['flips']:.4f} with the flips)")
    return words


def write_run_report(run_dir: str | Path) -> Path:
    """report.md and report.html of one run (finished or not); returns the HTML path."""
    run_dir = Path(run_dir)
    if not has_config(run_dir):
        raise CnnlabError(f"{run_dir}: no config.yaml", "is this a cnnlab run folder?")
    s = read_summary(run_dir)
    doc = Doc(f"Run {s['name'] if s else run_dir.name}")
    if s is None:
        doc.p("This run has not finished (no summary.json): only its configuration and training so far are shown.")
        _training_so_far(doc, run_dir)
    else:
        doc.p(f"Task {s.get('task')}; evaluated on the {s.get('evaluated_on')} split ({s.get('n_images')} images) "
              f"with the best epoch {s.get('best_epoch')} of {s.get('epochs_run')} run{_window_words(s)}"
              f"{_flips_words(s)}; trained "
              f"{s.get('train_seconds', 0):.0f} s at {s.get('train_images_per_s', 0):.1f} images/s on "
              f"{s.get('device')} ({s.get('precision')}); code {s.get('git', 'unknown')}.")
        _results_section(doc, s)
        doc.items([f"note: {n}" for n in s.get("notes", [])])
    t = read_transfer(run_dir)
    if t is not None:
        doc.h("Weight transfer")
        doc.p(f"{len(t.get('loaded', []))} tensors loaded from the pre-trained network.")
        doc.items([f"left as initialised (not in the source): {k}" for k in t.get("not_in_source", [])]
                  + [f"shape differs, not loaded: {k}" for k in t.get("shape_mismatch", [])]
                  + [f"in the source only, unused: {k}" for k in t.get("not_in_model", [])])
    doc.h("Figures")
    add_run_figures(doc, run_dir, s)
    add_environment(doc, run_dir)
    return write_doc(doc, run_dir)


def _run_ref(run_dir: Path, study_dir: Path) -> str:
    """A run's folder relative to the study, and its own report where it has one."""
    rel = os.path.relpath(run_dir, study_dir)
    report = run_dir / "report.html"
    return f"{rel} (report: {os.path.relpath(report, study_dir)})" if report.is_file() else rel


def _study_doc(study_dir: Path) -> Doc:
    """The study report: setup, tables, figures, per-class Dice, stages and runs, study file and hardware."""
    plan, results = read_plan(study_dir), write_study_table(study_dir)
    doc = Doc(f"Study {results['name']}")
    study_setup(doc, plan)
    doc.h("Results")
    doc.p(results["conventions"].replace("`", ""))
    for title, headers, rows in table_sections(results):
        doc.p(title)
        doc.table(headers, rows)
    doc.items(failure_lines(results))
    fig_dir, metric = study_dir / "figures", results["headline_metric"]
    doc.h("Figures")
    name = label(metric) if metric else ""
    if metric:
        doc.figure(headline_bars(results, metric, name, fig_dir / "headline.png"),
                   f"{name} per variant and grid point: bars = mean over seeds, error bars = sample std, "
                   "dots = single seeds.")
        doc.figure(difference_plot(results, metric, name, fig_dir / "differences.png"),
                   f"Paired difference of {name} to the baseline '{results['baseline']}' with 95% t-intervals.")
    doc.figure(study_loss_curves(results, fig_dir / "loss_curves.png", metric, name),
               "Loss curves overlaid per variant (colour): training solid, validation dashed; thin = single seeds, "
               "thick = mean over seeds. Variants with different loss functions have losses on different scales; "
               f"the validation {name or 'metric'} per epoch (bottom row, where recorded) compares across them.")
    names, rows = per_class_rows(results)
    if names:
        doc.h("Per-class Dice (strict, mean over seeds)")
        doc.table(["variant", "grid point", *names], rows)
    doc.h("Runs")
    doc.items([f"stage {s['name']}: {s['status']} "
               f"({_run_ref(Path(s['run_dir']), study_dir) if s['run_dir'] else s['error'] or 'not run'})"
               for s in results["stages"]]
              + [f"{r['variant']} {r['label']} seed {seed}: {_run_ref(Path(d), study_dir)}"
                 for r in results["rows"] for seed, d in r["run_dirs"].items()])
    if (study_dir / "study.yaml").is_file():
        doc.h("Study file (study.yaml)")
        doc.pre((study_dir / "study.yaml").read_text())
    first = next((Path(d) for r in results["rows"] for d in r["run_dirs"].values()), None)
    env = read_env(first) if first is not None else None
    if env is not None:
        doc.h("Hardware and software (first finished run)")
        doc.table(["item", "value"], [[k, v] for k, v in env.items()])
    return doc


def write_study_report(study_dir: str | Path) -> Path:
    """report.md and report.html of a study (table refreshed from the runs); returns the HTML path."""
    study_dir = Path(study_dir)
    return write_doc(_study_doc(study_dir), study_dir)


def write_report(path: str | Path) -> Path:
    """A study folder (plan.json) or a run folder (config.yaml): the matching report."""
    path = Path(path)
    return write_study_report(path) if folder_kind(path) == "study" else write_run_report(path)
