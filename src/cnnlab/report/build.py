"""Reports of a run or a study: report.md (figures linked) and a self-contained report.html (figures embedded as
base64 data URIs, so the one file can be mailed or uploaded). Both are rendered from one list of blocks, so they
always say the same thing."""
from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.engine.rundir import write_text_atomic
from cnnlab.errors import CnnlabError
from cnnlab.figures.palette import class_colors
from cnnlab.figures.per_class import per_class_iou_bars
from cnnlab.figures.run import loss_curves
from cnnlab.metrics.names import METRICS, PER_CLASS_LABELS, label, row_label
from cnnlab.metrics.per_image import per_image_line
from cnnlab.report.study_figures import (
    difference_plot,
    headline_bars,
    per_class_dice_bars,
    read_history,
    study_loss_curves,
)
from cnnlab.study.plan import read_plan
from cnnlab.study.table import failure_lines, markdown_table, markdown_text, table_sections, write_study_table

CAPTIONS = {
    "loss_curves.png": "Training and validation loss per epoch (validation metric on the right axis, where shown).",
    "per_class_dice.png": "Strict Dice per class on the evaluated split, each class in its overlay colour.",
    "per_class_iou.png": "Strict IoU per class on the evaluated split beside each class's share of the ground-truth "
                         "pixels: a rare class at 0.00 is one the model never predicts.",
    "overlays.png": "Worst (top rows) and best (bottom rows) images by per-image Dice (binary tasks: the foreground "
                    "class's Dice, as in the per-image Dice above; multi-class: the mean over the classes in that "
                    "image's ground truth): input, ground truth and prediction overlays in the class colours of the "
                    "legend.",
    "colorization_samples.png": "Colorization pre-training: grey input, predicted colours, true colours.",
    "confusion_matrix.png": "Confusion matrix: rows are true classes, columns predicted; colour = share of the "
                            "true class, numbers = counts.",
    "misclassified.png": "Misclassified images, most confident mistakes first.",
}
FIGURE_ORDER = ["loss_curves.png", "per_class_dice.png", "per_class_iou.png", "overlays.png",
                "colorization_samples.png"]
CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
       "table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
       "td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}figure{margin:1.2em 0}"
       "img{max-width:100%}figcaption{color:#555;font-size:.9em}pre{background:#f6f6f6;padding:.8em;overflow:auto}"
       ".sw{display:inline-block;width:.9em;height:.9em;border:1px solid #444;margin-right:.4em;vertical-align:middle}")


@dataclass
class Doc:
    """A report as an ordered list of blocks: (kind, payload)."""

    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)

    def h(self, text: str) -> None:
        self.blocks.append(("h", text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def items(self, lines: list[str]) -> None:
        if lines:
            self.blocks.append(("list", lines))

    def table(self, headers: list[str], rows: list[list], swatches: list | None = None) -> None:
        self.blocks.append(("table", (headers, [[str(c) for c in r] for r in rows], swatches)))

    def figure(self, path: Path, caption: str) -> None:
        self.blocks.append(("img", (Path(path), caption)))

    def pre(self, text: str) -> None:
        self.blocks.append(("pre", text))


def render_markdown(doc: Doc, folder: Path) -> str:
    """Markdown with figures linked relative to the report's folder; text escaped as report.html escapes it (a
    class or file named `<script>` is text, never markup in a viewer that renders HTML in markdown)."""
    esc = markdown_text
    out = [f"# {esc(doc.title)}", ""]
    for kind, payload in doc.blocks:
        if kind == "h":
            out += [f"## {esc(payload)}", ""]
        elif kind == "p":
            out += [esc(payload), ""]
        elif kind == "list":
            out += [f"- {esc(line)}" for line in payload] + [""]
        elif kind == "table":
            out += [markdown_table(payload[0], payload[1]), ""]
        elif kind == "img":
            rel = Path(os.path.relpath(payload[0], folder)).as_posix()
            out += [f"![{esc(payload[1])}]({rel})", "", f"*{esc(payload[1])}*", ""]
        elif kind == "pre":
            out += ["```", str(payload).rstrip(), "```", ""]
    return "\n".join(out)


def _html_table(headers: list[str], rows: list[list[str]], swatches: list | None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cells = [html.escape(c) for c in row]
        if swatches and swatches[i] is not None:
            r, g, b = swatches[i]
            cells[0] = f'<span class="sw" style="background:rgb({r},{g},{b})"></span>{cells[0]}'
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def render_html(doc: Doc, folder: Path) -> str:
    """One self-contained HTML page: every figure inlined as a data:image/png;base64 URI."""
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(doc.title)}</title>"
           f"<style>{CSS}</style></head><body><h1>{html.escape(doc.title)}</h1>"]
    for kind, payload in doc.blocks:
        if kind == "h":
            out.append(f"<h2>{html.escape(payload)}</h2>")
        elif kind == "p":
            out.append(f"<p>{html.escape(str(payload))}</p>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in payload) + "</ul>")
        elif kind == "table":
            out.append(_html_table(*payload))
        elif kind == "img":
            data = base64.b64encode(payload[0].read_bytes()).decode("ascii")
            rel = Path(os.path.relpath(payload[0], folder)).as_posix()
            out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(payload[1])}" '
                       f'data-file="{html.escape(rel)}"><figcaption>{html.escape(payload[1])} '
                       f"({html.escape(rel)})</figcaption></figure>")
        elif kind == "pre":
            out.append(f"<pre>{html.escape(str(payload))}</pre>")
    out.append("</body></html>")
    return "\n".join(out)


