"""Time to quality on the course data: training seconds until validation strict Dice first reaches 0.80 and 0.85.

Three contenders, one after the other in one run, each in its own fresh process, all at the same size (128x160):
  (i)   cnnlab's recommended recipe: what `cnnlab new` writes, the ImageNet EfficientNet-Lite0 encoder with the
        light FCN decoder (cnnlab.new.rows.PRETRAINED_*), on top of recipes/endovis/f_imagenet_unet.yaml (Dice +
        CE, AdamW 2e-3, cosine, 2 warm-up epochs, encoder frozen 2 epochs, flips + colour jitter, fp32 on CPU,
        batch 8, 15 epochs, patience 10). Run as `cnnlab train` itself: cnnlab's real engine, start to end.
  (ii)  the same recipe and model trained the plain PyTorch way (ttq_plain.py: per-sample PIL Dataset, DataLoader,
        fp32 NCHW; same initial weights, optimizer, learning rate, schedule, loss, batch, epochs, augmentation).
  (iii) the course U-Net recipe (c) (recipes/endovis/c_tuned.yaml) through `cnnlab train`.

One judge: after every epoch the validation split as cnnlab decodes it is scored with cnnlab's strict Dice
(argmax, global counts over the split, mean over the classes present in the ground truth;
cnnlab.metrics.confusion.ConfusionMatrix via cnnlab.engine.steps.evaluate), by the engine for (i)/(iii) and by the
same function for (ii). Validation time is NOT training time: the seconds are the sum of the epochs' training
loops (engine: each epoch's `seconds`; plain: its loop), so validation, checkpoints, imports and decoding are out.
The wall seconds from process start to the end of that epoch (everything included) are shown beside them.
A contender stops when it reaches the highest threshold, ends its recipe's epochs, or has trained --max-minutes.

    .venv/bin/python benchmarks/time_to_quality.py --threads 2                 # the full run: ~40+ min of 2 cores
    .venv/bin/python benchmarks/time_to_quality.py --smoke --threads 1         # 2 epochs x 2 steps at 64x80
    .venv/bin/python benchmarks/time_to_quality.py --only plain --max-minutes 3 --threads 1
    .venv/bin/python benchmarks/time_to_quality.py --only cnnlab --set 'train.size_schedule=[[0.5, 10]]'  # an A/B
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import ttq_plain  # noqa: E402
from cnnlab.config import load_recipe  # noqa: E402
from cnnlab.new.rows import PRETRAINED_MODEL, PRETRAINED_PARAMS  # noqa: E402

RECIPES = common.REPO / "recipes" / "endovis"
SMOKE_SIZE, SMOKE_EPOCHS, SMOKE_STEPS = (64, 80), 2, 2


@dataclass(frozen=True)
class Contender:
    """One side: a recipe with overrides, run by cnnlab's engine (`cnnlab train`) or by the plain loop."""

    key: str
    label: str
    kind: str                     # engine | plain
    recipe: Path
    overrides: tuple[str, ...]


def seconds_to(history: Sequence[tuple[float, float | None]], threshold: float) -> float | None:
    """The first cumulative training seconds at which validation Dice reached threshold (>=); None if never.

    history: (cumulative training seconds, validation Dice) after each epoch, in order.
    """
    return next((s for s, d in history if d is not None and d >= threshold), None)


def ratio_to_plain(plain_s: float | None, own_s: float | None, plain_trained_s: float) -> dict | None:
    """How many times sooner than the plain loop: plain seconds / own seconds. Where the plain loop never got
    there, its whole training time gives a lower bound ('at_least'); None where this contender never got there."""
    if own_s is None or own_s <= 0:
        return None
    if plain_s is None:
        return {"ratio": plain_trained_s / own_s, "at_least": True}
    return {"ratio": plain_s / own_s, "at_least": False}


def contenders(args: argparse.Namespace, root: Path, work: Path) -> list[Contender]:
    """(i), (ii), (iii) with the overrides every side shares (data, size, threads, cache, smoke caps)."""
    h, w = args.size
    shared = [f"data.root={root}", f"data.size=[{h}, {w}]", f"data.cache_dir={work / 'cache'}",
              "train.progress=false"]
    if args.threads:
        shared.append(f"train.threads={args.threads}")
    if args.smoke:
        shared += [f"train.epochs={SMOKE_EPOCHS}", f"train.max_steps_per_epoch={SMOKE_STEPS}"]
    new = [f"model.name={PRETRAINED_MODEL}", f"model.params={json.dumps(PRETRAINED_PARAMS)}",
           "train.patience=10"]  # what `cnnlab new` writes beyond recipe (f) (cnnlab.new.rows)
    f, c = RECIPES / "f_imagenet_unet.yaml", RECIPES / "c_tuned.yaml"
    sides = [Contender("cnnlab", "(i) cnnlab recommended: Lite0 FCN, ImageNet", "engine", f,
                       tuple(shared + new + list(args.set) + [f"out={work / 'cnnlab'}"])),
             Contender("plain", "(ii) plain PyTorch loop, same model", "plain", f, tuple(shared + new)),
             Contender("course_unet", "(iii) course U-Net recipe (c)", "engine", c,
                       tuple(shared + [f"out={work / 'course_unet'}"]))]
    return [s for s in sides if not args.only or s.key in args.only]


