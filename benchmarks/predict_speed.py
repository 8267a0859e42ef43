"""Inference speed: `cnnlab predict` and `cnnlab evaluate` vs plain PyTorch loops, and ONNX Runtime vs PyTorch.

A run is trained for a single step first (the weights' values do not change the speed), then, each part with its
sides alternated in rounds (ratios per round, median [min-max]):
  predict   files in, masks out, on validation images: cnnlab.inference.predict.predict_paths (what `cnnlab
            predict` runs; it writes mask, overlay and class areas per image) vs a course-style loop (Dataset with
            PIL read + resize to the model's size + ToTensor + Normalize per sample, DataLoader, fp32 NCHW model
            under no_grad, argmax, mask resized back with NEAREST, one PNG per image).
  evaluate  strict Dice over the validation split: cnnlab.inference.evaluate.evaluate_run (what `cnnlab evaluate`
            runs) with its decoded cache warm (a second evaluate) and emptied before each round (a first one), vs a
            plain loop (PIL image + mask per sample, resize, fp32 NCHW, argmax, confusion counts by bincount).
  onnx      the model as `cnnlab export --format onnx` writes it, run by ONNX Runtime (CPU provider, as many intra-op
            threads as torch uses) vs PyTorch on the same normalised batches: fp32 NCHW (the exported graph's
            form) and as cnnlab runs it (channels_last, the run's precision). Model calls only, batch 1 and 8.

    .venv/bin/python benchmarks/predict_speed.py                                      # course U-Net, 256x320
    .venv/bin/python benchmarks/predict_speed.py --model recommended --threads 1      # Lite0 FCN, 128x160
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.util
import inspect
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from cnnlab.config import load_recipe  # noqa: E402
from cnnlab.new.rows import PRETRAINED_MODEL, PRETRAINED_PARAMS  # noqa: E402

MODELS = {"unet": ("a_baseline.yaml", [], None),  # the course U-Net at the course's 256x320
          "recommended": ("f_imagenet_unet.yaml", [f"model.name={PRETRAINED_MODEL}",
                                                   f"model.params={json.dumps(PRETRAINED_PARAMS)}"], [128, 160])}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data")
    p.add_argument("--model", choices=list(MODELS), default="unet",
                   help="unet: course recipe (a) at 256x320; recommended: what `cnnlab new` writes, 128x160")
    p.add_argument("--images", type=int, default=16, help="validation images predicted per repetition")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--parts", nargs="+", choices=["predict", "evaluate", "onnx"], default=["predict", "evaluate",
                                                                                            "onnx"])
    p.add_argument("--device", default="auto")
    return common.parse_common(p, argv)


class CourseImages(Dataset):
    """PIL read + resize to the model's size + ToTensor + Normalize per sample (and the mask, for evaluation)."""

    def __init__(self, files: list[Path], mean, std, size: tuple[int, int], lut: np.ndarray | None = None) -> None:
        self.files, self.mean, self.std, self.size, self.lut = files, mean, std, size, lut

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        img = Image.open(self.files[i]).convert("RGB")
        h, w = img.height, img.width
        x = TF.normalize(TF.to_tensor(img.resize(self.size[::-1], Image.BILINEAR)), self.mean, self.std)
        if self.lut is None:
            return x, i, torch.tensor([h, w])
        mask = Image.open(str(self.files[i]).replace("_input.jpg", "_mask.png")).convert("L")
        return x, torch.from_numpy(self.lut[np.asarray(mask.resize(self.size[::-1], Image.NEAREST))])


def quick_run(root: Path, out: Path, device: str, model: str, cache: Path) -> Path:
    """A real run dir (one training step, one epoch) for load_run to read."""
    from cnnlab.engine.run import train
    name, extra, size = MODELS[model]
    r = load_recipe(common.REPO / "recipes" / "endovis" / name,
                    [f"data.root={root}", "data.test=", "train.epochs=1", "train.max_steps_per_epoch=1",
                     f"train.device={device}", "train.progress=false", f"out={out}", f"data.cache_dir={cache}",
                     *extra, *([f"data.size=[{size[0]}, {size[1]}]"] if size else [])])
    return train(r)


def plain_predict(model, files: list[Path], norm, size, batch: int, workers: int, out: Path, device) -> None:
    """The course loop: fp32 NCHW, no_grad, argmax, the mask back at the image's size, one grey-level PNG each."""
    model.eval()
    loader = DataLoader(CourseImages(files, norm.mean, norm.std, size), batch_size=batch, num_workers=workers)
    with torch.no_grad():
        for x, idx, hw in loader:
            pred = model(x.to(device)).argmax(1).cpu().numpy().astype(np.uint8)
            for p, i, (h, w) in zip(pred, idx.tolist(), hw.tolist()):
                mask = Image.fromarray(p * 32)
                mask = mask if mask.size == (w, h) else mask.resize((w, h), Image.NEAREST)
                mask.save(out / f"{files[i].stem}_mask.png")


