"""Shared benchmark pieces: alternated timing, matmul peaks, FLOP counts, memory probes, cnnlab's engine side.

Fairness rules every script follows: the same model (same initial weights), loss, optimizer and batch size on
both sides; warm-up steps excluded; sides alternated in one run (A B, B A, A B ...) so a noisy, shared CPU slows
both alike; medians reported with the spread over repetitions, and ratios taken per round (adjacent in time).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# The plain 'course solution' side lives in course_baseline.py (kept apart to keep files short); re-exported so
# scripts write common.PlainSide, and sync() has one definition for both sides.
from course_baseline import CourseSegDataset, PlainSide, course_dice_loss, forever, sync  # noqa: E402,F401

# What the numbers ran on (CPU flags, cnnlab's precision and layout there) and the native matmul peaks.
from machine import announce, environment, machine, matmul_gflops, peak_sample  # noqa: E402,F401

# ---------------------------------------------------------------- timing and statistics


def summarize(values: list[float]) -> dict:
    """Median with min/max and relative spread ((max - min) / median) over repetitions."""
    med = statistics.median(values)
    return {"median": med, "min": min(values), "max": max(values), "n": len(values),
            "spread": (max(values) - min(values)) / med if med else float("nan")}


def fmt_stat(s: dict, digits: int = 1) -> str:
    """'12.3 [11.9-13.0]': median and range over repetitions."""
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"


def alternate(sides: dict[str, Callable[[], dict]], rounds: int,
              between: Callable[[], dict] | None = None) -> tuple[dict[str, list[dict]], list[dict]]:
    """Run each side once per round, reversing the order every other round (A B, B A, ...).

    Each side callable returns a dict of measurements for one repetition; `between` (e.g. a matmul-peak
    sample) runs once per round so that per-round contention can be normalised away.
    """
    out: dict[str, list[dict]] = {name: [] for name in sides}
    extra: list[dict] = []
    names = list(sides)
    for i in range(rounds):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            out[name].append(sides[name]())
        if between is not None:
            extra.append(between())
    return out, extra


def paired_ratios(a: list[float], b: list[float]) -> dict:
    """Per-round ratios a_i / b_i (adjacent in time), summarised."""
    return summarize([x / y for x, y in zip(a, b)])


def print_table(headers: list[str], rows: list[list], title: str | None = None) -> None:
    """A plain fixed-width table on stdout."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    if title:
        print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def write_json(path: str | None, payload: dict) -> None:
    """--json PATH: the script's numbers, with the environment they came from."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({**payload, "machine": machine(), "env": environment()}, indent=2,
                                         default=str))
        print(f"\nwrote {path}")


def pick_device(name: str) -> torch.device:
    """'auto' = CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ---------------------------------------------------------------- peaks and FLOPs

