"""Start-up: decoding a data set sequentially vs in decode threads vs from the decoded cache; time to first step.

Three ways to get a run's splits, alternated in one run on the same files (`cnnlab.data.loading.load_run_data`,
what `cnnlab train` calls):
  sequential  one decode thread (CNNLAB_DECODE_THREADS=1), cache off
  parallel    decode threads sized as in training (torch's thread count, at most the usable cores), cache off
  cached      the decoded cache (cnnlab.data.cache) in a temporary folder, filled before the rounds
and the time from `cnnlab train RECIPE` starting (a fresh process: imports included) to its first train step,
with the cache filled vs `--no-cache`. The OS page cache is warm on every side (the files were read before).

Data: the course data at 256x320 (../shared/data/endovis2017_hw, else a synthetic set of the same shape) and,
where present, the folders-format sets DRIVE and ISBI 2012 with the settings of recipes/drive and
recipes/isbi2012.

    .venv/bin/python benchmarks/startup.py
    .venv/bin/python benchmarks/startup.py --rounds 5 --json runs/bench/startup.json
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from cnnlab.config import DataConfig, load_recipe  # noqa: E402
from cnnlab.data.loading import load_run_data  # noqa: E402
from cnnlab.data.parallel import THREADS_ENV, decode_workers  # noqa: E402

FIRST_STEP = "FIRST-STEP-REACHED"


def data_sets(course: Path) -> dict[str, DataConfig]:
    """The data sections timed: the course data, and the folders-format sets where the shared data has them."""
    sets = {"EndoVis course 256x320": DataConfig(format="endovis", root=str(course), size=[256, 320])}
    drive, isbi = common.SHARED_DATA / "drive", common.SHARED_DATA / "isbi2012_em" / "train"
    if drive.is_dir():  # recipes/drive/new.yaml's data section
        sets["DRIVE (folders, FOV) 256x240"] = DataConfig(
            format="folders", root=str(drive), train="training", val_fraction=0.2, test="test", size=[256, 240],
            options={"images": "images", "masks": "1st_manual", "fov": "mask", "split": "folders"})
    if isbi.is_dir():  # recipes/isbi2012/new.yaml's, at the native 512x512
        sets["ISBI 2012 (folders) 512x512"] = DataConfig(
            format="folders", root=str(isbi), train="train", val="val", test="test", size=[512, 512],
            options={"images": "image", "masks": "label", "split": "random", "seed": 0})
    return sets


def timed_load(cfg: DataConfig, threads: int) -> dict:
    """Seconds to load a run's splits with the given decode threads (the cache as cfg says)."""
    os.environ[THREADS_ENV] = str(threads)
    t = time.perf_counter()
    data = load_run_data(cfg, 0)
    seconds = time.perf_counter() - t
    n = len(data.train) + len(data.val) + (len(data.test) if data.test is not None else 0)
    return {"seconds": seconds, "images": n}


def decode_rounds(name: str, cfg: DataConfig, cache_dir: Path, rounds: int) -> dict:
    """The three sides alternated; ratios per round."""
    threads = decode_workers()
    off = dataclasses.replace(cfg, cache=False)
    on = dataclasses.replace(cfg, cache_dir=str(cache_dir / name.split()[0]))
    timed_load(on, threads)  # fills the cache (and warms the OS page cache for every side)
    reps, _ = common.alternate({"sequential": lambda: timed_load(off, 1), "parallel": lambda: timed_load(off, threads),
                                "cached": lambda: timed_load(on, threads)}, rounds)
    secs = {k: [r["seconds"] for r in v] for k, v in reps.items()}
    return {"images": reps["sequential"][0]["images"], "threads": threads,
            **{k: common.summarize(v) for k, v in secs.items()},
            "parallel_speedup": common.paired_ratios(secs["sequential"], secs["parallel"]),
            "cached_speedup": common.paired_ratios(secs["parallel"], secs["cached"])}


def _prefetch_dynamo() -> threading.Thread:
    """Import torch._dynamo in a background thread (the prototype measured by --dynamo).

    The first optimizer constructor imports it (torch._disable_dynamo on Optimizer.add_param_group, zero_grad and
    the functional step); it is seconds of Python on a slow CPU and no torch setting skips it. A thread can only
    overlap it with work that releases the GIL (decoding, reading the cache, tensor ops, loading weights); the
    main thread's own import of it then waits for the thread's to finish (Python's per-module import lock).
    """
    t = threading.Thread(target=importlib.import_module, args=("torch._dynamo",), daemon=True)
    t.start()
    return t