def plain_evaluate(model, files: list[Path], norm, size, lut, k: int, batch: int, workers: int, device) -> float:
    """The course's evaluation: argmax, confusion counts over the split, Dice of the classes in the ground truth."""
    model.eval()
    counts = torch.zeros(k * k, dtype=torch.long)
    loader = DataLoader(CourseImages(files, norm.mean, norm.std, size, lut), batch_size=batch, num_workers=workers)
    with torch.no_grad():
        for x, y in loader:
            pred = model(x.to(device)).argmax(1).cpu()
            counts += torch.bincount((y * k + pred).flatten(), minlength=k * k)
    cm = counts.view(k, k).double()  # rows: truth, columns: prediction
    tp, truth, predicted = cm.diag(), cm.sum(1), cm.sum(0)
    present = truth > 0
    return float((2 * tp / (truth + predicted))[present].mean())


def timed(fn: Callable[[], object], n: int, device, reuse: bool | None) -> dict:
    """One repetition: seconds and images, with cnnlab's allocator setting (True) or glibc's (False)."""
    from cnnlab.engine.runtime import reuse_freed_memory
    if reuse is not None:
        reuse_freed_memory(reuse and device.type == "cpu")
    t0 = time.perf_counter()
    fn()
    common.sync(device)
    return {"seconds": time.perf_counter() - t0, "images": n}


def compare(sides: dict[str, Callable[[], dict]], rounds: int, base: str) -> dict:
    """Warm each side once, alternate the rounds; images/s and per-round ratios to base."""
    for fn in sides.values():
        fn()
    reps, _ = common.alternate(sides, rounds)
    ips = {n: [r["images"] / r["seconds"] for r in rs] for n, rs in reps.items()}
    return {n: {"images_per_s": common.summarize(v), "ratio_vs_" + base: common.paired_ratios(v, ips[base])}
            for n, v in ips.items()}


def show(part: dict, base: str, title: str) -> None:
    rows = [[n, common.fmt_stat(s["images_per_s"], 2), common.fmt_stat(s["ratio_vs_" + base], 2)]
            for n, s in part.items()]
    common.print_table(["side", "images/s", f"x {base}"], rows, title)


def onnx_batch(run, nchw: torch.nn.Module, sess, x_all: torch.Tensor, bs: int, rounds: int) -> dict:
    """Model calls over x_all in batches of bs: PyTorch fp32 NCHW, PyTorch as cnnlab runs it, ONNX Runtime."""
    from cnnlab.inference.export import INPUT_NAME

    batches = list(x_all.split(bs))
    arrays = [t.numpy() for t in batches]
    cpu, n = torch.device("cpu"), len(x_all)
    with torch.no_grad():
        diff = float((torch.from_numpy(sess.run(None, {INPUT_NAME: arrays[0]})[0]) - nchw(batches[0])).abs().max())

    def torch_calls(model: torch.nn.Module, fmt: torch.memory_format) -> None:
        with torch.no_grad(), run.rt.autocast():
            for t in batches:
                model(t.contiguous(memory_format=fmt))

    cl = torch.channels_last if run.rt.channels_last else torch.contiguous_format
    sides = compare({"torch fp32 NCHW": lambda: timed(lambda: torch_calls(nchw, torch.contiguous_format), n, cpu, True),
                     f"torch as cnnlab ({run.rt.precision}, channels_last={run.rt.channels_last})":
                         lambda: timed(lambda: torch_calls(run.model, cl), n, cpu, True),
                     "onnxruntime": lambda: timed(lambda: [sess.run(None, {INPUT_NAME: a}) for a in arrays], n, cpu,
                                                  True)}, rounds, "torch fp32 NCHW")
    return {"sides": sides, "max_abs_diff": diff}


def onnx_part(run, x_all: torch.Tensor, work: Path, rounds: int) -> dict | None:
    """ONNX Runtime vs PyTorch on the model `cnnlab export --format onnx` writes, batch 1 and 8."""
    if importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxruntime") is None:
        print("\nonnx: skipped: onnx/onnxruntime not installed (pip install 'cnnlab[export]')")
        return None
    import onnxruntime as ort

    from cnnlab.inference.export import export_run
    path = export_run(run.run_dir, "onnx", work / "model.onnx")
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = torch.get_num_threads(), 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    nchw = copy.deepcopy(run.model).cpu().float().to(memory_format=torch.contiguous_format).eval()
    result = {"onnxruntime": ort.__version__, "threads": torch.get_num_threads()}
    for bs in (1, 8):
        result[f"batch_{bs}"] = r = onnx_batch(run, nchw, sess, x_all, bs, rounds)
        show(r["sides"], "torch fp32 NCHW", f"model calls only, batch {bs}, {len(x_all)} images, "
             f"{torch.get_num_threads()} thread(s): ONNX Runtime {ort.__version__} vs PyTorch (max |onnx - torch| "
             f"{r['max_abs_diff']:.2g})")
    return result


@dataclasses.dataclass
class Bench:
    """What every part shares: the trained run, the plain copy of its model, the files and a fresh-folder maker."""

    args: argparse.Namespace
    root: Path
    run: object                      # cnnlab.inference.predict.TrainedRun
    plain_model: torch.nn.Module     # the same weights, fp32 NCHW
    device: torch.device
    work: Path
    files: list[Path]                # predicted images (the first --images of validation)
    val: list[Path]                  # the whole validation split (evaluate)
    made: int = 0

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.run.input_size)

    def fresh(self) -> Path:
        """A new, empty output folder (predict and evaluate never overwrite)."""
        self.made += 1
        d = self.work / f"out{self.made}"
        d.mkdir()
        return d


