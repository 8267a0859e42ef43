"""torch.compile on vs off for cnnlab's U-Net train step: compile time, steady speed, end-to-end for N steps.

Both sides run cnnlab.engine.fit.train_one_epoch on the course recipe (b_augment) with the same initial weights;
the compiled side is wrapped exactly as cnnlab.engine.run.train does (train.compile=true). The first train step
and the first validation pass of each side are timed apart (they carry the compile cost), then steady-state steps
are alternated. End-to-end time for N steps = first-call overheads + N x the median step.

    .venv/bin/python benchmarks/compile_speed.py
    .venv/bin/python benchmarks/compile_speed.py --rounds 6 --steps 4 --mode max-autotune --json runs/bench/compile.json
"""
from __future__ import annotations

import argparse
import atexit
import copy
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# A cold compile is what a user's first run pays; inductor's on-disk cache (/tmp/torchinductor_<user>) would hide
# it after any earlier run, so the default points it at a fresh folder. Set before torch is imported.
if "--warm-cache" not in sys.argv:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="cnnlab-bench-inductor-")
    atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from cnnlab.data.loading import load_run_data  # noqa: E402
from cnnlab.engine.steps import Scorer, evaluate  # noqa: E402
from cnnlab.models import build_model  # noqa: E402
from cnnlab.tasks import task_for  # noqa: E402
from train_speed import recipe_for  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--precision", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--epochs", type=int, default=30, help="for the end-to-end estimate: epochs of a full run")
    p.add_argument("--warm-cache", action="store_true",
                   help="keep inductor's on-disk cache (measures a repeat run; default: a cold compile)")
    p.add_argument("--mode", default=None, help="torch.compile mode (default, reduce-overhead, max-autotune)")
    return common.parse_common(p, argv)  # --threads, --json, --probe; prints the machine line


def first_calls(name: str, eng: common.EngineSide, data, rt_batch: int) -> dict:
    """Time the first train step and the first two validation passes (compile happens in the first calls)."""
    t0 = time.perf_counter()
    eng.run(1)
    first_step = time.perf_counter() - t0
    evals = []
    for _ in range(2):
        t0 = time.perf_counter()
        evaluate(Scorer(task_for(eng.recipe.task), eng.model, eng.rt, eng.norm, rt_batch, eng.loss_fn), data.val)
        common.sync(eng.rt.device)
        evals.append(time.perf_counter() - t0)
    second = eng.run(1)["seconds"]
    print(f"{name}: first step {first_step:.1f} s, second step {second:.1f} s, first validation {evals[0]:.1f} s, "
          f"second validation {evals[1]:.1f} s", flush=True)
    return {"first_step_s": first_step, "second_step_s": second, "first_eval_s": evals[0], "second_eval_s": evals[1]}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    root, origin = common.endovis_root(args.data)
    print(f"data: {root} ({origin})", flush=True)
    r = recipe_for(args, root, args.precision, True)
    data = load_run_data(r.data, r.train.seed)
    torch.manual_seed(0)
    model = build_model(r.model.name, 3, len(data.class_names), tuple(data.train.images.shape[-2:]), r.model.params)
    sides = {"eager": common.engine_setup(r, copy.deepcopy(model), data)}
    compiled = common.engine_setup(r, copy.deepcopy(model), data)
    # What train.compile=true does in cnnlab.engine.run.train (plus an optional mode); the optimizer already
    # holds the same Parameter objects the compiled wrapper trains.
    compiled.model = torch.compile(compiled.model, mode=args.mode)
    sides["compiled"] = compiled
    first = {n: first_calls(n, e, data, r.train.eval_batch_size) for n, e in sides.items()}
    device = common.pick_device(args.device)
    result = common.compare_sides({n: e.run for n, e in sides.items()}, args.rounds, args.steps, 0, device, None)
    common.add_ratios(result, "eager")
    steps_per_epoch = len(data.train) // args.batch
    n_steps = steps_per_epoch * args.epochs
    rows, e2e = [], {}
    for name, s in result["sides"].items():
        step_s = args.batch / s["images_per_s"]["median"]
        f = first[name]
        overhead = (f["first_step_s"] - step_s) + (f["first_eval_s"] - f["second_eval_s"])
        e2e[name] = {"overhead_s": overhead, "step_s": step_s,
                     "end_to_end_s": overhead + n_steps * step_s + args.epochs * f["second_eval_s"]}
        rows.append([name, common.fmt_stat(s["images_per_s"], 2),
                     common.fmt_stat(result["ratios_vs_eager"][name], 2) if name != "eager" else "1",
                     f"{overhead:.1f}", f"{e2e[name]['end_to_end_s'] / 60:.1f} min"])
    gain = e2e["eager"]["step_s"] - e2e["compiled"]["step_s"]
    extra = e2e["compiled"]["overhead_s"] - e2e["eager"]["overhead_s"]
    break_even = extra / gain if gain > 0 else float("inf")
    common.print_table(["side", "images/s", "x eager", "first-call overhead s", f"end-to-end {args.epochs} epochs"],
                       rows, f"U-Net train step, torch.compile(mode={args.mode or 'default'}, "
                             f"{'warm' if args.warm_cache else 'cold'} cache) vs eager, batch "
                             f"{args.batch}, {steps_per_epoch} steps/epoch")
    ratio = result["ratios_vs_eager"]["compiled"]
    wins = e2e["compiled"]["end_to_end_s"] < e2e["eager"]["end_to_end_s"]
    verdict = ("compile wins end to end" if wins else "compile loses end to end") + (
        "" if ratio["min"] > 1 or ratio["max"] < 1
        else " (but the steady-state ratio's range includes 1: no clear gain)")
    print(f"break-even after {break_even:.0f} train steps ({break_even / max(steps_per_epoch, 1):.1f} epochs); "
          f"a full run is {n_steps} steps: {verdict}")
    result.update(cold_cache=not args.warm_cache, first_calls=first, end_to_end=e2e, break_even_steps=break_even,
                  steps_per_epoch=steps_per_epoch,
                  epochs=args.epochs, mode=args.mode, data=str(root), data_origin=origin)
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