def _row(e: dict, spent: float, spawn: float) -> dict:
    return {"epoch": e["epoch"], "epoch_s": e["epoch_s"], "train_s": spent, "val_dice": e["val_dice"],
            "lr": e.get("lr"), "wall_s": e["time"] - spawn}


def _engine_events(out: Path) -> list[dict]:
    """The events.jsonl lines of the run under out (a half-written last line is skipped)."""
    rows = []
    for path in sorted(out.glob("*/events.jsonl")):
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows


def _stamp(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def engine_history(events: list[dict], spawn: float) -> tuple[list[dict], float | None, float | None]:
    """Epoch rows (cumulative training seconds), seconds from spawn to the first train step, decode seconds."""
    rows, spent, start, decode = [], 0.0, None, None
    for e in events:
        if e.get("event") == "phase_start" and e.get("phase") == "train" and start is None:
            start = _stamp(e["time"]) - spawn
        elif e.get("event") == "data":
            decode = e.get("seconds")
        elif e.get("event") == "epoch":
            spent += e["seconds"]
            rows.append(_row({"epoch": e["epoch"], "epoch_s": e["seconds"], "val_dice": e.get("val_dice_mean"),
                              "lr": e.get("lr"), "time": _stamp(e["time"])}, spent, spawn))
    return rows, start, decode


def _stop(rows: list[dict], cap_s: float, stop_at: float) -> str | None:
    if rows and rows[-1]["val_dice"] is not None and rows[-1]["val_dice"] >= stop_at:
        return "reached"
    if rows and rows[-1]["train_s"] >= cap_s:
        return "cap"
    return None


def _show(c: Contender, row: dict) -> None:
    print(f"  {c.key} epoch {row['epoch']}: {row['epoch_s']:.1f} s training (total {row['train_s']:.1f} s), "
          f"val strict Dice {row['val_dice']:.4f}", flush=True)


def _follow(c: Contender, proc: subprocess.Popen, out: Path, spawn: float, cap_s: float, stop_at: float,
            epochs: int) -> tuple[list[dict], float | None, float | None, str]:
    """Read the run's events.jsonl as it grows until the run reached stop_at, trained cap_s, ended its last epoch
    (only the untimed test phase and report are left then) or ended by itself."""
    shown = 0
    while True:
        done = proc.poll() is not None
        rows, start, decode = engine_history(_engine_events(out), spawn)
        for row in rows[shown:]:
            _show(c, row)
        shown = len(rows)
        stopped = _stop(rows, cap_s, stop_at) or ("finished" if done or len(rows) >= epochs else None)
        if stopped is None and time.time() - spawn > 4 * cap_s + 900:
            stopped = "timeout"
        if stopped is not None:
            return rows, start, decode, stopped
        time.sleep(0.5)


def run_engine(c: Contender, cap_s: float, stop_at: float, work: Path) -> dict:
    """`cnnlab train` in a fresh process, followed through its events.jsonl and ended (SIGTERM, as Ctrl-C) once
    it reached stop_at, trained cap_s seconds or finished its last epoch."""
    cmd = [sys.executable, "-m", "cnnlab", "train", str(c.recipe), *[a for o in c.overrides for a in ("--set", o)]]
    print(f"{c.label}: {shlex.join(['cnnlab', *cmd[3:]])}", flush=True)
    out = Path(next(o for o in c.overrides if o.startswith("out=")).split("=", 1)[1])
    epochs = load_recipe(c.recipe, list(c.overrides)).train.epochs
    log = work / f"{c.key}.log"
    spawn = time.time()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=common.REPO)
        rows, start, decode, stopped = _follow(c, proc, out, spawn, cap_s, stop_at, epochs)
        exited = proc.poll() is not None
        if not exited:
            proc.terminate()  # the engine ends as on Ctrl-C: last.pt kept, exit status 2
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if exited and proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        if not rows:
            raise SystemExit(f"{c.key}: `cnnlab train` failed (exit {proc.returncode}); the end of {log}:\n{tail}")
        # after its epochs (the test phase or the report): the epochs' numbers stand, the failure is recorded
        print(f"WARNING: {c.key}: `cnnlab train` exited {proc.returncode} after epoch {rows[-1]['epoch']}:\n{tail}")
        stopped = f"exit {proc.returncode} after epoch {rows[-1]['epoch']}"
    return {"history": rows, "startup_s": start, "decode_s": decode, "stopped": stopped,
            "wall_s": time.time() - spawn, "command": shlex.join(cmd)}


