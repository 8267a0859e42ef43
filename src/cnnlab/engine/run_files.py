"""A run's files: what a run dir holds, written and read here and nowhere else (with engine/checkpoint.py, which
owns best.pt and last.pt).

- `config.yaml` (with `env.json`, and `history.yaml` once resumed): `write_config`, `record_resume` (atomic);
  read by `read_config`, `read_recipe`, `read_config_text`, `read_resumes`, `read_env`
- `transfer.json` (runs with model.init): `write_transfer`; `read_transfer`
- `metrics.csv`: `write_metrics`, inside the epoch's protected step; `read_metrics`, `read_history`
- `events.jsonl`: written line by line, flushed, by `engine.progress.EventLog`; `read_events`
- `summary.json`: `write_summary_file` (atomic), the mark of a finished run; `has_summary`, `read_summary`
- `best.pt`, `last.pt`: `engine.checkpoint.save_checkpoints` (atomic); `engine.checkpoint.read_checkpoint`
- `figures/*.png`: drawn by `engine.figures` at the end of a run; reports only read them

Why one owner: the engine writes these files and reports, studies, inference and the Python API read them; with
the names and formats in one module a change of format is one change, and `tests/engine/test_run_files.py` fails if a
part reads summary.json or loads a checkpoint on its own. Every write keeps its `interrupts.protected()` step: a
signal never cuts one in half.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import shlex
import time
from pathlib import Path

import yaml

from cnnlab.config import Recipe, dump_recipe, read_yaml, recipe_from_dict
from cnnlab.engine.rundir import environment, git_hash, write_text_atomic
from cnnlab.errors import CnnlabError

CONFIG = "config.yaml"
ENV = "env.json"
HISTORY = "history.yaml"
TRANSFER = "transfer.json"
METRICS = "metrics.csv"
EVENTS = "events.jsonl"
SUMMARY = "summary.json"
BEST = "best.pt"
LAST = "last.pt"
FIGURES = "figures"


# config.yaml, env.json, history.yaml ---------------------------------------------------------------------------

def write_config(run_dir: Path, recipe: Recipe, resumes: list[dict] | None = None) -> None:
    """config.yaml (every default written out) headed by the git hash; env.json beside it.

    With resumes (a resumed run), config.yaml is rewritten as the recipe that ran last, its header listing each
    resume and its overrides; env.json keeps the environment the run started in.
    """
    header = f"# cnnlab resolved recipe\n# git: {git_hash()}\n"
    for h in resumes or []:
        sets = " ".join(f"--set {shlex.quote(o)}" for o in h["overrides"]) or "no overrides"
        header += f"# resumed {h['time']} after epoch {h['from_epoch']} ({sets}); see {HISTORY}\n"
    write_text_atomic(run_dir / CONFIG, header + dump_recipe(recipe))
    if resumes is None:
        (run_dir / ENV).write_text(json.dumps({**environment(), "git": git_hash()}, indent=2))


def read_resumes(run_dir: Path) -> list[dict]:
    """The run's resume history (history.yaml), oldest first; empty for a run never resumed."""
    path = Path(run_dir) / HISTORY
    if not path.is_file():
        return []
    return list((yaml.safe_load(path.read_text()) or {}).get("resumes") or [])


def record_resume(run_dir: Path, recipe: Recipe, from_epoch: int, overrides: list[str]) -> list[dict]:
    """Append this resume to history.yaml and rewrite config.yaml as the recipe that now runs.

    Why: `--resume --set train.epochs=N` changes what runs; the run dir must say so, and say when and from where.
    """
    entries = read_resumes(run_dir) + [{"time": time.strftime("%Y-%m-%d %H:%M:%S"), "from_epoch": from_epoch,
                                        "epochs": recipe.train.epochs, "overrides": list(overrides),
                                        "git": git_hash()}]
    write_text_atomic(Path(run_dir) / HISTORY, yaml.safe_dump({"resumes": entries}, sort_keys=False))
    write_config(Path(run_dir), recipe, entries)
    return entries


def has_config(run_dir: Path) -> bool:
    """Whether the folder is a run dir: config.yaml is the first file a run writes."""
    return (Path(run_dir) / CONFIG).is_file()


def read_config(run_dir: Path) -> dict:
    """config.yaml as written (a bad tag or syntax: one line naming the file, not a traceback)."""
    return read_yaml(Path(run_dir) / CONFIG)


def read_recipe(run_dir: Path, overrides: list[str] | None = None) -> Recipe:
    """The resolved recipe the run trained with (config.yaml), with overrides applied; names are not checked
    again (runs saved before names were checked stay readable)."""
    return recipe_from_dict(read_config(run_dir), overrides, check_name=False)


def read_config_text(run_dir: Path) -> str | None:
    """config.yaml's text as the run wrote it, header included (the reports show it); None where absent."""
    path = Path(run_dir) / CONFIG
    return path.read_text() if path.is_file() else None


def read_env(run_dir: Path) -> dict | None:
    """env.json: the hardware and software the run started on; None where absent."""
    path = Path(run_dir) / ENV
    return json.loads(path.read_text()) if path.is_file() else None


def write_transfer(run_dir: Path, transfer: dict) -> None:
    """transfer.json: which tensors model.init loaded, and which it left as initialised."""
    (Path(run_dir) / TRANSFER).write_text(json.dumps(transfer, indent=1))


def read_transfer(run_dir: Path) -> dict | None:
    """transfer.json, or None for a run without model.init."""
    path = Path(run_dir) / TRANSFER
    return json.loads(path.read_text()) if path.is_file() else None


# metrics.csv, events.jsonl -------------------------------------------------------------------------------------

def write_metrics(run_dir: Path, history: list[dict]) -> None:
    """metrics.csv: one row per finished epoch, the columns of every row in order of first appearance. Written
    inside the epoch's protected step (engine.run), so a signal waits for it."""
    keys = list(dict.fromkeys(k for row in history for k in row))
    with open(Path(run_dir) / METRICS, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv's rows as written (text cells, '' where an epoch lacks a column); empty before the first
    epoch ends."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_history(run_dir: Path) -> list[dict[str, float]]:
    """metrics.csv as a list of rows with float values (empty cells become nan)."""
    return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()} for row in read_metrics(run_dir)]


def read_events(path: Path) -> list[dict]:
    """The events of a run dir's events.jsonl (a last line cut short by a crash is skipped); path: the run dir
    or the file itself."""
    path = Path(path)
    if path.is_dir():
        path = path / EVENTS
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


# summary.json --------------------------------------------------------------------------------------------------

def write_summary_file(run_dir: Path, summary: dict) -> None:
    """summary.json, in one atomic step: its presence is what marks a run as finished."""
    write_text_atomic(Path(run_dir) / SUMMARY, json.dumps(summary, indent=2))


def has_summary(run_dir: Path) -> bool:
    """Whether the run has finished: summary.json is the last file a run writes (before its figures)."""
    return (Path(run_dir) / SUMMARY).is_file()


def read_summary(run_dir: Path) -> dict | None:
    """summary.json of a finished run (test metrics, validation metrics, best epoch, per-class scores, notes ...);
    None for a run that has not finished. Each reader says in its own words what a missing one means."""
    path = Path(run_dir) / SUMMARY
    return json.loads(path.read_text()) if path.is_file() else None


def require_summary(run_dir: Path, hint: str) -> dict:
    """summary.json, or one line saying the run has not finished (hint: what to do about it)."""
    s = read_summary(run_dir)
    if s is None:
        raise CnnlabError(f"{run_dir}: no summary.json, the run has not finished", hint)
    return s
