"""MNIST-course CNN training speed: cnnlab's engine vs a plain torchvision-style loop (per-step overhead dominates).

cnnlab side: the whole split resident as uint8, cnnlab.engine.fit.train_one_epoch (make_batch, channels_last,
bf16 autocast where the CPU has it); a second cnnlab side in fp32 NCHW shows what the precision choice costs on
a net this small. Plain side: a Dataset that makes a PIL image per sample and applies ToTensor + Normalize (what
torchvision.datasets.MNIST does), a DataLoader, fp32 NCHW. Same net (same initial weights), cross-entropy, Adam,
batch size.

    .venv/bin/python benchmarks/mnist_speed.py
    .venv/bin/python benchmarks/mnist_speed.py --rounds 10 --steps 100 --json runs/bench/mnist_speed.json
"""
from __future__ import annotations

import argparse
import copy
import gzip
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from kernel_floor import floor_side  # noqa: E402

MEAN, STD = (0.1307,), (0.3081,)


def course_cnn(in_channels: int = 1, num_classes: int = 10, size: tuple[int, int] = (28, 28)) -> nn.Module:
    """cnnlab's registered course_cnn, or the same 8/16/32-conv net defined here where that module is absent."""
    try:
        from cnnlab.models.classifiers import CLASSIFIERS
        return CLASSIFIERS["course_cnn"](in_channels, num_classes, size)
    except (ImportError, KeyError):
        layers: list[nn.Module] = []
        cin = in_channels
        for i, cout in enumerate((8, 16, 32)):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()] + ([nn.MaxPool2d(2)] if i < 2 else [])
            cin = cout
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(32 * (size[0] // 4) * (size[1] // 4), num_classes))


def read_idx(path: Path, offset: int) -> np.ndarray:
    """Raw bytes of a gzipped IDX file after its header."""
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def mnist_arrays(folder: Path | None, n_random: int = 10000) -> tuple[np.ndarray, np.ndarray, str]:
    """The official test split (../shared/data/mnist_test) or random 28x28 digits where it is absent."""
    folder = folder or common.SHARED_DATA / "mnist_test"
    img, lab = folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz"
    if img.is_file() and lab.is_file():
        return read_idx(img, 16).reshape(-1, 28, 28), read_idx(lab, 8).astype(np.int64), f"{folder} (MNIST test)"
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (n_random, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_random),
            "random 28x28 (MNIST absent)")


class CourseMnist(Dataset):
    """Per-sample PIL image + ToTensor + Normalize, as torchvision.datasets.MNIST with the usual transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        import torchvision.transforms as T
        self.images, self.labels = images, labels
        self.transform = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i], mode="L")), int(self.labels[i])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="folder with t10k-*-idx*-ubyte.gz (default: ../shared/data/mnist_test)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=40, help="optimizer steps per side per round")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers of the plain side")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--no-floor", action="store_true", help="skip the kernel-floor side (no ReLU/loss/data)")
    return common.parse_common(p, argv)


def build_sides(args: argparse.Namespace, only: str | None = None) -> tuple[dict, str]:
    """plain, cnnlab (default precision) and cnnlab-fp32 runners over the same initial weights."""
    images, labels, origin = mnist_arrays(Path(args.data) if args.data else None)
    torch.manual_seed(0)
    model = course_cnn()
    sides = {}
    if only in (None, "plain"):
        sides["plain"] = common.plain_classifier_side(model, CourseMnist(images, labels), args)
    data = common.cls_run_data(torch.from_numpy(images.copy())[:, None], torch.from_numpy(labels),
                               [str(i) for i in range(10)])
    for name, precision, cl in (("cnnlab", "auto", True), ("cnnlab-fp32", "fp32", False)):
        if only in (None, name):
            r = common.cls_recipe("course_cnn", {}, args.batch, precision, cl, args.device)
            eng = common.engine_setup(r, copy.deepcopy(model), data)
            sides[name] = eng.run
            if name == "cnnlab":
                origin += f"; cnnlab default precision here: {eng.rt.precision}"
    if only is None and not args.no_floor:
        sides["floor"] = floor_side(model, (args.batch, 1, 28, 28), args.device).run
    return sides, origin


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.probe:
        sides, _ = build_sides(args, only=args.probe)
        base = common.reset_peak_rss()
        sides[args.probe](args.warmup)
        sides[args.probe](args.steps)
        common.probe_report(base, common.pick_device(args.device))
        return {}
    sides, origin = build_sides(args)
    print(f"data: {origin}", flush=True)
    device = common.pick_device(args.device)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    flops = common.train_step_flops(course_cnn(), x, y, nn.functional.cross_entropy) / 8
    result = common.compare_sides(sides, args.rounds, args.steps, args.warmup, device, flops)
    common.add_ratios(result, "plain")
    memory = {} if args.no_memory else common.memory_probes(Path(__file__), argv if argv is not None
                                                            else sys.argv[1:], [n for n in sides if n != "floor"])
    result.update(data=origin, memory=memory, batch=args.batch, workers=args.workers)
    common.print_comparison(result, "plain", memory, f"MNIST-course CNN (8/16/32 convs), 28x28, batch {args.batch}, "
                                                     f"plain: fp32 NCHW, DataLoader workers={args.workers}")
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
