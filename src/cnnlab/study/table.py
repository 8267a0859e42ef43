"""The study table: each metric as mean ± std over seeds per variant x grid point, and paired differences to the
baseline with 95% t-intervals; written as table.md, table.csv and study.json, printed with rich."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cnnlab.engine.run_files import read_summary
from cnnlab.engine.rundir import write_text_atomic
from cnnlab.interrupts import protected
from cnnlab.logs import piped_width
from cnnlab.metrics.names import label
from cnnlab.study.plan import StudyPlan, find_run_dir, grid_label, read_failures, read_plan
from cnnlab.study.stats import excludes_zero, mean, paired_difference, sample_std
from cnnlab.tasks import TASKS
from cnnlab.text import markdown_table


def _clean(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _summaries(study_dir: Path, plan: StudyPlan) -> dict[str, tuple[Path, dict]]:
    """Run name -> (run dir, summary.json) for every finished run."""
    out = {}
    for run in plan.runs:
        d = find_run_dir(study_dir / "runs", run.name)
        s = read_summary(d) if d is not None else None
        if s is not None:
            out[run.name] = (d, s)
    return out


def _metric_names(plan: StudyPlan, summaries: dict) -> tuple[str, list[str]]:
    variant_runs = [summaries[r.name][1] for r in plan.runs if r.kind == "variant" and r.name in summaries]
    if not variant_runs:
        return "unknown", []
    task = variant_runs[0].get("task", "unknown")
    known = list(TASKS[task].study_metrics) if task in TASKS else []
    if known:
        return task, known
    return task, sorted(k for k, v in variant_runs[0].get("metrics", {}).items() if isinstance(v, (int, float)))


def _row(plan: StudyPlan, variant: str, point: dict, summaries: dict, failures: dict, metrics: list[str]) -> dict:
    runs = [r for r in plan.runs if r.kind == "variant" and r.group == variant and r.grid == point]
    block = "metrics" if plan.evaluate == "test" else "validation"
    values: dict[str, dict[int, float]] = {m: {} for m in metrics}
    for r in runs:
        if r.name in summaries:
            got = summaries[r.name][1].get(block, {})
            for m in metrics:
                if isinstance(got.get(m), (int, float)):
                    values[m][r.seed] = float(got[m])
    stats = {m: {"mean": _clean(mean(list(v.values()))), "std": _clean(sample_std(list(v.values()))),
                 "n": len(v), "values": {str(s): x for s, x in v.items()}} for m, v in values.items()}
    return {"variant": variant, "grid": point, "label": grid_label(point) if point else "", "n_planned": len(runs),
            "n_finished": sum(r.name in summaries for r in runs),
            "run_dirs": {str(r.seed): str(summaries[r.name][0]) for r in runs if r.name in summaries},
            "failed": {str(r.seed): failures[r.name] for r in runs if r.name in failures}, "stats": stats,
            "_values": values}


def _add_differences(rows: list[dict], baseline: str, metrics: list[str]) -> None:
    """vs_baseline per row: paired over the seeds both the row and the baseline finished (None for the baseline)."""
    base = {json.dumps(r["grid"], sort_keys=True): r for r in rows if r["variant"] == baseline}
    for r in rows:
        ref = base.get(json.dumps(r["grid"], sort_keys=True))
        if r["variant"] == baseline or ref is None:
            r["vs_baseline"] = None
            continue
        r["vs_baseline"] = {}
        for m in metrics:
            seeds = sorted(set(r["_values"][m]) & set(ref["_values"][m]))
            d = paired_difference([r["_values"][m][s] for s in seeds], [ref["_values"][m][s] for s in seeds])
            r["vs_baseline"][m] = {**d.as_dict(), "seeds": seeds}


def collect_results(study_dir: str | Path) -> dict:
    """Everything the table and the study report show, read from the runs' summary.json files."""
    study_dir = Path(study_dir)
    plan = read_plan(study_dir)
    summaries, failures = _summaries(study_dir, plan), read_failures(study_dir)
    task, metrics = _metric_names(plan, summaries)
    rows = [_row(plan, v, p, summaries, failures, metrics) for p in plan.grid_points() for v in plan.variants]
    _add_differences(rows, plan.baseline, metrics)
    for r in rows:
        del r["_values"]
    variant_runs = {r.name for r in plan.runs if r.kind == "variant"}
    evaluated = sorted({s.get("evaluated_on", "?") for name, (_, s) in summaries.items() if name in variant_runs}) \
        if plan.evaluate == "test" else ["validation"]
    stages = [{"name": r.group, "run": r.name, "status": "finished" if r.name in summaries else
               "failed" if r.name in failures else "not run", "run_dir": str(summaries[r.name][0])
               if r.name in summaries else None, "error": failures.get(r.name)} for r in plan.runs if r.kind == "stage"]
    headline = plan.metric or (metrics[0] if metrics else None)
    return {"name": plan.name, "task": task, "evaluate": plan.evaluate, "evaluated_on": evaluated,
            "metrics": metrics, "headline_metric": headline, "baseline": plan.baseline, "grid": plan.grid,
            "seeds": plan.seeds, "variants": plan.variants, "stages": stages,
            "conventions": _conventions(task), "rows": rows}


def _conventions(task: str) -> str:
    """The conventions paragraph of the study's task; a study whose task is unknown (no variant run finished) has
    always shown segmentation's, a recipe's default task."""
    return (TASKS[task] if task in TASKS else TASKS["segmentation"]).conventions_text()