def first_step_child(argv: list[str], mode: str = "preimport") -> None:
    """--first-step: run `cnnlab train ARGV` and stop where the first train step would begin; print the seconds
    from the command's start to there. mode preimport: the imports done before (torch, cnnlab, and torch._dynamo,
    which the first optimizer imports: seconds on a slow CPU, the same with or without the cache); as-is: nothing
    imported before (a user's fresh process); prefetch-torch / prefetch-train: torch._dynamo imported in a
    background thread started right after `import torch` / right before train() (the --dynamo prototypes)."""
    if mode == "preimport":
        import torch._dynamo  # noqa: F401
    elif mode == "prefetch-torch":
        _prefetch_dynamo()

    import cnnlab.engine.run as run
    from cnnlab.cli import main

    if mode == "prefetch-train":
        train = run.train

        def prefetching_train(*a, **kw):
            _prefetch_dynamo()
            return train(*a, **kw)

        run.train = prefetching_train  # the CLI imports the name when it runs

    start = time.perf_counter()

    def stop(*a, **kw):
        print(f"{FIRST_STEP} {time.perf_counter() - start:.4f}", flush=True)
        os._exit(0)

    run._loop = stop  # entered right after setup: data, model, optimizer, normaliser, run dir
    main(["train", *argv])
    raise SystemExit("the run ended without reaching a train step")


def time_to_first_step(argv: list[str], mode: str = "preimport") -> dict:
    """Seconds from starting a fresh `cnnlab train` process to its first train step, and of those the seconds
    after the imports (mode: see first_step_child)."""
    t = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--first-step", mode, *argv], capture_output=True, text=True,
                         timeout=900, env=os.environ.copy())
    wall = time.perf_counter() - t
    lines = [line for line in out.stdout.splitlines() if line.startswith(FIRST_STEP)]
    if not lines:
        raise SystemExit(f"first-step child failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return {"process": wall, "after_imports": float(lines[0].split()[1])}


def first_step_rounds(course: Path, cache_dir: Path, out: Path, rounds: int) -> dict:
    """The course recipe (a) at 256x320: cached start vs --no-cache start, alternated."""
    recipe = common.REPO / "recipes" / "endovis" / "a_baseline.yaml"
    base = [str(recipe), "--set", f"data.root={course}", "--set", "data.size=[256, 320]", "--set", f"out={out}",
            "--set", f"data.cache_dir={cache_dir / 'first-step'}", "--set", "train.progress=false"]
    load_run_data(load_recipe(recipe, base[2::2]).data, 0)  # fills the cache entry the runs read
    os.environ.pop(THREADS_ENV, None)
    reps, _ = common.alternate({"cached": lambda: time_to_first_step(base),
                                "no-cache": lambda: time_to_first_step([*base, "--no-cache"])}, rounds)
    out = {}
    for part in ("process", "after_imports"):
        secs = {k: [r[part] for r in v] for k, v in reps.items()}
        out[part] = {**{k: common.summarize(v) for k, v in secs.items()},
                     "ratio": common.paired_ratios(secs["no-cache"], secs["cached"])}
    return out


def import_times() -> dict[str, float]:
    """Seconds `python -X importtime` gives torch, cnnlab's engine + CLI and then torch._dynamo (cumulative, each
    after the ones before it) in a fresh process."""
    code = "import torch; import cnnlab.engine.run, cnnlab.cli; import torch._dynamo"
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True).stderr
    out = {}
    for line in err.splitlines():  # "import time: self [us] | cumulative | imported package"
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[1].isdigit() and parts[2] in ("torch", "cnnlab.engine.run", "cnnlab.cli",
                                                                   "torch._dynamo"):
            out[parts[2]] = int(parts[1]) / 1e6
    return out


DYNAMO_MODES = ("as-is", "prefetch-torch", "prefetch-train")


