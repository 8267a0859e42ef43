"""Course U-Net training speed: cnnlab's engine vs a plain PyTorch 'course solution' loop, alternated in one run.

cnnlab side: recipes/endovis/b_augment.yaml run through cnnlab.engine.fit.train_one_epoch itself (resident uint8
data, make_batch, batched augmentation, channels_last, bf16 autocast where the CPU has it).
Plain side: a Dataset that decodes each JPEG/PNG with PIL, augments on PIL, one-hot encodes the mask per sample;
a DataLoader; fp32 NCHW; the same U-Net (same initial weights), soft Dice loss, Adam and batch size.

    .venv/bin/python benchmarks/train_speed.py                 # short (~3 min on a busy 2-core CPU)
    .venv/bin/python benchmarks/train_speed.py --rounds 8 --steps 4 --json runs/bench/train_speed.json
    .venv/bin/python benchmarks/train_speed.py --progress --size 64 80 --rounds 4 --steps 3 --threads 1

--progress measures what the progress display costs instead: cnnlab's engine without a bar, with a rich bar (as
on a terminal: rendered by its refresh thread into memory) and with plain lines, alternated in one run.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import io
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from cnnlab.config import load_recipe  # noqa: E402
from cnnlab.data.loading import load_run_data  # noqa: E402
from cnnlab.engine.fit import train_one_epoch  # noqa: E402
from cnnlab.engine.progress import Bars  # noqa: E402
from cnnlab.engine.runtime import reuse_freed_memory  # noqa: E402
from cnnlab.losses.core import dice_loss  # noqa: E402
from cnnlab.models import build_model  # noqa: E402
from kernel_floor import floor_side  # noqa: E402

RECIPE = common.REPO / "recipes" / "endovis" / "b_augment.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="EndoVis course-layout root (default: ../shared/data/endovis2017_hw, "
                                  "else synthetic data of the same shape)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="resize on load (default: stored 256x320)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--width", type=int, default=16, help="U-Net base width (course: 16)")
    p.add_argument("--rounds", type=int, default=3, help="alternated timing rounds")
    p.add_argument("--steps", type=int, default=2, help="optimizer steps per side per round")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per side first")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers of the plain side")
    p.add_argument("--precision", default="auto", help="cnnlab side: auto | bf16 | fp32")
    p.add_argument("--fp32-engine", action="store_true",
                   help="add a third side: cnnlab's data path in fp32 NCHW (separates precision from data path)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-memory", action="store_true", help="skip the per-side peak-memory child processes")
    p.add_argument("--no-floor", action="store_true",
                   help="skip the kernel-floor side (same convs, no BatchNorm/ReLU/loss/data: bounds the ratio)")
    p.add_argument("--progress", action="store_true",
                   help="A/B of the progress display instead: cnnlab without a bar, with a rich bar, with plain lines")
    return common.parse_common(p, argv)  # --threads, --json, --probe; prints the machine line


def recipe_for(args: argparse.Namespace, root: Path, precision: str, channels_last: bool):
    """The course recipe (b: flips + colour jitter) at the benchmark's size, batch and device."""
    sets = [f"data.root={root}", "data.test=", f"train.batch_size={args.batch}", f"train.device={args.device}",
            f"train.precision={precision}", f"train.channels_last={str(channels_last).lower()}",
            "train.progress=false", f"model.params.width={args.width}"]
    if args.size:
        sets.append(f"data.size=[{args.size[0]}, {args.size[1]}]")
    return load_recipe(RECIPE, sets)


def build_sides(args: argparse.Namespace, root: Path, only: str | None = None) -> tuple[dict, dict]:
    """name -> run(steps) callables for both sides (or just `only`), plus facts for the report."""
    r = recipe_for(args, root, args.precision, True)
    sides, info = {}, {}
    data = load_run_data(r.data, r.train.seed) if only in (None, "cnnlab", "cnnlab-fp32") else None
    size = tuple(data.train.images.shape[-2:]) if data is not None else tuple(args.size or (256, 320))
    num_classes = len(data.class_names) if data is not None else 8
    torch.manual_seed(0)
    model = build_model(r.model.name, 3, num_classes, size, r.model.params)
    initial = copy.deepcopy(model.state_dict())
    if only is None and not args.no_floor:
        sides["floor"] = floor_side(model, (args.batch, 3, *size), args.device, r.optim.lr).run
    if only in (None, "plain"):
        device = common.pick_device(args.device)
        plain_model = copy.deepcopy(model).to(device)
        mean, std = (0.5,) * 3, (0.25,) * 3
        if data is not None:
            from cnnlab.engine.steps import Normalizer
            n = Normalizer.fit(data.train.images)
            mean, std = n.mean, n.std
        ds = common.CourseSegDataset(root, r.data.train, mean, std, num_classes,
                                     tuple(args.size) if args.size else None, augment=True)
        loader = DataLoader(ds, batch_size=args.batch, shuffle=True, drop_last=True, num_workers=args.workers,
                            persistent_workers=args.workers > 0)
        opt = torch.optim.Adam(plain_model.parameters(), lr=r.optim.lr)
        sides["plain"] = common.PlainSide(plain_model, common.forever(loader), common.course_dice_loss, opt,
                                          device).run
    if only in (None, "cnnlab"):
        eng = common.engine_setup(r, model, data)
        sides["cnnlab"] = eng.run
        info.update(device=str(eng.rt.device), precision=eng.rt.precision, channels_last=eng.rt.channels_last)
    if args.fp32_engine and only in (None, "cnnlab-fp32"):
        m32 = build_model(r.model.name, 3, num_classes, size, r.model.params)
        m32.load_state_dict(initial)
        sides["cnnlab-fp32"] = common.engine_setup(recipe_for(args, root, "fp32", False), m32, data).run
    info.update(size=list(size), num_classes=num_classes, n_train=len(data.train) if data is not None else None)
    return sides, info