def _pm(stat: dict, digits: int = 4) -> str:
    if stat["mean"] is None:
        return "—"
    std = f"{stat['std']:.{digits}f}" if stat["std"] is not None else "—"
    return f"{stat['mean']:.{digits}f} ± {std}"


def _ci(d: dict | None, digits: int = 4) -> str:
    if d is None or d["mean"] is None:
        return "—"
    if d["low"] is None:
        return f"{d['mean']:+.{digits}f} (n={d['n']}, no interval)"
    star = " *" if excludes_zero(d["low"], d["high"]) else ""
    return f"{d['mean']:+.{digits}f} [{d['low']:+.{digits}f}, {d['high']:+.{digits}f}]{star}"


def _seeds_cell(r: dict) -> str:
    cell = f"{r['n_finished']}/{r['n_planned']}"
    return cell + (f" ({len(r['failed'])} FAILED)" if r["failed"] else "")


def table_sections(results: dict, compact: bool = False) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, headers, rows) of the two tables, shared by table.md, the terminal and the study report; compact
    (terminal) rounds to 3 digits and shows differences for the headline metric only."""
    keys = list(results["grid"])
    short = [k.split(".")[-1] for k in keys]
    digits = 3 if compact else 4
    metrics = results["metrics"]
    deltas = [results["headline_metric"]] if compact and results["headline_metric"] in metrics else metrics
    split = ", ".join(results["evaluated_on"])
    first = (f"Mean ± sample std over seeds ({split} split)", ["variant", *short, "seeds"]
             + [label(m) for m in metrics],
             [[r["variant"], *[str(r["grid"][k]) for k in keys], _seeds_cell(r)]
              + [_pm(r["stats"][m], digits) for m in metrics] for r in results["rows"]])
    second = (f"Difference to the baseline '{results['baseline']}' at the same grid point: mean over paired seeds "
              "[95% t-interval]; * = interval excludes 0",
              ["variant", *short, "pairs"] + [f"Δ {label(m)}" for m in deltas],
              [[r["variant"], *[str(r["grid"][k]) for k in keys],
                str(r["vs_baseline"][metrics[0]]["n"]) if r["vs_baseline"] and metrics else "—"]
               + [_ci(r["vs_baseline"][m], digits) if r["vs_baseline"] else "—" for m in deltas]
               for r in results["rows"] if r["variant"] != results["baseline"]])
    return [first, second]


def failure_lines(results: dict) -> list[str]:
    """One line per failed run or stage."""
    lines = [f"{s['run']}: FAILED: {s['error']}" for s in results["stages"] if s["status"] == "failed"]
    for r in results["rows"]:
        lines += [f"{r['variant']} {r['label']} seed {seed}: FAILED: {msg}".replace("  ", " ")
                  for seed, msg in r["failed"].items()]
    return lines


def table_markdown(results: dict) -> str:
    """table.md: the conventions, both tables and the failures."""
    parts = [f"# Study {results['name']}", "", results["conventions"], ""]
    for title, headers, rows in table_sections(results):
        parts += [f"**{title}**", "", markdown_table(headers, rows), ""]
    fails = failure_lines(results)
    if fails:
        parts += ["**Failed runs** (excluded from the statistics above)", ""] + [f"- {f}" for f in fails] + [""]
    return "\n".join(parts)


def _write_csv(results: dict, path: Path) -> None:
    keys = list(results["grid"])
    head = ["variant", *keys, "n_finished", "n_planned", "n_failed"]
    for m in results["metrics"]:
        head += [f"{m}_mean", f"{m}_std"]
    for m in results["metrics"]:
        head += [f"delta_{m}", f"delta_{m}_low", f"delta_{m}_high", f"delta_{m}_n"]
    with open(path, "w", newline="", encoding="utf-8", errors="backslashreplace") as f:  # as write_text_atomic
        w = csv.writer(f)
        w.writerow(head)
        for r in results["rows"]:
            row = [r["variant"], *[r["grid"][k] for k in keys], r["n_finished"], r["n_planned"], len(r["failed"])]
            for m in results["metrics"]:
                row += [r["stats"][m]["mean"], r["stats"][m]["std"]]
            for m in results["metrics"]:
                d = (r["vs_baseline"] or {}).get(m) or {}
                row += [d.get("mean"), d.get("low"), d.get("high"), d.get("n")]
            w.writerow(["" if v is None else v for v in row])


def write_study_table(study_dir: str | Path) -> dict:
    """Collect the results and write table.md, table.csv and study.json into the study folder."""
    study_dir = Path(study_dir)
    results = collect_results(study_dir)
    write_text_atomic(study_dir / "study.json", json.dumps(results, indent=1))
    write_text_atomic(study_dir / "table.md", table_markdown(results))
    with protected():
        _write_csv(results, study_dir / "table.csv")
    return results


def print_study_table(results: dict, console: Console | None = None) -> None:
    """Both tables in the terminal, with the metric conventions and failures: on the one console (200 columns wide
    where piped or logged, rich's default being 80), wrapped at its width."""
    if console is None:
        with piped_width(200) as wide:
            return print_study_table(results, wide)
    for title, headers, rows in table_sections(results, compact=True):
        t = Table(title=title, title_justify="left")
        for i, h in enumerate(headers):
            t.add_column(h, justify="left" if i == 0 else "right")
        for row in rows:
            t.add_row(*row)
        console.print(t, soft_wrap=False)
    console.print(results["conventions"].replace("`", ""), soft_wrap=False)
    console.print("every metric's difference with its interval: table.md / table.csv / study.json", soft_wrap=False)
    for line in failure_lines(results):
        console.print(f"[red]{line}[/red]", soft_wrap=False)