def dynamo_rounds(course: Path, cache_dir: Path, out: Path, rounds: int, which: str) -> dict:
    """A user's fresh `cnnlab train` to its first step, cache warm: as it is vs torch._dynamo imported in a
    background thread from right after `import torch` or from train(). which: 'recommended' (Lite0 FCN, 128x160:
    timm -> torchvision -> torch._dynamo while the model is built) or 'a' (course U-Net, 256x320: torch._dynamo
    from the first optimizer constructor)."""
    import json

    from cnnlab.new.rows import PRETRAINED_MODEL, PRETRAINED_PARAMS

    sets = [f"data.root={course}", f"out={out}", f"data.cache_dir={cache_dir / 'dynamo'}", "train.progress=false"]
    if which == "a":
        recipe = common.REPO / "recipes" / "endovis" / "a_baseline.yaml"
        sets.append("data.size=[256, 320]")
    else:
        recipe = common.REPO / "recipes" / "endovis" / "f_imagenet_unet.yaml"
        sets += ["data.size=[128, 160]", f"model.name={PRETRAINED_MODEL}",
                 f"model.params={json.dumps(PRETRAINED_PARAMS)}"]
    if torch.get_num_threads() != os.cpu_count():
        sets.append(f"train.threads={torch.get_num_threads()}")
    load_run_data(load_recipe(recipe, sets).data, 0)  # fills the cache entry the runs read
    argv = [str(recipe), *[a for s in sets for a in ("--set", s)]]
    reps, _ = common.alternate({m: (lambda m=m: time_to_first_step(argv, m)) for m in DYNAMO_MODES}, rounds)
    secs = {k: [r["process"] for r in v] for k, v in reps.items()}
    return {"recipe": which, "imports_s": import_times(), **{k: common.summarize(v) for k, v in secs.items()},
            **{f"saved_{k}": common.summarize([a - b for a, b in zip(secs["as-is"], v)])
               for k, v in secs.items() if k != "as-is"}}


def report_dynamo(d: dict) -> None:
    rows = [[m, common.fmt_stat(d[m], 2), common.fmt_stat(d[f"saved_{m}"], 2) if f"saved_{m}" in d else "-"]
            for m in DYNAMO_MODES]
    common.print_table(["torch._dynamo import", "s to first step, fresh process", "s saved (per round)"], rows,
                       f"start-up of `cnnlab train` (recipe {d['recipe']}, cache warm), median [min-max]")
    print("python -X importtime (cumulative, in this order): " + ", ".join(f"{k} {v:.2f} s"
                                                                         for k, v in d["imports_s"].items()))


def report(decode: dict, first: dict | None) -> None:
    rows = [[name, r["images"], r["threads"], common.fmt_stat(r["sequential"], 2), common.fmt_stat(r["parallel"], 2),
             common.fmt_stat(r["cached"], 2), common.fmt_stat(r["parallel_speedup"], 2) + "x",
             common.fmt_stat(r["cached_speedup"], 1) + "x"] for name, r in decode.items()]
    common.print_table(["data (load_run_data)", "images", "threads", "sequential s", "parallel s", "cached s",
                        "parallel / sequential", "cached / parallel"], rows,
                       "load_run_data, median [min-max] over rounds (ratios per round)")
    if first:
        rows = [[label] + [common.fmt_stat(first[part][key], 2) + unit for part in ("after_imports", "process")]
                for label, key, unit in (("second run: decoded cache", "cached", ""),
                                         ("--no-cache (decode in threads)", "no-cache", ""),
                                         ("ratio", "ratio", "x"))]
        common.print_table(["cnnlab train (course recipe a, 256x320)", "s to first step after imports",
                            "s to first step, fresh process"], rows,
                           "start-up of `cnnlab train`, median [min-max] over rounds")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--first-step"]:
        first_step_child(argv[2:], argv[1])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="EndoVis course root (default: ../shared/data/endovis2017_hw)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-first-step", action="store_true", help="skip the `cnnlab train` start-up rounds")
    p.add_argument("--dynamo", choices=["a", "recommended"],
                   help="only the torch._dynamo import prototype rounds, with this recipe")
    args = common.parse_common(p, argv)
    course, what = common.endovis_root(args.data, n_train=300, n_val=50)
    print(f"course data: {course} ({what}); decode threads {decode_workers()} of {os.cpu_count()} cores; "
          f"torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f}", flush=True)
    if args.dynamo:
        with tempfile.TemporaryDirectory(prefix="cnnlab-startup-") as tmp:
            d = dynamo_rounds(course, Path(tmp), Path(tmp) / "runs", args.rounds, args.dynamo)
        report_dynamo(d)
        common.write_json(args.json, {"dynamo": d})
        return
    with tempfile.TemporaryDirectory(prefix="cnnlab-startup-") as tmp:
        decode = {name: decode_rounds(name, cfg, Path(tmp), args.rounds)
                  for name, cfg in data_sets(course).items()}
        first = None if args.no_first_step else first_step_rounds(course, Path(tmp), Path(tmp) / "runs",
                                                                   args.rounds)
    report(decode, first)
    common.write_json(args.json, {"decode": decode, "first_step": first})


if __name__ == "__main__":
    main()