@dataclasses.dataclass
class BarSide(common.EngineSide):
    """cnnlab's engine with a progress bar advanced every step, as `cnnlab train` runs it: each repetition is one
    epoch, so its bar is created, started and stopped inside the timing. rich: a terminal bar (force_terminal,
    rendered into memory by rich's refresh thread); plain: the plain-line bar of a log or pipe."""

    style: str = "rich"

    def run(self, steps: int) -> dict:
        reuse_freed_memory(self.rt.device.type == "cpu")
        r = dataclasses.replace(self.recipe, train=dataclasses.replace(self.recipe.train, max_steps_per_epoch=steps))
        rich = self.style == "rich"
        bars = Bars(Console(file=io.StringIO(), force_terminal=rich, width=120), show=True, terminal=rich)
        ctx = self.context(r)
        with common.timed_make_batch(self.rt.device, ctx.task) as spent:
            t0 = time.perf_counter()
            with bars.bar(f"epoch {self.epoch + 1}/30", steps * r.train.batch_size) as bar:
                _, seen, _ = train_one_epoch(ctx, self.model, self.epoch, bar=bar)
            common.sync(self.rt.device)
            secs = time.perf_counter() - t0
        self.epoch += 1
        return {"seconds": secs, "images": seen, "data_seconds": sum(spent)}


def progress_ab(args: argparse.Namespace, root: Path) -> dict:
    """The engine without a bar, with a rich bar and with plain lines: same data, same initial weights."""
    r = recipe_for(args, root, args.precision, True)
    data = load_run_data(r.data, r.train.seed)
    torch.manual_seed(0)
    model = build_model(r.model.name, 3, len(data.class_names), tuple(data.train.images.shape[-2:]), r.model.params)
    sides = {"cnnlab": common.engine_setup(r, copy.deepcopy(model), data).run}
    for style in ("rich", "plain"):
        e = common.engine_setup(r, copy.deepcopy(model), data)
        sides[f"cnnlab+{style}"] = BarSide(**{f.name: getattr(e, f.name) for f in dataclasses.fields(e)},
                                           style=style).run
    result = common.compare_sides(sides, args.rounds, args.steps, args.warmup, common.pick_device(args.device), None)
    common.add_ratios(result, "cnnlab")
    size = data.train.images.shape[-2:]
    common.print_comparison(result, "cnnlab", None, f"progress display A/B: U-Net (width {args.width}) train step, "
                            f"{size[0]}x{size[1]}, batch {args.batch}")
    common.write_json(args.json, result)
    return result


def check_same_loss() -> None:
    """Both sides must optimise the same function: the course's one-hot Dice equals cnnlab's Dice loss."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 8, 16, 20, generator=g)
    mask = torch.randint(0, 8, (2, 16, 20), generator=g)
    onehot = torch.nn.functional.one_hot(mask, 8).permute(0, 3, 1, 2).float()
    a, b = common.course_dice_loss(logits, onehot), dice_loss(logits, mask)
    if not torch.allclose(a, b, atol=1e-6):
        raise SystemExit(f"loss mismatch: course {a.item()} vs cnnlab {b.item()}")


def probe(args: argparse.Namespace, root: Path) -> None:
    """Child process: one side alone, warm-up + one step, then its peak memory as a JSON line."""
    sides, _ = build_sides(args, root, only=args.probe)
    base = common.reset_peak_rss()
    sides[args.probe](1)
    sides[args.probe](1)
    common.probe_report(base, common.pick_device(args.device))


def unet_flops(args: argparse.Namespace, size: tuple[int, int], num_classes: int, width: int) -> float:
    """FLOPs per image of one train step (batch of 2, fp32, counted by FlopCounterMode)."""
    m = build_model("unet", 3, num_classes, size, {"width": width, "depth": 4})
    x = torch.randn(2, 3, *size)
    y = torch.randint(0, num_classes, (2, *size))
    return common.train_step_flops(m, x, y, dice_loss) / 2


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    root, origin = common.endovis_root(args.data)
    if args.probe:
        probe(args, root)
        return {}
    if args.progress:
        return progress_ab(args, root)
    check_same_loss()
    print(f"data: {root} ({origin})", flush=True)
    sides, info = build_sides(args, root)
    flops = unet_flops(args, tuple(info["size"]), info["num_classes"], args.width)
    device = common.pick_device(args.device)
    result = common.compare_sides(sides, args.rounds, args.steps, args.warmup, device, flops)
    common.add_ratios(result, "plain")
    memory = {}
    if not args.no_memory:
        memory = common.memory_probes(Path(__file__), argv if argv is not None else sys.argv[1:],
                                      [n for n in sides if n != "floor"], ["--data", str(root)])
    result.update(info=info, data=str(root), data_origin=origin, memory=memory, workers=args.workers)
    title = (f"U-Net (width {args.width}) train step, {info['size'][0]}x{info['size'][1]}, batch {args.batch}, "
             f"cnnlab: {info['precision']}, channels_last={info['channels_last']}; plain: fp32 NCHW, "
             f"DataLoader workers={args.workers}")
    common.print_comparison(result, "plain", memory, title)
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
