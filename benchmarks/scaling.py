"""Scaling of cnnlab's U-Net training: images/s and peak memory over input sizes and batch sizes.

Each (size, batch) configuration runs in a fresh child process, so its peak memory (VmHWM; CUDA: the
allocator's peak) is its own: random uint8 images and masks of that size held resident (speed does not depend
on pixel values), the course recipe (b_augment) through cnnlab.engine.fit.train_one_epoch, warm-up steps
excluded, each timed step separate, median reported.

    .venv/bin/python benchmarks/scaling.py                      # a subset (8 configurations)
    .venv/bin/python benchmarks/scaling.py --all --steps 3 --json runs/bench/scaling.json   # 3 sizes x 1..32
    .venv/bin/python benchmarks/scaling.py --configs 256x320:16 512x640:4
    .venv/bin/python benchmarks/scaling.py --glibc-default      # also each configuration with glibc's malloc as is

--glibc-default runs every configuration a second time with CNNLAB_KEEP_FREED_MEMORY=0 (cnnlab leaves glibc's
malloc alone), in alternating order, and adds that side's images/s, peak memory and the ratio: what keeping freed
memory buys a real `cnnlab train` process. It needs separate processes: inside one process the heap's state
(grown by whatever ran before) decides how many pages fault, not the setting of the moment.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

SIZES = [(128, 160), (256, 320), (512, 640)]
BATCHES = [1, 2, 4, 8, 16, 32]
DEFAULT = ["128x160:1", "128x160:8", "128x160:32", "256x320:1", "256x320:4", "256x320:8", "512x640:1", "512x640:2"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=None, help="HxW:BATCH items (default: a subset of the grid)")
    p.add_argument("--all", action="store_true", help="the whole grid: 3 sizes x batch 1, 2, 4, 8, 16, 32")
    p.add_argument("--steps", type=int, default=2, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--precision", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--glibc-default", action="store_true", help="A/B: also run each configuration with "
                                                                 "CNNLAB_KEEP_FREED_MEMORY=0")
    return common.parse_common(p, argv)


def parse_config(text: str) -> tuple[int, int, int]:
    size, batch = text.split(":")
    h, w = size.lower().split("x")
    return int(h), int(w), int(batch)


def child(args: argparse.Namespace) -> None:
    """One configuration alone: time steps, then print images/s and peak memory as a JSON line."""
    from cnnlab.config import load_recipe
    from cnnlab.data.loading import RunData
    from cnnlab.data.types import SegData
    from cnnlab.models import build_model

    h, w, batch = parse_config(args.probe)
    n = max(2 * batch, 16)
    g = torch.Generator().manual_seed(0)
    split = SegData(torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=g),
                    torch.randint(0, 8, (n, h, w), dtype=torch.uint8, generator=g),
                    [str(i) for i in range(n)], [f"c{i}" for i in range(8)])
    r = load_recipe(common.REPO / "recipes" / "endovis" / "b_augment.yaml",
                    [f"train.batch_size={batch}", f"train.precision={args.precision}", f"train.device={args.device}",
                     f"model.params.width={args.width}", "train.progress=false"])
    torch.manual_seed(0)
    eng = common.engine_setup(r, build_model("unet", 3, 8, (h, w), r.model.params), RunData(split, split, None))
    base = common.reset_peak_rss()
    if args.warmup:
        eng.run(args.warmup)
    before = resource.getrusage(resource.RUSAGE_SELF)
    reps = [eng.run(1) for _ in range(args.steps)]
    after = resource.getrusage(resource.RUSAGE_SELF)
    ips = [x["images"] / x["seconds"] for x in reps]
    rep = {"images_per_s": statistics.median(ips), "ips_list": ips, "peak_rss_mb": common.peak_rss_mb(),
           "baseline_rss_mb": base, "precision": eng.rt.precision,
           "data_share": statistics.median(x["data_seconds"] / x["seconds"] for x in reps),
           "page_faults_per_step": (after.ru_minflt - before.ru_minflt) / args.steps,
           "kernel_cpu_s_per_step": (after.ru_stime - before.ru_stime) / args.steps,
           "user_cpu_s_per_step": (after.ru_utime - before.ru_utime) / args.steps}
    if eng.rt.device.type == "cuda":
        rep["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    print(json.dumps(rep))


def run_child(cfg: str, passed: list[str], keep_freed: bool) -> dict:
    """One configuration in a fresh process; its JSON report, or {'error': last stderr line}."""
    env = dict(os.environ, CNNLAB_KEEP_FREED_MEMORY="1" if keep_freed else "0")
    res = subprocess.run([sys.executable, str(Path(__file__)), "--probe", cfg, *passed], capture_output=True,
                         text=True, cwd=common.REPO, env=env)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        return {"error": (res.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.probe:
        child(args)
        return {}
    configs = ([f"{h}x{w}:{b}" for h, w in SIZES for b in BATCHES] if args.all else args.configs or DEFAULT)
    passed = [f"--steps={args.steps}", f"--warmup={args.warmup}", f"--width={args.width}",
              f"--precision={args.precision}", f"--device={args.device}", f"--threads={args.threads}"]
    results, rows = {}, []
    for i, cfg in enumerate(configs):
        order = [True, False] if args.glibc_default else [True]
        reps = {keep: run_child(cfg, passed, keep) for keep in (order if i % 2 == 0 else order[::-1])}
        rep = reps[True]
        key = cfg if cfg not in results else f"{cfg}#{i}"
        results[key] = rep
        if "error" in rep:
            rows.append([cfg, "failed", "-", "-", rep["error"][:60]] + (["-"] * 4 if args.glibc_default else []))
            print(f"{cfg}: failed ({rep['error']})", flush=True)
            continue
        h, w, b = parse_config(cfg)
        row = [f"{h}x{w}", b, common.fmt_stat(common.summarize(rep["ips_list"]), 2),
               f"{rep['images_per_s'] * h * w / 1e6:.2f}", common.mem_cell(rep)]
        line = f"{cfg}: {rep['images_per_s']:.2f} images/s, {common.mem_cell(rep)}"
        if args.glibc_default:
            g = results[key]["glibc_default"] = reps[False]
            row += [g["error"][:40], "-", "-", "-"] if "error" in g else [
                f"{g['images_per_s']:.2f}, {common.mem_cell(g)}", f"{rep['images_per_s'] / g['images_per_s']:.2f}x",
                f"{rep['page_faults_per_step']:.0f} / {g['page_faults_per_step']:.0f}",
                f"{rep['kernel_cpu_s_per_step']:.3f} / {g['kernel_cpu_s_per_step']:.3f}"]
            line += f"; glibc as is {row[-4]}, ratio {row[-3]}, page faults/step {row[-2]}"
        rows.append(row)
        print(line, flush=True)
    headers = ["size", "batch", "images/s", "Mpixel/s", "peak memory (rise)"]
    headers += (["glibc malloc as is: images/s, memory", "keep / as is", "page faults/step (keep / as is)",
                 "kernel CPU s/step"] if args.glibc_default else [])
    common.print_table(headers, rows, f"cnnlab U-Net (width {args.width}) training, {args.steps} timed steps per "
                                      "configuration, each in its own process")
    result = {"configs": results, "steps": args.steps, "warmup": args.warmup, "width": args.width}
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
