"""Inference speed: `cnnlab predict` (cnnlab.inference.predict.predict_paths) vs a plain PyTorch loop.

Files in, masks out.

A run is trained for a single step first (the weights' values do not change the speed), then both sides predict
the same validation images, alternated: cnnlab.inference.predict.predict_paths (batched decode, channels_last,
bf16 where the
CPU has it; it writes mask, overlay and class areas per image) vs a course-style loop (Dataset with PIL decode +
ToTensor + Normalize per sample, DataLoader, fp32 NCHW model under no_grad, argmax, one mask PNG per image).

    .venv/bin/python benchmarks/predict_speed.py
    .venv/bin/python benchmarks/predict_speed.py --images 50 --rounds 5 --json runs/bench/predict.json
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from cnnlab.config import load_recipe  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data")
    p.add_argument("--images", type=int, default=16, help="validation images predicted per repetition")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto")
    return common.parse_common(p, argv)


class CourseImages(Dataset):
    """PIL decode + ToTensor + Normalize per sample."""

    def __init__(self, files: list[Path], mean, std) -> None:
        self.files, self.mean, self.std = files, mean, std

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return TF.normalize(TF.to_tensor(Image.open(self.files[i]).convert("RGB")), self.mean, self.std), i


def quick_run(root: Path, out: Path, device: str) -> Path:
    """A real run dir (one training step, one epoch) for load_run to read."""
    from cnnlab.engine.run import train
    r = load_recipe(common.REPO / "recipes" / "endovis" / "a_baseline.yaml",
                    [f"data.root={root}", "data.test=", "train.epochs=1", "train.max_steps_per_epoch=1",
                     f"train.device={device}", "train.progress=false", f"out={out}"])
    return train(r)


def plain_predict(model, files: list[Path], norm, batch: int, workers: int, out: Path, device) -> None:
    """The course loop: fp32 NCHW, no_grad, argmax, one grey-level mask PNG per image."""
    model.eval()
    loader = DataLoader(CourseImages(files, norm.mean, norm.std), batch_size=batch, num_workers=workers)
    with torch.no_grad():
        for x, idx in loader:
            pred = model(x.to(device)).argmax(1).cpu().numpy().astype(np.uint8)
            for p, i in zip(pred, idx.tolist()):
                Image.fromarray(p * 32).save(out / f"{files[i].stem}_mask.png")


def main(argv: list[str] | None = None) -> dict:
    import copy

    from cnnlab.engine.runtime import reuse_freed_memory
    from cnnlab.inference.predict import load_run, predict_paths

    args = parse_args(argv)
    root, origin = common.endovis_root(args.data)
    work = Path(tempfile.mkdtemp(prefix="cnnlab-bench-predict-"))
    try:
        print(f"data: {root} ({origin}); training a one-step run for its run dir", flush=True)
        run = load_run(quick_run(root, work / "runs", args.device), device=args.device)
        val = root / "segmentation" / "validation"
        files = sorted(val.glob("*/*_input.jpg"))[: args.images]
        device = common.pick_device(args.device)
        plain_model = copy.deepcopy(run.model).to(device, memory_format=torch.contiguous_format).float()
        counter = {"n": 0}

        def fresh() -> Path:
            counter["n"] += 1
            d = work / f"out{counter['n']}"
            d.mkdir()
            return d

        def timed(fn, reuse: bool) -> dict:
            reuse_freed_memory(reuse and device.type == "cpu")  # cnnlab's allocator setting; glibc's for plain
            t0 = time.perf_counter()
            fn()
            common.sync(device)
            return {"seconds": time.perf_counter() - t0, "images": len(files), "data_seconds": 0.0}

        sides = {"plain": lambda: timed(lambda: plain_predict(plain_model, files, run.norm, args.batch, args.workers,
                                                              fresh(), device), False),
                 "cnnlab": lambda: timed(lambda: predict_paths(run, files, fresh(), batch_size=args.batch,
                                                               progress=False), True)}
        for fn in sides.values():
            fn()  # warm-up
        reps, _ = common.alternate(sides, args.rounds)
        rows, result = [], {"sides": {}, "images": len(files), "rounds": args.rounds, "precision": run.rt.precision}
        base = [r["images"] / r["seconds"] for r in reps["plain"]]
        for name, rs in reps.items():
            ips = [r["images"] / r["seconds"] for r in rs]
            ratio = common.paired_ratios(ips, base)
            result["sides"][name] = {"images_per_s": common.summarize(ips), "ratio_vs_plain": ratio}
            rows.append([name, common.fmt_stat(common.summarize(ips), 2), common.fmt_stat(ratio, 2)])
        common.print_table(["side", "images/s (files in, masks out)", "x plain"], rows,
                           f"U-Net inference on {len(files)} validation images, batch {args.batch}; cnnlab "
                           f"{run.rt.precision}, channels_last={run.rt.channels_last} (writes mask + overlay + "
                           f"areas); plain fp32 NCHW (writes mask)")
        common.write_json(args.json, result)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
