"""Time to quality on the course data: epochs and training seconds to reach a validation strict Dice, per side.

Sides, trained epoch by epoch in alternation (same initial weights, soft Dice loss, Adam, batch size and the
augmentation of recipe endovis/b_augment): the plain PyTorch course loop (PIL per sample, fp32 NCHW), cnnlab's
engine at its default precision (bf16 on a CPU with AVX-512 BF16) and cnnlab's engine in fp32. After every epoch
each side is validated with the same strict Dice (argmax, global counts, mean over classes present;
cnnlab.metrics.confusion.ConfusionMatrix); validation time is not counted as training time. The bf16-vs-fp32 rows answer
"does bf16 cost quality?" (one seed: differences of a few points are within seed noise; use --seeds).

    .venv/bin/python benchmarks/time_to_quality.py                       # 64x80, 6 epochs (a few minutes)
    .venv/bin/python benchmarks/time_to_quality.py --size 256 320 --epochs 30 --target 0.5 --json runs/bench/ttq.json
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from cnnlab.data.loading import load_run_data  # noqa: E402
from cnnlab.engine.steps import evaluate  # noqa: E402
from cnnlab.metrics.confusion import ConfusionMatrix  # noqa: E402
from cnnlab.models import build_model  # noqa: E402
from train_speed import recipe_for  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=[64, 80],
                   help="training size (default 64x80 for a short run; the course size is 256 320)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--target", type=float, default=0.3, help="validation strict mean Dice to reach")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--seeds", type=int, default=1, help="repeat with this many initialisations")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto")
    return common.parse_common(p, argv)


class PlainTrainer:
    """The course loop, one epoch at a time, with its own validation over PIL-decoded images."""

    def __init__(self, model, root: Path, args, norm, class_names: list[str], lr: float) -> None:
        size = tuple(args.size) if args.size else None
        n = len(class_names)
        self.device = common.pick_device(args.device)
        self.model = model.to(self.device)
        train = common.CourseSegDataset(root, "train", norm.mean, norm.std, n, size, augment=True)
        val = common.CourseSegDataset(root, "validation", norm.mean, norm.std, n, size, augment=False)
        self.train_loader = DataLoader(train, batch_size=args.batch, shuffle=True, drop_last=True,
                                       num_workers=args.workers)
        self.val_loader = DataLoader(val, batch_size=16, num_workers=args.workers)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.side = common.PlainSide(self.model, common.forever(self.train_loader), common.course_dice_loss,
                                     self.opt, self.device)
        self.class_names = class_names

    def epoch(self) -> float:
        return self.side.run(len(self.train_loader))["seconds"]

    @torch.no_grad()
    def dice(self) -> float:
        self.model.eval()
        cm = ConfusionMatrix(len(self.class_names))
        for x, onehot in self.val_loader:
            cm.update(self.model(x.to(self.device)).argmax(1).cpu(), onehot.argmax(1))
        return cm.summary(self.class_names)["dice_mean"]


class EngineTrainer:
    """cnnlab's train_one_epoch over the whole split, validated with cnnlab.engine.steps.evaluate."""

    def __init__(self, eng: common.EngineSide, data, eval_batch: int) -> None:
        self.eng, self.data, self.eval_batch = eng, data, eval_batch

    def epoch(self) -> float:
        return self.eng.run(0)["seconds"]  # max_steps_per_epoch=0: the whole split

    def dice(self) -> float:
        metrics, _ = evaluate(self.eng.model, self.data.val, self.eng.rt, self.eng.norm, self.eng.loss_fn,
                              self.eval_batch)
        return metrics["dice_mean"]


def one_seed(args: argparse.Namespace, root: Path, seed: int) -> dict:
    """All sides from one initialisation, trained in alternation; per-epoch cumulative seconds and Dice."""
    r = recipe_for(args, root, "auto", True)
    data = load_run_data(r.data, r.train.seed)
    torch.manual_seed(seed)
    model = build_model(r.model.name, 3, len(data.class_names), tuple(data.train.images.shape[-2:]), r.model.params)
    engines = {"cnnlab": common.engine_setup(r, copy.deepcopy(model), data),
               "cnnlab-fp32": common.engine_setup(recipe_for(args, root, "fp32", False), copy.deepcopy(model), data)}
    trainers = {"plain": PlainTrainer(copy.deepcopy(model), root, args, engines["cnnlab"].norm, data.class_names,
                                      r.optim.lr)}
    trainers.update({n: EngineTrainer(e, data, r.train.eval_batch_size) for n, e in engines.items()})
    history = {n: [] for n in trainers}
    names = list(trainers)
    for epoch in range(args.epochs):
        for name in (names if epoch % 2 == 0 else names[::-1]):
            secs = trainers[name].epoch()
            total = secs + (history[name][-1]["train_s"] if history[name] else 0.0)
            history[name].append({"epoch": epoch + 1, "train_s": total, "epoch_s": secs,
                                  "val_dice": trainers[name].dice()})
        print(f"epoch {epoch + 1}: " + "  ".join(f"{n} dice {h[-1]['val_dice']:.3f} ({h[-1]['epoch_s']:.1f} s)"
                                                 for n, h in history.items()), flush=True)
    return {"history": history, "precision": engines["cnnlab"].rt.precision}


def reached(history: list[dict], target: float) -> dict | None:
    """The first epoch whose validation Dice reaches the target."""
    return next((h for h in history if h["val_dice"] is not None and h["val_dice"] >= target), None)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    root, origin = common.endovis_root(args.data)
    print(f"data: {root} ({origin}), size {args.size}, {args.epochs} epochs, target strict Dice {args.target}",
          flush=True)
    t0 = time.perf_counter()
    runs = [one_seed(args, root, s) for s in range(args.seeds)]
    rows = []
    for name in runs[0]["history"]:
        hits = [reached(run["history"][name], args.target) for run in runs]
        hist = [run["history"][name] for run in runs]
        epochs = sorted(h["epoch"] for h in hits if h)
        secs = sorted(h["train_s"] for h in hits if h)
        # Validation Dice jumps from epoch to epoch: the last epoch alone is noisy, so show the best epoch (what
        # cnnlab keeps as best.pt) and the mean of the last three epochs too.
        rows.append([name, f"{len(epochs)}/{len(runs)}", f"{epochs[len(epochs) // 2]}" if epochs else "-",
                     f"{secs[len(secs) // 2]:.0f}" if secs else "-",
                     " ".join(f"{h[-1]['val_dice']:.3f}" for h in hist),
                     " ".join(f"{max(e['val_dice'] for e in h):.3f}" for h in hist),
                     " ".join(f"{sum(e['val_dice'] for e in h[-3:]) / len(h[-3:]):.3f}" for h in hist),
                     f"{sum(h[-1]['train_s'] for h in hist) / len(hist):.0f}"])
    common.print_table(["side", "reached", "epochs to target", "seconds to target", f"val Dice @{args.epochs}",
                        "best val Dice", "mean last 3", "train s total"], rows,
                       f"time to validation strict Dice {args.target} ({args.size[0]}x{args.size[1]}, batch "
                       f"{args.batch}; cnnlab precision {runs[0]['precision']}; one value per seed)")
    print(f"wall time {time.perf_counter() - t0:.0f} s (validation not counted as training time)")
    result = {"runs": runs, "target": args.target, "size": args.size, "epochs": args.epochs, "data": str(root),
              "data_origin": origin}
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
