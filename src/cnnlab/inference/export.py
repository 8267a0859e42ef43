"""Export a run's best model to ONNX or TorchScript (fp32, eval mode, NCHW, dynamic batch), verified against torch.

Beside the model file goes <model>.preprocess.json: what an application must do to an image before the model
sees it (size, channel order, scaling, mean/std) and how to read the output (class names, mask encoding).
Verification feeds seeded random normalised inputs with batch sizes 1 and 3 through both the exported model
and the PyTorch model and requires max |exported - torch| <= ATOL + RTOL * max |torch| (fp32 on CPU).
"""
from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from cnnlab.engine.flips import flip_names
from cnnlab.errors import CnnlabError, lookup
from cnnlab.inference.predict import TrainedRun, load_run, run_flips
from cnnlab.interrupts import protected
from cnnlab.tasks import task_for

ATOL = 1e-4   # fp32 on CPU: op reordering in the exported graph changes results at the 1e-6 level
RTOL = 1e-4
CHECK_BATCH_SIZES = (1, 3)
INPUT_NAME, OUTPUT_NAME = "image", "logits"


def _tolerance(reference: torch.Tensor) -> float:
    return ATOL + RTOL * float(reference.abs().max())


def _inputs(run: TrainedRun, seed: int = 0) -> list[torch.Tensor]:
    """Seeded random normalised images (standard normal: what normalised pixels look like), one per batch size."""
    g = torch.Generator().manual_seed(seed)
    h, w = run.input_size
    return [torch.randn(n, run.in_channels, h, w, generator=g) for n in CHECK_BATCH_SIZES]


def _compare(run_exported, model: nn.Module, inputs: list[torch.Tensor], backend: str) -> dict:
    """Largest difference to torch over the check inputs; a CnnlabError beyond the tolerance."""
    worst, tol = 0.0, 0.0
    with torch.no_grad():
        for x in inputs:
            ref = model(x)
            got = torch.as_tensor(run_exported(x))
            if got.shape != ref.shape:
                raise CnnlabError(f"{backend} output shape {tuple(got.shape)} differs from torch's {tuple(ref.shape)} "
                                  f"at batch size {x.shape[0]}", "report this model as not exportable")
            diff, t = float((got - ref).abs().max()), _tolerance(ref)
            worst, tol = max(worst, diff), max(tol, t)
            if diff > t:
                raise CnnlabError(f"{backend} output differs from torch by {diff:.3g} (tolerance {t:.3g}) at batch "
                                  f"size {x.shape[0]}", "the exported file is kept for inspection; do not deploy it")
    return {"backend": backend, "batch_sizes": list(CHECK_BATCH_SIZES), "max_abs_diff": worst,
            "tolerance": f"max |exported - torch| <= {ATOL:g} + {RTOL:g} * max |torch| (fp32, CPU)",
            "tolerance_value": tol, "passed": True}


