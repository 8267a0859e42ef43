"""`cnnlab compare RUN_DIR...`: one table of several hand-made runs (not a study) — their headline metrics and
per-class Dice/IoU side by side, one column per run, each metric row naming its convention. Classes are the union
over the runs (blank where a run has no such class); only summary.json is read.

Formats: md (default, to stdout), csv (full precision, for spreadsheets and tests), latex (a booktabs table float
to \\input into a paper, best value per row in bold)."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from cnnlab.engine.run_files import has_config, read_summary, require_summary
from cnnlab.errors import CnnlabError, did_you_mean
from cnnlab.metrics.names import METRICS, convention, label, lower_is_better
from cnnlab.report.tex import table_tex, tex_escape
from cnnlab.text import markdown_table

FORMATS = ("md", "csv", "latex")


def _load(run_dir: Path) -> dict:
    if (run_dir / "plan.json").is_file():
        raise CnnlabError(f"{run_dir} is a study folder", f"its table is in cnnlab report {run_dir}")
    if has_config(run_dir):
        return require_summary(run_dir, f"finish it with cnnlab train --resume {run_dir}")
    s = read_summary(run_dir)
    if s is None:
        raise CnnlabError(f"{run_dir}: not a run folder (no summary.json)", "give folders written by cnnlab train")
    return s


def _column_names(run_dirs: list[Path]) -> list[str]:
    """Each run's folder name; parent/name where two folders share a name."""
    names = [d.name for d in run_dirs]
    return [f"{d.parent.name}/{d.name}" if names.count(d.name) > 1 else d.name for d in run_dirs]


def compare_rows(run_dirs: list[str | Path]) -> tuple[list[str], list[dict]]:
    """(run column names, rows): each row has key, metric, convention and values (one per run: a float, None
    for an undefined score, or the string '' where the run has no such metric or class)."""
    dirs = [Path(d) for d in run_dirs]
    sums = [_load(d) for d in dirs]
    rows = [{"key": "evaluated_on", "metric": "evaluated on", "convention": "split (number of images)",
             "values": [f"{s.get('evaluated_on', '?')} ({s.get('n_images', '?')})" for s in sums]},
            {"key": "best_epoch", "metric": "best epoch", "convention": "the weights evaluated, of epochs run",
             "values": [f"{s.get('best_epoch', '?')} of {s.get('epochs_run', '?')}" for s in sums]}]
    for key in METRICS:  # label and convention column: metrics.names
        if any(key in s.get("metrics", {}) for s in sums):
            rows.append({"key": key, "metric": label(key), "convention": convention(key),
                         "values": [s["metrics"].get(key) if key in s.get("metrics", {}) else "" for s in sums]})
    classes: list[str] = []
    for s in sums:
        classes += [c for c in s.get("per_class", {}) if c not in classes]
    for what in ("dice", "iou"):
        for c in classes:
            rows.append({"key": f"per_class.{c}.{what}", "metric": f"{'Dice' if what == 'dice' else 'IoU'}: {c}",
                         "convention": f"strict {'Dice' if what == 'dice' else 'IoU'} of this class (global counts)",
                         "values": [s["per_class"][c].get(what) if c in s.get("per_class", {}) else ""
                                    for s in sums]})
    return _column_names(dirs), rows


def _shown(v, digits: int = 4) -> str:
    return "" if v == "" else "—" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _best(row: dict) -> set[int]:
    """Indices of the runs with the best value of a metric row (ties at 4 decimals all count)."""
    nums = {i: round(v, 4) for i, v in enumerate(row["values"]) if isinstance(v, (int, float)) and v is not None}
    if len(set(nums.values())) < 2 or row["key"] in ("evaluated_on", "best_epoch"):
        return set()  # nothing to compare, or all equal
    best = (min if lower_is_better(row["key"]) else max)(nums.values())
    return {i for i, v in nums.items() if v == best}


def _warnings(rows: list[dict]) -> list[str]:
    splits = {v.split(" (")[0] for v in rows[0]["values"]}
    if len(splits) < 2:
        return []
    note = f"note: the runs were evaluated on different splits ({', '.join(sorted(splits))}); their numbers are "
    return [note + "not directly comparable"]


def render_md(names: list[str], rows: list[dict]) -> str:
    """A markdown table (best value per metric in bold), then any warning."""
    body = [[r["metric"], r["convention"]] + [f"**{_shown(v)}**" if i in _best(r) else _shown(v)
                                              for i, v in enumerate(r["values"])] for r in rows]
    text = markdown_table(["metric", "convention", *names], body)
    legend = ("Bold: the best run per metric. — : undefined (class in neither prediction nor ground truth); "
              "blank: the run has no such metric or class.")
    return "\n".join([text, "", legend, *_warnings(rows)]) + "\n"


def render_csv(names: list[str], rows: list[dict]) -> str:
    """key, metric, convention, then one column per run at full precision (blank where missing or undefined)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["key", "metric", "convention", *names])
    for r in rows:
        w.writerow([r["key"], r["metric"], r["convention"]] + ["" if v is None else v for v in r["values"]])
    return buf.getvalue()


def render_latex(names: list[str], rows: list[dict]) -> str:
    """A booktabs table float (metric and convention per row, runs as columns, best per row in bold)."""
    body = []
    for r in rows:
        cells = [tex_escape(_shown(v)) for v in r["values"]]
        body.append([tex_escape(r["metric"]), f"\\footnotesize {tex_escape(r['convention'])}"]
                    + [f"\\textbf{{{c}}}" if i in _best(r) else c for i, c in enumerate(cells)])
    warn = " ".join(tex_escape(w) for w in _warnings(rows))
    caption = ("Runs compared on their evaluated split; each row names its metric's convention (strict Dice: "
               "argmax, global counts over the split, mean over the classes in the ground truth; the soft Dice per "
               "batch is the course's convention, never the headline). Best value per row in bold; -- undefined, "
               f"blank: not in that run. {warn}").strip()
    return table_tex(["metric", "convention", *[f"\\texttt{{{tex_escape(n)}}}" for n in names]], body, caption,
                     "tab:cnnlab-compare", "cnnlab compare", "lp{0.32\\linewidth}" + "r" * len(names), keep=2)


def compare(run_dirs: list[str | Path], fmt: str = "md") -> str:
    """The comparison table of several runs in one format (md, csv or latex)."""
    if fmt not in FORMATS:
        raise CnnlabError(f"unknown compare format '{fmt}'", did_you_mean(fmt, FORMATS))
    names, rows = compare_rows(run_dirs)
    return {"md": render_md, "csv": render_csv, "latex": render_latex}[fmt](names, rows)


def format_for(out: str | None, fmt: str | None) -> str:
    """--format if given, else from --out's suffix (.csv, .tex), else md."""
    if fmt:
        return fmt
    suffix = Path(out).suffix.lower() if out else ""
    return {".csv": "csv", ".tex": "latex"}.get(suffix, "md")