def run_plain(c: Contender, cap_s: float, stop_at: float, work: Path, workers: int) -> dict:
    """ttq_plain.py in a fresh process; it stops itself (stop_at, cap_s) and prints a line per epoch."""
    cmd = [sys.executable, str(Path(ttq_plain.__file__)), str(c.recipe),
           *[a for o in c.overrides for a in ("--set", o)], "--cap-s", str(cap_s), "--stop-at", str(stop_at),
           "--workers", str(workers)]
    print(f"{c.label}: benchmarks/ttq_plain.py (same recipe and overrides)", flush=True)
    spawn, rows, start = time.time(), [], None
    log = work / f"{c.key}.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=common.REPO)
        assert proc.stdout is not None
        for line in proc.stdout:
            if not line.startswith(ttq_plain.TAG + " "):
                continue
            e = json.loads(line[len(ttq_plain.TAG) + 1:])
            if e["event"] == "start":
                start = e["time"] - spawn
            else:
                rows.append(_row(e, e["train_s"], spawn))
                _show(c, rows[-1])
        proc.wait()
    if proc.returncode != 0:
        raise SystemExit(f"{c.key}: the plain loop failed (exit {proc.returncode}); see the end of {log}:\n"
                         + "\n".join(log.read_text().splitlines()[-15:]))
    stopped = _stop(rows, cap_s, stop_at) or "finished"
    return {"history": rows, "startup_s": start, "decode_s": None, "stopped": stopped,
            "wall_s": time.time() - spawn, "command": shlex.join(cmd)}


def run_in_process(c: Contender, cap_s: float, stop_at: float, workers: int) -> dict:
    """--in-process (the tests): the same sides in this process; the engine's run is not stopped early."""
    from cnnlab.engine.run import train

    r = load_recipe(c.recipe, list(c.overrides))
    spawn = time.time()
    if c.kind == "engine":
        rows, start, decode = engine_history(_engine_events(train(r).parent), spawn)
        return {"history": rows, "startup_s": start, "decode_s": decode, "stopped": "finished",
                "wall_s": time.time() - spawn, "command": "in-process: cnnlab.engine.run.train"}
    got: list[dict] = []
    ttq_plain.run(r, cap_s, stop_at, got.append, workers)
    rows = [_row(e, e["train_s"], spawn) for e in got if e["event"] == "epoch"]
    return {"history": rows, "startup_s": next(e["time"] for e in got if e["event"] == "start") - spawn,
            "decode_s": None, "stopped": _stop(rows, cap_s, stop_at) or "finished", "wall_s": time.time() - spawn,
            "command": "in-process: ttq_plain.run"}


def summarize_side(res: dict, thresholds: list[float]) -> dict:
    """Seconds, epochs and wall seconds to each threshold; best Dice; median epoch seconds."""
    h = res["history"]
    pairs = [(r["train_s"], r["val_dice"]) for r in h]
    out = {"epochs_run": len(h), "trained_s": h[-1]["train_s"] if h else 0.0,
           "epoch_s_median": statistics.median(r["epoch_s"] for r in h) if h else None,
           "best_dice": max((r["val_dice"] for r in h if r["val_dice"] is not None), default=None), "to": {}}
    for t in thresholds:
        s = seconds_to(pairs, t)
        hit = next((r for r in h if r["train_s"] == s), None) if s is not None else None
        out["to"][f"{t:g}"] = {"train_s": s, "epoch": hit["epoch"] if hit else None,
                               "wall_s": hit["wall_s"] if hit else None}
    return out


def _cell(s: dict, t: float, ratios: dict, cap_min: float) -> list[str]:
    """'412 (ep 9, wall 530)' and its ratio to the plain loop, or where it was not reached."""
    sm, to = s["summary"], s["summary"]["to"][f"{t:g}"]
    if to["train_s"] is None:
        cap = f", cap {cap_min:g} min" if s["stopped"] == "cap" else ""
        return [f"not reached ({sm['epochs_run']} ep, {sm['trained_s']:.0f} s{cap})", "-"]
    r = ratios.get(f"{t:g}")
    ratio = "-" if r is None else f"{'>=' if r['at_least'] else ''}{r['ratio']:.2f}x"
    return [f"{to['train_s']:.0f} (ep {to['epoch']}, wall {to['wall_s']:.0f})", ratio]