def train_step_flops(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                     loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> int:
    """FLOPs of forward + backward on this batch, counted by torch.utils.flop_counter (optimizer not counted)."""
    import copy
    m = copy.deepcopy(model)  # keep the benchmarked model's BatchNorm statistics and grads untouched
    m.train()
    with FlopCounterMode(display=False) as counter:
        loss_fn(m(x), y).backward()
    return int(counter.get_total_flops())


# ---------------------------------------------------------------- memory

def rss_mb() -> float:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def peak_rss_mb() -> float:
    """High-water resident set size of this process image (VmHWM).

    Not ru_maxrss: Linux carries that across fork + exec, so a child would report its parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> float:
    """Restart VmHWM from the current RSS (Linux >= 4.0: clear_refs '5'), so the peak is that of what follows.

    Without it a probe's peak could be a transient of the imports rather than of training. Returns the RSS now.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # peak then also covers set-up; the baseline column still shows where training started
    return rss_mb()


def probe_report(baseline_mb: float, device: torch.device) -> None:
    """Last stdout line of a memory-probe child: its peak memory, as JSON."""
    rep = {"peak_rss_mb": peak_rss_mb(), "baseline_rss_mb": baseline_mb}
    if device.type == "cuda":
        rep["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    print(json.dumps(rep))


def probe_memory(script: Path, argv: list[str], side: str) -> dict:
    """Run `script --probe SIDE argv...` in a fresh process: a side's peak memory, unpolluted by the other side."""
    cmd = [sys.executable, str(script), "--probe", side, *argv]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        return {"error": (res.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def mem_cell(m: dict) -> str:
    """'812 MB (+420)': peak RSS and its rise above the probe's state before training (CUDA: allocator peak)."""
    if "error" in m:
        return "n/a"
    if "cuda_peak_mb" in m:
        return f"{m['cuda_peak_mb']:.0f} MB cuda"
    return f"{m['peak_rss_mb']:.0f} MB (+{m['peak_rss_mb'] - m['baseline_rss_mb']:.0f})"


# ---------------------------------------------------------------- cnnlab side

@contextlib.contextmanager
def timed_make_batch(device: torch.device, task) -> Iterator[list[float]]:
    """Time every make_batch call of the run's task (a cnnlab.tasks.Task) inside cnnlab.engine.fit.train_one_epoch
    (data loading + augmentation)."""
    spent: list[float] = []
    original = task.make_batch

    def wrapper(*args, **kwargs):
        sync(device)
        t0 = time.perf_counter()
        out = original(*args, **kwargs)
        sync(device)
        spent.append(time.perf_counter() - t0)
        return out

    task.make_batch = wrapper  # on this object only (the registry's one instance), removed again below
    try:
        yield spent
    finally:
        del task.make_batch


@dataclasses.dataclass
class EngineSide:
    """cnnlab's own training path: cnnlab.engine.fit.train_one_epoch, capped at `steps` steps per call."""

    model: torch.nn.Module
    data: object            # cnnlab.data.loading.RunData
    recipe: object          # cnnlab.config.Recipe
    rt: object              # cnnlab.engine.runtime.Runtime
    norm: object            # cnnlab.engine.steps.Normalizer
    loss_fn: Callable
    opt: torch.optim.Optimizer
    epoch: int = 0

    def context(self, r) -> object:
        """The RunContext train_one_epoch takes: this side's parts with recipe r (no fp16 scaler, no run dir)."""
        from cnnlab.engine.context import RunContext
        from cnnlab.tasks import task_for

        return RunContext(r, task_for(r.task), self.rt, self.data, self.model, self.loss_fn, self.opt, None,
                          self.norm)

    def run(self, steps: int) -> dict:
        """One repetition: `steps` optimizer steps; returns seconds, images and seconds spent in make_batch."""
        from cnnlab.engine.fit import train_one_epoch
        from cnnlab.engine.runtime import reuse_freed_memory

        reuse_freed_memory(self.rt.device.type == "cpu")  # as resolve_runtime set it (plain sides reset it)
        r = dataclasses.replace(self.recipe, train=dataclasses.replace(self.recipe.train, max_steps_per_epoch=steps))
        ctx = self.context(r)
        with timed_make_batch(self.rt.device, ctx.task) as spent:
            t0 = time.perf_counter()
            _, seen, _ = train_one_epoch(ctx, self.model, self.epoch)
            sync(self.rt.device)
            secs = time.perf_counter() - t0
        self.epoch += 1
        return {"seconds": secs, "images": seen, "data_seconds": sum(spent)}


def engine_setup(recipe, model: torch.nn.Module, data) -> EngineSide:
    """Runtime, normaliser, loss and optimizer exactly as cnnlab.engine.run builds them for a recipe."""
    from cnnlab.engine.fit import build_optimizer
    from cnnlab.engine.runtime import resolve_runtime
    from cnnlab.engine.steps import Normalizer
    from cnnlab.losses.core import build_loss

    t = recipe.train
    rt = resolve_runtime(t.device, t.precision, t.channels_last)
    model = model.to(rt.device, memory_format=torch.channels_last if rt.channels_last else torch.preserve_format)
    ignore = getattr(data.train, "ignore_index", None)
    loss_fn = build_loss(recipe.loss.name, dict(recipe.loss.params), ignore)
    if t.compile:
        model = torch.compile(model)
    return EngineSide(model, data, recipe, rt, Normalizer.fit(data.train.images), loss_fn,
                      build_optimizer(model, recipe))


def side_summary(reps: list[dict]) -> dict:
    """images/s and data share per repetition, summarised."""
    ips = [r["images"] / r["seconds"] for r in reps]
    share = [r["data_seconds"] / r["seconds"] for r in reps]
    return {"images_per_s": summarize(ips), "data_share": summarize(share), "ips_list": ips}


def endovis_root(arg: str | None, n_train: int = 64, n_val: int = 16) -> tuple[Path, str]:
    """The course data (../shared/data/endovis2017_hw) or, where absent, synthetic data of the same shape."""
    if arg:
        return Path(arg), "given"
    real = SHARED_DATA / "endovis2017_hw"
    if (real / "segmentation" / "train").is_dir():
        return real, "course data"
    import atexit
    import shutil
    import tempfile

    from cnnlab.data.synthetic.endovis import write
    tmp = tempfile.mkdtemp(prefix="cnnlab-bench-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # children (memory probes) finish before this runs
    out = Path(tmp) / "endovis_synth"
    write(out, seed=0, n_train=n_train, n_val=n_val, n_test=0, n_color_train=0, n_color_val=0)
    return out, "synthetic (course data absent)"


# ---------------------------------------------------------------- a whole A-vs-B comparison

def compare_sides(sides: dict[str, Callable[[int], dict]], rounds: int, steps: int, warmup: int,
                  device: torch.device, flops_per_image: float | None) -> dict:
    """Warm each side up (untimed), then alternate timed repetitions with a matmul-peak sample per round.

    Peaks are those the device has natively (machine.peak_sample): without native bf16 there is no bf16 peak and
    no "% of bf16 peak"; the step is then reported against the fp32 peak alone.
    """
    for name, run in sides.items():
        if warmup:
            print(f"warm-up: {name} ({warmup} steps)", flush=True)
            run(warmup)
    print(f"timing: {rounds} rounds x {steps} steps per side, alternated", flush=True)
    reps, peaks = alternate({n: (lambda r=r: r(steps)) for n, r in sides.items()}, rounds,
                            between=lambda: peak_sample(device))
    out = {"rounds": rounds, "steps_per_round": steps, "warmup_steps": warmup,
           "peaks": {k: summarize([p[k] for p in peaks]) for k in peaks[0]} if peaks else {},
           "flops_per_image": flops_per_image, "sides": {}}
    for name, rs in reps.items():
        s = side_summary(rs)
        if flops_per_image:
            gf = [flops_per_image * ips / 1e9 for ips in s["ips_list"]]
            s["gflops"] = summarize(gf)
            for kind in ("fp32", "bf16"):
                if peaks and f"{kind}_gflops" in peaks[0]:
                    s[f"frac_{kind}_peak"] = summarize([g / p[f"{kind}_gflops"] for g, p in zip(gf, peaks)])
        out["sides"][name] = s
    return out


def add_ratios(result: dict, baseline: str) -> None:
    """Per-round images/s ratio of every side to the baseline side."""
    base = result["sides"][baseline]["ips_list"]
    result["ratios_vs_" + baseline] = {n: paired_ratios(s["ips_list"], base)
                                       for n, s in result["sides"].items() if n != baseline}


def print_comparison(result: dict, baseline: str, memory: dict[str, dict] | None = None, title: str = "") -> None:
    """The short table every comparison script prints (medians [min-max] over rounds)."""
    p = result["peaks"]
    kinds = [k for k in ("fp32", "bf16") if f"{k}_gflops" in p]
    headers = ["side", "images/s", "x " + baseline, "GFLOP/s", *(f"% {k} peak" for k in kinds), "data+aug share",
               "peak memory"]
    rows = []
    ratios = result.get("ratios_vs_" + baseline, {})
    for name, s in result["sides"].items():
        pct = [f"{100 * s[f'frac_{k}_peak']['median']:.1f}" if f"frac_{k}_peak" in s else "-" for k in kinds]
        rows.append([name, fmt_stat(s["images_per_s"], 2), fmt_stat(ratios[name], 2) if name in ratios else "1",
                     f"{s['gflops']['median']:.1f}" if "gflops" in s else "-", *pct,
                     f"{100 * s['data_share']['median']:.1f}%",
                     mem_cell(memory[name]) if memory and name in memory else "-"])
    print_table(headers, rows, title)
    print("matmul peak (this run, per round): " + ", ".join(f"{k} {fmt_stat(p[f'{k}_gflops'])} GFLOP/s"
                                                            for k in kinds)
          + ("" if "bf16" in kinds else "; bf16 not sampled: not native on this device (no AVX512_BF16/AMX)"))
    if result.get("flops_per_image"):
        print(f"train step: {result['flops_per_image'] / 1e6:.2f} MFLOP per image (forward + backward, "
              "torch.utils.flop_counter)")
    print(f"rounds: {result['rounds']} x {result['steps_per_round']} steps per side after "
          f"{result['warmup_steps']} warm-up steps; 1-min load average at the end {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")


# ---------------------------------------------------------------- classification sides and child probes

def plain_classifier_side(model: torch.nn.Module, dataset, args) -> Callable:
    """The plain loop of a classification benchmark: a copy of model, a DataLoader, cross-entropy, Adam."""
    from torch.utils.data import DataLoader

    device = pick_device(args.device)
    m = copy.deepcopy(model).to(device)
    loader = DataLoader(dataset, batch_size=args.batch, shuffle=True, drop_last=True, num_workers=args.workers,
                        persistent_workers=args.workers > 0)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    return PlainSide(m, forever(loader), torch.nn.CrossEntropyLoss(), opt, device).run


def cls_recipe(model: str, params: dict, batch: int, precision: str, channels_last: bool, device: str,
               lr: float = 1e-3):
    """A classification recipe with cross-entropy and Adam (data comes in memory, not from the recipe)."""
    from cnnlab.config import recipe_from_dict
    return recipe_from_dict({"name": "bench", "task": "classification", "model": {"name": model, "params": params},
                             "loss": {"name": "cross_entropy"}, "optim": {"name": "adam", "lr": lr},
                             "train": {"batch_size": batch, "precision": precision, "channels_last": channels_last,
                                       "device": device, "progress": False}})


def cls_run_data(images: torch.Tensor, labels: torch.Tensor, class_names: list[str]):
    """In-memory RunData for cnnlab's engine: the whole split resident as uint8."""
    from cnnlab.data.loading import RunData
    from cnnlab.data.types import ClsData
    split = ClsData(images, labels.long(), [str(i) for i in range(len(labels))], class_names)
    return RunData(split, split, None)


def strip_args(argv: list[str], names: tuple[str, ...] = ("--json", "--data", "--probe")) -> list[str]:
    """argv without the named options and their values (the parent passes its own to children)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in names:
            skip = True
        elif not any(a.startswith(n + "=") for n in names):
            out.append(a)
    return out


def memory_probes(script: Path, argv: list[str], names: list[str], extra: list[str] | None = None) -> dict:
    """Each side's peak memory, measured alone in a fresh child process."""
    out = {}
    for name in names:
        print(f"memory probe: {name}", flush=True)
        out[name] = probe_memory(script, (extra or []) + strip_args(argv), name)
    return out


def add_threads_arg(p) -> None:
    """--threads: torch's intra-op threads (0 keeps torch's default, one per core)."""
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (default: torch's own, one per core); use 1 on a CPU other jobs share")


def apply_threads(args) -> None:
    """Set torch's thread count and warn when the CPU is oversubscribed (timings then mislead)."""
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if torch.get_num_threads() > 1 and load > cpus:
        print(f"WARNING: load average {load:.1f} on {cpus} CPUs: with {torch.get_num_threads()} threads every op "
              "waits for a descheduled thread (measured: up to 20x slower on small tensors); numbers are not "
              "representative. Rerun on a quiet machine, or with --threads 1 to compare sides fairly.", flush=True)


def parse_common(p, argv=None):
    """Add the flags every benchmark shares (--threads, --json, the hidden --probe), parse, apply the threads."""
    import argparse

    add_threads_arg(p)
    p.add_argument("--json")
    p.add_argument("--probe", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    apply_threads(args)
    announce(args)
    return args