def _export_torchscript(model: nn.Module, example: torch.Tensor, path: Path, inputs: list[torch.Tensor]) -> dict:
    """Trace (works for any module without data-dependent control flow), save, reload, compare."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export, still supported
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, str(path))
        loaded = torch.jit.load(str(path), map_location="cpu").eval()
        return _compare(lambda x: loaded(x), model, inputs, "torchscript")


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path, inputs: list[torch.Tensor]) -> dict:
    """TorchScript-based ONNX exporter (needs only the onnx package), batch axis dynamic; onnxruntime checks it."""
    if importlib.util.find_spec("onnx") is None:
        raise CnnlabError("ONNX export needs the 'onnx' package, which is not installed",
                          "pip install onnx (and onnxruntime to verify), or use --format torchscript")
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter warns that torch.export is the new default
        try:
            torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], dynamic_axes=axes, opset_version=17)
        except Exception as e:  # the exporter raises many types; the user needs one line
            raise CnnlabError(f"ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0][:100]}",
                              "try --format torchscript") from None
    import onnx

    onnx.checker.check_model(str(path))
    if importlib.util.find_spec("onnxruntime") is None:
        return {"backend": "onnxruntime", "skipped": "onnxruntime is not installed; the export was not compared "
                "with torch (pip install onnxruntime, then export again)", "passed": None}
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return _compare(lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0], model, inputs, "onnxruntime")


EXPORTERS = {"onnx": (_export_onnx, ".onnx"), "torchscript": (_export_torchscript, ".torchscript.pt")}


def _channel_order(run: TrainedRun) -> str:
    if run.in_channels == 1:
        return "L (grey)"
    if run.in_channels == 2:
        return "H, E: haematoxylin and eosin from RGB by cnnlab.data.stain.unmix_he (fixed scaling), before resizing"
    return "RGB"


def _resize_words(prep: dict) -> str:
    """The resize step in one line; the exact rule is in "preprocess"."""
    policy = prep["policy"]
    if policy == "stretch":
        return "to height x width, bilinear with antialiasing (as in training); aspect ratio not kept"
    if policy == "letterbox":
        return ("scale to fit inside height x width keeping the aspect ratio, bilinear with antialiasing, then pad "
                "centred with pad_value (as in training); see preprocess.steps")
    if policy == "pad":
        return ("native resolution; images larger than height x width scaled down to fit, then pad centred with "
                "pad_value (as in training); see preprocess.steps")
    return ("native resolution; the model was trained on centre crops of height x width: tile whole images at the "
            "training scale (as `cnnlab predict` does); see preprocess.steps")


def preprocess_spec(run: TrainedRun, fmt: str, check: dict) -> dict:
    """What an application must do to an image before the model, and how to read its output: the run's own
    preprocessing definition (`Preprocess.describe`), the one training, evaluate and predict use."""
    h, w = run.input_size
    task = task_for(run.task)
    prep = run.preprocess.describe()
    return {
        "format": fmt, "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
        "input": {"layout": "NCHW", "dtype": "float32", "batch": "dynamic", "height": h, "width": w,
                  "channels": run.in_channels, "channel_order": _channel_order(run)},
        "input_size": [h, w],
        "resize": (_resize_words(prep) if run.window is None else "trained on height x width patches: whole "
                   "images through sliding windows (see sliding_window), " + ("at native resolution, no resize"
                   if prep["native_scale"] else "after resizing to preprocess.size as in training")),
        "preprocess": prep,
        "scale": "pixel / 255 (0..1); 16-bit and float grey images first to 0..255 by their own maximum "
                 "(round(255 * pixel / max)), as cnnlab's readers do",
        "mean": list(run.norm.mean), "std": list(run.norm.std),
        "normalize": "(pixel / 255 - mean[c]) / std[c] per channel c; mean and std in 0..1 units",
        "output": task.export_output(),
        "task": run.task, "class_names": run.class_names,
        "mask_encoding": task.mask_encoding(run.encoding),
        "source": {"run_dir": str(run.run_dir), "checkpoint": "best.pt", "best_epoch": run.best_epoch,
                   "model": run.recipe.model.name if run.recipe else None},
        "verification": check,
        "sliding_window": _window_spec(run),
        "test_time_flips": _flips_spec(run),
    }


def _flips_spec(run: TrainedRun) -> dict | None:
    """A run whose test averaged flips (train.tta): what an application does to get the outputs `cnnlab predict`
    and the run's test got (cnnlab.engine.flips). None: one pass."""
    flips = run_flips(run, None)
    if not flips:
        return None
    return {"flips": flip_names(flips),
            "steps": "run the model on the normalised image and on each flipped copy (horizontal: the width axis "
                     "reversed; vertical: the height axis; both: the two), flip each per-pixel output back, "
                     "average the softmax of the passes, then argmax (the exported model is one pass)"}


def _window_spec(run: TrainedRun) -> dict | None:
    """A patch-trained run (data.patch) sees whole images through sliding windows; what an application must do
    to get the outputs `cnnlab predict` and the run's test got (cnnlab.engine.windows). None: whole images."""
    w = run.window
    if w is None:
        return None
    return {**w.describe(),
            "steps": "pad the normalised image with 0 at the bottom and right up to at least height x width; along "
                     "each side place windows at multiples of the stride int(side_window * (1 - overlap)), the "
                     "last one flush with the end; add each window's logits times the weight outer(g_h, g_w), "
                     "g(i) = exp(-0.5 * (((i + 0.5) / n - 0.5) / 0.125) ** 2) / its maximum, floored at 0.001; "
                     "divide by the summed weights, cut the padding off, then argmax (softmax for probabilities)"}


def preprocess_path(model_path: Path) -> Path:
    """<model>.preprocess.json beside the model file (its last suffix replaced)."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name[: len(model_path.name) - len(model_path.suffix)]
                                + ".preprocess.json")


def export_run(run_dir: str | Path, fmt: str, out: str | Path | None = None) -> Path:
    """Export best.pt of a run; returns the model file (preprocess JSON beside it). Never overwrites."""
    exporter, suffix = lookup(EXPORTERS, fmt, "export format")
    run = load_run(run_dir, device="cpu", precision="fp32")
    task_for(run.task).require_inference("export")
    path = Path(out) if out is not None else Path(run_dir) / "export" / f"{Path(run_dir).name}{suffix}"
    spec_path = preprocess_path(path)
    for p in (path, spec_path):
        if p.exists():
            raise CnnlabError(f"{p} exists; export never overwrites", "give another --out, or delete it")
    path.parent.mkdir(parents=True, exist_ok=True)
    model = run.model.float().to(memory_format=torch.contiguous_format).eval()  # plain NCHW fp32 graph
    inputs = _inputs(run)
    with protected():  # Ctrl-C waits for the export; a failed or cut one leaves no file that blocks the next try
        try:
            check = exporter(model, inputs[-1], path, inputs)
            spec_path.write_text(json.dumps(preprocess_spec(run, fmt, check), indent=2))
        except BaseException:
            for p in (path, spec_path):
                p.unlink(missing_ok=True)
            raise
    return path
