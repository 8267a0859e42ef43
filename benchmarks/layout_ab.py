"""Train-step A/B for a model on this CPU: channels_last vs NCHW (vs torch.compile), alternated in one run.

Why: on an AVX2 CPU without BF16 the step is fp32 and the only levers left are the memory format and compilation;
channels_last was 2.1x NCHW for plain convolutions in isolation, but the recommended model is depthwise-heavy
(EfficientNet-Lite0), so it is measured on the real step: the model as cnnlab builds it, Dice + CE, AdamW, the
allocator and thread settings of a real run (cnnlab.engine.runtime), random inputs of the training size (the data
path is not what is compared). The compiled side's first two steps (the compile) are reported apart.

    .venv/bin/python benchmarks/layout_ab.py                                  # Lite0 FCN, 128x160, batch 8
    .venv/bin/python benchmarks/layout_ab.py --model unet_efficientnet_lite0 --compile --rounds 5
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from cnnlab.engine.runtime import choose_threads, reuse_freed_memory  # noqa: E402
from cnnlab.losses.core import build_loss  # noqa: E402
from cnnlab.models import build_model  # noqa: E402

PARAMS = {"fcn_efficientnet_lite0": {"weights": "imagenet", "imagenet_norm": True, "decoder_width": 32},
          "unet_efficientnet_lite0": {"weights": "imagenet", "imagenet_norm": True,
                                      "decoder_widths": [128, 64, 32, 16]}}


def side(base: torch.nn.Module, channels_last: bool, compiled: bool, x: torch.Tensor, y: torch.Tensor):
    """One side's step function (its own copy of the weights and optimizer) and its first two steps' seconds."""
    model = copy.deepcopy(base).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 2e-3)
    fwd = torch.compile(model) if compiled else model
    loss_fn = build_loss("dice_ce", {}, None)

    def step() -> None:
        loss = loss_fn(fwd(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    step()
    step()
    return step, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="fcn_efficientnet_lite0", choices=sorted(PARAMS))
    p.add_argument("--size", type=int, nargs=2, default=[128, 160], metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="steps per side per round")
    p.add_argument("--threads", type=int, default=0, help="0: as a run chooses (free cores)")
    p.add_argument("--compile", action="store_true", help="add a torch.compile side (minutes to compile)")
    p.add_argument("--json")
    a = p.parse_args(argv)
    a.precision = "fp32"
    common.announce(a)
    reuse_freed_memory(True)
    threads = choose_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(a.batch, 3, *a.size, generator=g)
    y = torch.randint(0, a.classes, (a.batch, *a.size), generator=g)
    base = build_model(a.model, 3, a.classes, tuple(a.size), PARAMS[a.model])
    kinds = {"channels_last": (True, False), "NCHW": (False, False)}
    if a.compile:
        kinds["compiled channels_last"] = (True, True)
    steps, first = {}, {}
    for name, (cl, comp) in kinds.items():
        steps[name], first[name] = side(base, cl, comp, x, y)

    def timed(step):
        def run() -> dict:
            t0 = time.perf_counter()
            for _ in range(a.steps):
                step()
            return {"step_s": (time.perf_counter() - t0) / a.steps}
        return run

    reps, _ = common.alternate({n: timed(s) for n, s in steps.items()}, a.rounds)
    ref = [r["step_s"] for r in reps["channels_last"]]
    rows, result = [], {"model": a.model, "size": a.size, "batch": a.batch, "threads": threads, "sides": {}}
    for name, rs in reps.items():
        s = [r["step_s"] for r in rs]
        ratio = common.paired_ratios(ref, s)  # channels_last seconds / this side's: > 1 means this side is faster
        rows.append([name, f"{1000 * statistics.median(s):.0f} ms", f"{ratio['median']:.2f}x "
                     f"[{ratio['min']:.2f}-{ratio['max']:.2f}]", f"{first[name]:.1f} s"])
        result["sides"][name] = {"step_s": s, "speed_vs_channels_last": ratio, "first_two_steps_s": first[name]}
    common.print_table(["side", "median step", "speed vs channels_last", "first 2 steps"], rows,
                       f"{a.model} train step, {a.size[0]}x{a.size[1]}, batch {a.batch}, fp32, {threads} threads, "
                       f"{a.rounds} alternated rounds of {a.steps} steps")
    common.write_json(a.json, {**result, "machine": common.machine()})


if __name__ == "__main__":
    main()
