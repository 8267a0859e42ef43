"""VGG16 transfer at 64x64 (frozen features, trainable dense head): cnnlab's engine vs a plain ImageFolder loop.

Both sides train the same torchvision VGG16 (cnnlab's vgg16 builder, mode=frozen, head=dense, same initial
weights; random weights since the benchmark runs offline — speed does not depend on their values), with
cross-entropy, Adam and the same batch size. Data: a synthetic 10-class set of 64x64 RGB PNGs in the course's
class-folder layout. Plain side: torchvision.datasets.ImageFolder with ToTensor + Normalize per sample, a
DataLoader, fp32 NCHW. cnnlab side: the folder decoded once to uint8 tensors, cnnlab.engine.fit.train_one_epoch.

    .venv/bin/python benchmarks/vgg_transfer_speed.py
    .venv/bin/python benchmarks/vgg_transfer_speed.py --rounds 8 --steps 5 --json runs/bench/vgg_transfer.json
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PARAMS = {"mode": "frozen", "head": "dense", "weights": None, "normalize": False}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="an image-folder root with Train/<class>/*.png (default: synthetic, written to "
                                  "a temporary folder)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--n-train", type=int, default=320, help="synthetic training images")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-memory", action="store_true")
    return common.parse_common(p, argv)


def vgg(num_classes: int = 10) -> nn.Module:
    from cnnlab.models.classifiers import CLASSIFIERS
    return CLASSIFIERS["vgg16"](3, num_classes, (64, 64), **PARAMS)


def build_sides(args: argparse.Namespace, root: Path, only: str | None = None) -> dict:
    """plain and cnnlab runners over the same initial weights."""
    import torchvision
    import torchvision.transforms as T

    from cnnlab.data.formats import imagefolder

    torch.manual_seed(0)
    model = vgg()
    sides = {}
    if only in (None, "plain"):
        ds = torchvision.datasets.ImageFolder(str(root / "Train"), transform=T.Compose(
            [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]))
        sides["plain"] = common.plain_classifier_side(model, ds, args)
    if only in (None, "cnnlab"):
        split = imagefolder.load(root, "Train", channels=3)
        data = common.cls_run_data(split.images, split.labels, split.class_names)
        r = common.cls_recipe("vgg16", PARAMS, args.batch, "auto", True, args.device)
        sides["cnnlab"] = common.engine_setup(r, model, data).run
    return sides


def main(argv: list[str] | None = None) -> dict:
    from cnnlab.data.synthetic.classification import write_image_folders

    args = parse_args(argv)
    tmp = None
    if args.data:
        root = Path(args.data)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="cnnlab-bench-vgg-"))
        root = write_image_folders(tmp, seed=0, n_train=args.n_train, n_test=10, size=args.size, channels=3)
    try:
        if args.probe:
            sides = build_sides(args, root, only=args.probe)
            base = common.reset_peak_rss()
            sides[args.probe](args.warmup)
            sides[args.probe](args.steps)
            common.probe_report(base, common.pick_device(args.device))
            return {}
        return run(args, argv, root)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, argv: list[str] | None, root: Path) -> dict:
    sides = build_sides(args, root)
    device = common.pick_device(args.device)
    x, y = torch.randn(4, 3, args.size, args.size), torch.randint(0, 10, (4,))
    flops = common.train_step_flops(vgg(), x, y, nn.functional.cross_entropy) / 4
    result = common.compare_sides(sides, args.rounds, args.steps, args.warmup, device, flops)
    common.add_ratios(result, "plain")
    memory = {} if args.no_memory else common.memory_probes(
        Path(__file__), argv if argv is not None else sys.argv[1:], list(sides), ["--data", str(root)])
    result.update(memory=memory, batch=args.batch, size=args.size, params=PARAMS)
    common.print_comparison(result, "plain", memory, f"VGG16 transfer (frozen features, dense head), "
                            f"{args.size}x{args.size}, batch {args.batch}; plain: fp32 NCHW, ImageFolder, "
                            f"workers={args.workers}")
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