def write_doc(doc: Doc, folder: Path) -> Path:
    """report.md and report.html into folder; returns the HTML path."""
    write_text_atomic(folder / "report.md", render_markdown(doc, folder))
    path = folder / "report.html"
    write_text_atomic(path, render_html(doc, folder))
    return path


def _fmt(v) -> str:
    return "—" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _caption(name: str) -> str:
    return CAPTIONS.get(name, name.rsplit(".", 1)[0].replace("_", " ").capitalize() + ".")


def add_figures(doc: Doc, fig_dir: Path) -> None:
    """Every PNG in a figures folder, known ones first, each with its caption."""
    pngs = sorted(fig_dir.glob("*.png")) if fig_dir.is_dir() else []
    rank = {n: i for i, n in enumerate(FIGURE_ORDER)}
    for p in sorted(pngs, key=lambda p: (rank.get(p.name, len(rank)), p.name)):
        doc.figure(p, _caption(p.name))


def add_environment(doc: Doc, run_dir: Path) -> None:
    """The resolved config and the hardware/software it ran on."""
    if (run_dir / "env.json").is_file():
        env = json.loads((run_dir / "env.json").read_text())
        doc.h("Hardware and software")
        doc.table(["item", "value"], [[k, v] for k, v in env.items()])
    if (run_dir / "config.yaml").is_file():
        doc.h("Resolved config (config.yaml)")
        doc.pre((run_dir / "config.yaml").read_text())


def _results_section(doc: Doc, s: dict) -> None:
    m, v = s.get("metrics", {}), s.get("validation", {})
    doc.h("Results")
    if s.get("test_split", True):
        doc.table(["metric", f"{s.get('evaluated_on', '?')} split", "validation"],
                  [[row_label(k), _fmt(m.get(k)), _fmt(v.get(k))] for k in METRICS if k in m or k in v])
    else:  # no test split: the evaluated split is validation, shown once
        doc.table(["metric", f"{s.get('evaluated_on', '?')} split (no test split)"],
                  [[row_label(k), _fmt(m.get(k))] for k in METRICS if k in m])
    conv = s.get("metric_conventions", {})
    doc.items([f"{k}: {text}" for k, text in conv.items()])
    if "per_class" in s:
        names = list(s["per_class"])
        cols = class_colors(len(names))
        doc.h("Per-class Dice and IoU (strict)")
        doc.table(["class", *(PER_CLASS_LABELS[k] for k in ("dice", "iou", "in_ground_truth"))],
                  [[n, _fmt(p.get("dice")), _fmt(p.get("iou")), "yes" if p.get("in_ground_truth") else "no"]
                   for n, p in s["per_class"].items()], swatches=[tuple(int(c) for c in col) for col in cols])
        if s.get("per_image"):  # multi-class: each image's mean over its classes, averaged (metrics.per_image)
            doc.items([per_image_line(s["per_image"]) + "; " + s["per_image"].get("convention", "")])
        if s.get("warnings"):  # classes in the ground truth that the model never predicted
            doc.items(s["warnings"])


def _ensure_run_figures(run_dir: Path, s: dict | None) -> None:
    """Figures the report needs but the run may lack: per-class Dice bars; loss curves of an unfinished run."""
    fig_dir = run_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    if s and "per_class" in s:
        per_class_dice_bars(s["per_class"], fig_dir / "per_class_dice.png",
                            f"strict Dice per class, {s.get('evaluated_on', '?')} split")
        if any("pixel_share" in p for p in s["per_class"].values()):  # runs saved before the share have none
            per_class_iou_bars(s["per_class"], fig_dir / "per_class_iou.png",
                               f"strict IoU per class, {s.get('evaluated_on', '?')} split")
    history = read_history(run_dir)
    if history and not (fig_dir / "loss_curves.png").is_file():
        loss_curves(history, fig_dir / "loss_curves.png", run_dir.name)