def predict_part(b: Bench) -> dict:
    from cnnlab.inference.predict import predict_paths

    a, n = b.args, len(b.files)
    sides = compare(
        {"plain": lambda: timed(lambda: plain_predict(b.plain_model, b.files, b.run.norm, b.size, a.batch, a.workers,
                                                      b.fresh(), b.device), n, b.device, False),
         "cnnlab": lambda: timed(lambda: predict_paths(b.run, b.files, b.fresh(), batch_size=a.batch, progress=False),
                                 n, b.device, True),
         "cnnlab --no-overlays": lambda: timed(lambda: predict_paths(b.run, b.files, b.fresh(), batch_size=a.batch,
                                                                     progress=False, overlays=False),
                                               n, b.device, True)}, a.rounds, "plain")
    show(sides, "plain", f"predict: {n} validation images, batch {a.batch}, {a.model} at {b.size[0]}x{b.size[1]}; "
         f"cnnlab {b.run.rt.precision} channels_last={b.run.rt.channels_last} (writes mask + overlay + areas; "
         "--no-overlays: mask + areas); plain fp32 NCHW (writes mask)")
    return sides


def evaluate_part(b: Bench) -> dict:
    from cnnlab.data.formats.endovis import read_mapping
    from cnnlab.data.loading import load_run_data
    from cnnlab.inference.evaluate import evaluate_run

    a, n, dice = b.args, len(b.val), {}
    mapping, _ = read_mapping(b.root)
    lut = np.zeros(256, np.int64)
    for i, level in enumerate(mapping.values()):
        lut[level] = i
    cache = Path(b.run.recipe.data.cache_dir)
    # no progress lines in the timings where evaluate_run has them (added alongside this benchmark)
    quiet = {"progress": False} if "progress" in inspect.signature(evaluate_run).parameters else {}

    def plain() -> None:
        dice["plain"] = plain_evaluate(b.plain_model, b.val, b.run.norm, b.size, lut, len(b.run.class_names),
                                       a.batch, a.workers, b.device)

    def cnnlab(empty_cache: bool) -> dict:
        def go() -> None:
            if empty_cache:
                shutil.rmtree(cache, ignore_errors=True)
            got, _ = evaluate_run(b.run.run_dir, split="validation", out=b.fresh(), device=a.device, **quiet)
            dice["cnnlab"] = got["metrics"]["dice_mean"]
        return timed(go, n, b.device, True)

    sides = compare({"plain": lambda: timed(plain, n, b.device, False),
                     "cnnlab (cache warm)": lambda: cnnlab(False),
                     "cnnlab (first: decode + cache)": lambda: cnnlab(True)}, a.rounds, "plain")
    load_run_data(b.run.recipe.data, b.run.recipe.train.seed)  # the cache as training left it
    show(sides, "plain", f"evaluate: the {n} validation images (read + model + strict Dice); strict Dice plain "
         f"{dice['plain']:.4f}, cnnlab {dice['cnnlab']:.4f} (plain resizes with PIL, cnnlab with torch)")
    return {"sides": sides, "dice": dice}


def main(argv: list[str] | None = None) -> dict:
    from cnnlab.inference.predict import load_run

    args = parse_args(argv)
    root, origin = common.endovis_root(args.data)
    work = Path(tempfile.mkdtemp(prefix="cnnlab-bench-predict-"))
    try:
        print(f"data: {root} ({origin}); model {args.model}; training a one-step run for its run dir", flush=True)
        threads = torch.get_num_threads()
        run = load_run(quick_run(root, work / "runs", args.device, args.model, work / "cache"), device=args.device)
        torch.set_num_threads(threads)  # training chose its own (fewer on a busy machine); every side uses these
        device = common.pick_device(args.device)
        val = sorted((root / "segmentation" / "validation").glob("*/*_input.jpg"))
        b = Bench(args, root, run, copy.deepcopy(run.model).to(device, memory_format=torch.contiguous_format).float(),
                  device, work, val[: args.images], val)
        print(f"torch threads: {threads} (ONNX Runtime: as many intra-op threads)", flush=True)
        result = {"model": args.model, "threads": threads, "input_size": list(b.size), "precision": run.rt.precision,
                  "channels_last": run.rt.channels_last, "images": len(b.files), "rounds": args.rounds}
        if "predict" in args.parts:
            result["sides"] = predict_part(b)  # "sides": the key device_check.sh reads
        if "evaluate" in args.parts:
            result["evaluate"] = evaluate_part(b)
        if "onnx" in args.parts and device.type == "cpu":
            data = CourseImages(b.files, run.norm.mean, run.norm.std, b.size)
            result["onnx"] = onnx_part(run, torch.stack([data[i][0] for i in range(len(data))]), work, args.rounds)
        common.write_json(args.json, result)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
