"""Scaling of cnnlab's U-Net training: images/s and peak memory over input sizes and batch sizes.

Each (size, batch) configuration runs in a fresh child process, so its peak memory (VmHWM; CUDA: the
allocator's peak) is its own: random uint8 images and masks of that size held resident (speed does not depend
on pixel values), the course recipe (b_augment) through cnnlab.engine.fit.train_one_epoch, warm-up steps
excluded, each timed step separate, median reported.

    .venv/bin/python benchmarks/scaling.py                      # a subset (8 configurations)
    .venv/bin/python benchmarks/scaling.py --all --steps 3 --json runs/bench/scaling.json   # 3 sizes x 1..32
    .venv/bin/python benchmarks/scaling.py --configs 256x320:16 512x640:4
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
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
    reps = [eng.run(1) for _ in range(args.steps)]
    ips = [x["images"] / x["seconds"] for x in reps]
    rep = {"images_per_s": statistics.median(ips), "ips_list": ips, "peak_rss_mb": common.peak_rss_mb(),
           "baseline_rss_mb": base, "precision": eng.rt.precision,
           "data_share": statistics.median(x["data_seconds"] / x["seconds"] for x in reps)}
    if eng.rt.device.type == "cuda":
        rep["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    print(json.dumps(rep))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.probe:
        child(args)
        return {}
    configs = ([f"{h}x{w}:{b}" for h, w in SIZES for b in BATCHES] if args.all else args.configs or DEFAULT)
    passed = common.strip_args(argv if argv is not None else sys.argv[1:], ("--json", "--configs", "--probe"))
    passed = [a for a in passed if a != "--all"]
    results, rows = {}, []
    for cfg in configs:
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, str(Path(__file__)), "--probe", cfg, *passed], capture_output=True,
                             text=True, cwd=common.REPO)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        if res.returncode != 0 or not lines:
            err = (res.stderr.strip().splitlines() or ["no output"])[-1]
            results[cfg] = {"error": err}
            rows.append([cfg, "failed", "-", "-", err[:60]])
            print(f"{cfg}: failed ({err})", flush=True)
            continue
        rep = json.loads(lines[-1])
        results[cfg] = rep
        h, w, b = parse_config(cfg)
        rows.append([f"{h}x{w}", b, common.fmt_stat(common.summarize(rep["ips_list"]), 2),
                     f"{rep['images_per_s'] * h * w / 1e6:.2f}",
                     common.mem_cell(rep)])
        print(f"{cfg}: {rep['images_per_s']:.2f} images/s, {common.mem_cell(rep)} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    common.print_table(["size", "batch", "images/s", "Mpixel/s", "peak memory (rise)"], rows,
                       f"cnnlab U-Net (width {args.width}) training, {args.steps} timed steps per configuration, "
                       "each in its own process")
    result = {"configs": results, "steps": args.steps, "warmup": args.warmup, "width": args.width}
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