def write_run_report(run_dir: str | Path) -> Path:
    """report.md and report.html of one run (finished or not); returns the HTML path."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CnnlabError(f"{run_dir}: no config.yaml", "is this a cnnlab run folder?")
    s = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else None
    _ensure_run_figures(run_dir, s)
    doc = Doc(f"Run {s['name'] if s else run_dir.name}")
    if s is None:
        doc.p("This run has not finished (no summary.json): only its configuration and training so far are shown.")
    else:
        doc.p(f"Task {s.get('task')}; evaluated on the {s.get('evaluated_on')} split ({s.get('n_images')} images) "
              f"with the best epoch {s.get('best_epoch')} of {s.get('epochs_run')} run; trained "
              f"{s.get('train_seconds', 0):.0f} s at {s.get('train_images_per_s', 0):.1f} images/s on "
              f"{s.get('device')} ({s.get('precision')}); code {s.get('git', 'unknown')}.")
        _results_section(doc, s)
        doc.items([f"note: {n}" for n in s.get("notes", [])])
    if (run_dir / "transfer.json").is_file():
        t = json.loads((run_dir / "transfer.json").read_text())
        doc.h("Weight transfer")
        doc.p(f"{len(t.get('loaded', []))} tensors loaded from the pre-trained network.")
        doc.items([f"left as initialised (not in the source): {k}" for k in t.get("not_in_source", [])]
                  + [f"shape differs, not loaded: {k}" for k in t.get("shape_mismatch", [])]
                  + [f"in the source only, unused: {k}" for k in t.get("not_in_model", [])])
    doc.h("Figures")
    add_figures(doc, run_dir / "figures")
    add_environment(doc, run_dir)
    return write_doc(doc, run_dir)


def _study_setup(doc: Doc, plan) -> None:
    """What was compared: seeds, grid, and each variant's recipe and overrides."""
    if plan.description:
        doc.p(plan.description)
    grid = "; ".join(f"{k} in {v}" for k, v in plan.grid.items()) or "none"
    doc.p(f"Seeds {plan.seeds}; grid: {grid}; baseline: {plan.baseline}; study-wide --set: "
          f"{' '.join(plan.sets) or 'none'}. Each run's overrides, in the order applied:")
    seen, rows = set(), []
    for run in plan.runs:
        if (run.kind, run.group) in seen:
            continue
        seen.add((run.kind, run.group))
        own = [o for o in run.overrides if not o.startswith(("train.seed=", *[f"{k}=" for k in run.grid]))]
        rows.append([f"{run.kind} {run.group}", run.raw.get("name", "?"), " ".join(own) or "—"])
    doc.table(["run", "recipe", "overrides"], rows)


def _per_class_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """Mean strict Dice per class over each row's finished seeds."""
    names: list[str] = []
    rows = []
    for r in results["rows"]:
        sums: dict[str, list[float]] = {}
        for d in r["run_dirs"].values():
            s = json.loads((Path(d) / "summary.json").read_text())
            for cls, v in s.get("per_class", {}).items():
                if cls not in names:
                    names.append(cls)
                if v.get("dice") is not None:
                    sums.setdefault(cls, []).append(v["dice"])
        rows.append((r, sums))
    return names, [[r["variant"], r["label"].replace("__", ", ") or "—"]
                   + [_fmt(sum(s[n]) / len(s[n])) if s.get(n) else "—" for n in names] for r, s in rows]


def _run_ref(run_dir: Path, study_dir: Path) -> str:
    """A run's folder relative to the study, and its own report where it has one."""
    rel = os.path.relpath(run_dir, study_dir)
    report = run_dir / "report.html"
    return f"{rel} (report: {os.path.relpath(report, study_dir)})" if report.is_file() else rel


def _study_doc(study_dir: Path) -> Doc:
    """The study report: setup, tables, figures, per-class Dice, stages and runs, study file and hardware."""
    plan, results = read_plan(study_dir), write_study_table(study_dir)
    doc = Doc(f"Study {results['name']}")
    _study_setup(doc, plan)
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
    names, rows = _per_class_rows(results)
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
    if first is not None and (first / "env.json").is_file():
        doc.h("Hardware and software (first finished run)")
        doc.table(["item", "value"], [[k, v] for k, v in json.loads((first / "env.json").read_text()).items()])
    return doc


def write_study_report(study_dir: str | Path) -> Path:
    """report.md and report.html of a study (table refreshed from the runs); returns the HTML path."""
    study_dir = Path(study_dir)
    return write_doc(_study_doc(study_dir), study_dir)


def folder_kind(path: Path) -> str:
    """'study' (plan.json) or 'run' (config.yaml): what every report format is asked to describe."""
    if (path / "plan.json").is_file():
        return "study"
    if (path / "config.yaml").is_file():
        return "run"
    raise CnnlabError(f"{path}: neither a run folder (config.yaml) nor a study folder (plan.json)",
                      "give a folder written by cnnlab train or cnnlab study")


def write_report(path: str | Path) -> Path:
    """A study folder (plan.json) or a run folder (config.yaml): the matching report."""
    path = Path(path)
    return write_study_report(path) if folder_kind(path) == "study" else write_run_report(path)
