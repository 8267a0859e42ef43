"""What every report format shares: a report as a list of blocks (`Doc`) with its markdown and self-contained HTML
writers, numbers as the tables print them (`fmt`), figure captions, a study's setup and per-class rows, and what a
folder is (`folder_kind`). The run and study reports (build), their LaTeX (latex, latex_study), the terminal tables
(tables) and the tune report (tune) import these from here."""
from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path

from cnnlab.engine.run_files import has_config, read_summary
from cnnlab.engine.rundir import write_text_atomic
from cnnlab.errors import CnnlabError
from cnnlab.text import markdown_table, markdown_text

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


def fmt(v) -> str:
    return "—" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def caption(name: str) -> str:
    return CAPTIONS.get(name, name.rsplit(".", 1)[0].replace("_", " ").capitalize() + ".")


def study_setup(doc: Doc, plan) -> None:
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


def per_class_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """Mean strict Dice per class over each row's finished seeds."""
    names: list[str] = []
    rows = []
    for r in results["rows"]:
        sums: dict[str, list[float]] = {}
        for d in r["run_dirs"].values():
            s = read_summary(Path(d)) or {}
            for cls, v in s.get("per_class", {}).items():
                if cls not in names:
                    names.append(cls)
                if v.get("dice") is not None:
                    sums.setdefault(cls, []).append(v["dice"])
        rows.append((r, sums))
    return names, [[r["variant"], r["label"].replace("__", ", ") or "—"]
                   + [fmt(sum(s[n]) / len(s[n])) if s.get(n) else "—" for n in names] for r, s in rows]


def folder_kind(path: Path) -> str:
    """'study' (plan.json) or 'run' (config.yaml): what every report format is asked to describe."""
    if (path / "plan.json").is_file():
        return "study"
    if has_config(path):
        return "run"
    raise CnnlabError(f"{path}: neither a run folder (config.yaml) nor a study folder (plan.json)",
                      "give a folder written by cnnlab train or cnnlab study")