def report(result: dict, thresholds: list[float], cap_min: float) -> None:
    headers = ["contender", "s/epoch"]
    for t in thresholds:
        headers += [f"train s to {t:g}", "x (ii)"]
    headers += ["best Dice (ep)", "start-up s", "ended"]
    rows = []
    for key, s in result["contenders"].items():
        sm, h = s["summary"], s["history"]
        best = max(h, key=lambda r: r["val_dice"] if r["val_dice"] is not None else -1.0) if h else None
        row = [s["label"], f"{sm['epoch_s_median']:.1f}" if sm["epoch_s_median"] else "-"]
        for t in thresholds:
            row += _cell(s, t, result["ratios_vs_plain"].get(key, {}), cap_min)
        row += [f"{best['val_dice']:.4f} ({best['epoch']})" if best and best["val_dice"] is not None else "-",
                f"{s['startup_s']:.1f}" if s["startup_s"] is not None else "-", s["stopped"]]
        rows.append(row)
    common.print_table(headers, rows, f"time to validation strict Dice, {result['size'][0]}x{result['size'][1]}"
                       f"{' (SMOKE: 2 epochs x 2 steps)' if result['smoke'] else ''}")
    print("train s: the epochs' training loops summed (validation, checkpoints, imports, decoding excluded); wall: "
          "process start to the end of that epoch, all included; start-up s: process start to the first training "
          "step; x (ii): the plain loop's train s / this one's (>=: the plain loop never got there; its whole "
          "training time is used). Contenders ran one after the other; 1-min load average at the end "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs.")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="EndoVis course root (default ../shared/data/endovis2017_hw, else synthetic)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="default 128 160 (smoke: 64 80)")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.80, 0.85])
    p.add_argument("--max-minutes", type=float, default=20.0, help="training minutes per contender at most")
    p.add_argument("--only", nargs="+", choices=["cnnlab", "plain", "course_unet"])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for (i) alone, to A/B a change against the plain loop (repeatable)")
    p.add_argument("--workers", type=int, default=0, help="the plain loop's DataLoader workers")
    p.add_argument("--smoke", action="store_true", help=f"{SMOKE_EPOCHS} epochs x {SMOKE_STEPS} steps at 64x80")
    p.add_argument("--in-process", action="store_true", help="all sides in this process (tests; no early stop)")
    p.add_argument("--keep", action="store_true", help="keep the runs and logs (their folder is printed)")
    args = common.parse_common(p, argv)
    args.size = list(args.size or (SMOKE_SIZE if args.smoke else (128, 160)))
    args.json = args.json or str(common.REPO / "runs" / "bench" /
                                 f"time_to_quality{'_smoke' if args.smoke else ''}.json")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    root, origin = common.endovis_root(args.data)
    thresholds, cap_s = sorted(args.thresholds), 60.0 * args.max_minutes
    work = Path(tempfile.mkdtemp(prefix="cnnlab-ttq-"))
    print(f"data: {root} ({origin}); {args.size[0]}x{args.size[1]}; thresholds {thresholds}; at most "
          f"{args.max_minutes:g} training minutes per contender; threads {args.threads or 'as cnnlab chooses'}; "
          f"work folder {work}", flush=True)
    runner: Callable[[Contender], dict] = (
        (lambda c: run_in_process(c, cap_s, thresholds[-1], args.workers)) if args.in_process else
        (lambda c: run_engine(c, cap_s, thresholds[-1], work) if c.kind == "engine"
         else run_plain(c, cap_s, thresholds[-1], work, args.workers)))
    result = {"size": args.size, "thresholds": thresholds, "max_minutes": args.max_minutes, "smoke": args.smoke,
              "threads": args.threads, "data": str(root), "data_origin": origin, "contenders": {},
              "ratios_vs_plain": {}}
    try:
        for c in contenders(args, root, work):
            res = runner(c)
            result["contenders"][c.key] = {"label": c.label, "kind": c.kind, "recipe": str(c.recipe),
                                           "overrides": list(c.overrides), **res,
                                           "summary": summarize_side(res, thresholds)}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    plain = result["contenders"].get("plain")
    for key, s in result["contenders"].items() if plain else []:
        result["ratios_vs_plain"][key] = {
            f"{t:g}": ratio_to_plain(plain["summary"]["to"][f"{t:g}"]["train_s"], s["summary"]["to"][f"{t:g}"]
                                     ["train_s"], plain["summary"]["trained_s"]) for t in thresholds}
    report(result, thresholds, args.max_minutes)
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
