"""`cnnlab predict`, `cnnlab evaluate`, `cnnlab export`: use a trained run on new images, data sets and runtimes."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from cnnlab.errors import ConfigError
from cnnlab.text import parse_size

if TYPE_CHECKING:
    from cnnlab.inference.predict import TrainedRun


def parse_window(text: str | None, run: TrainedRun) -> tuple[int, int] | None:
    """'256x256' -> (256, 256); 'train' -> the run's training input size; None -> no sliding window."""
    if text is None:
        return None
    if text.strip().lower() == "train":
        return run.input_size
    size = parse_size(text, 2)
    if size is None:
        raise ConfigError(f"--window '{text}' is not HxW", "e.g. --window 256x256, or --window train")
    return size[0], size[1]


def _run_predict(a: argparse.Namespace) -> int:
    from cnnlab.inference.predict import load_run, predict_paths
    from cnnlab.logs import console
    from cnnlab.tasks import task_for

    run = load_run(Path(a.run_dir), device=a.device)
    result = predict_paths(run, [Path(p) for p in a.inputs], Path(a.out), tta=a.tta,
                           window=parse_window(a.window, run), overlap=a.overlap, batch_size=a.batch_size,
                           overlays=not a.no_overlays)
    for note in result["notes"]:
        console.print(f"note: {note}")
    for line in task_for(run.task).predict_lines(result, a.out, overlays=not a.no_overlays):
        console.print(line)
    return 0


def _run_evaluate(a: argparse.Namespace) -> int:
    import json

    from cnnlab.inference.evaluate import evaluate_run

    folders = {"images": a.images, "masks": a.masks, "fov": a.fov} if (a.images or a.masks or a.fov) else None
    result, path = evaluate_run(Path(a.run_dir), a.data, a.split, a.out, device=a.device, batch_size=a.batch_size,
                                native=a.native, folders=folders, tta=a.tta)
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"{result['split']} of {result['data_root']} ({result['n_images']} images, scored at "
          f"{result['resolution']} HxW): {json.dumps(_headline(result['metrics']))}")
    if "metrics_trained_size" in result:
        print(f"  at the trained size {'x'.join(map(str, result['input_size']))}: "
              f"{json.dumps(_headline(result['metrics_trained_size']))}")
    if result.get("per_class") and len(result["per_class"]) > 2:  # multi-class: the per-class table
        from cnnlab.report.tables import per_class_lines

        print("\n".join(per_class_lines(result["per_class"])))
    for line in result.get("warnings", []):
        print(line)
    if result.get("per_image"):  # multi-class: the mean over images of each image's mean over its classes
        from cnnlab.metrics.per_image import per_image_line

        print(per_image_line(result["per_image"]))
    fg = result.get("foreground")
    if fg is not None:  # binary segmentation: both conventions, named
        print(f"foreground '{fg['class']}': Dice global (strict, pooled over {fg['images']} images) "
              f"{_num(fg['dice_global'])}, mean per image {_num(fg['dice_per_image_mean'])}; IoU global "
              f"{_num(fg['iou_global'])}, mean per image {_num(fg['iou_per_image_mean'])}")
        print(f"  per image: an image with empty ground truth and empty prediction scores 1 "
              f"({fg['images_empty_truth_and_prediction']} such images); empty ground truth with a predicted "
              f"foreground scores 0 ({fg['images_empty_truth'] - fg['images_empty_truth_and_prediction']})")
    print(f"wrote {path}")
    return 0


def _headline(metrics: dict) -> dict:
    """The split's metrics without the per-class IoU keys (iou/<class>): the per-class table shows those."""
    return {k: v for k, v in metrics.items() if not k.startswith("iou/")}


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _run_export(a: argparse.Namespace) -> int:
    import json

    from cnnlab.inference.export import export_run, preprocess_path

    path = export_run(Path(a.run_dir), a.format, a.out)
    spec = preprocess_path(path)
    check = json.loads(spec.read_text())["verification"]
    if check.get("passed"):
        print(f"exported {path} (matches torch: max abs diff {check['max_abs_diff']:.2g}, "
              f"batch sizes {check['batch_sizes']}; {check['tolerance']})")
    else:
        print(f"exported {path}; not verified: {check.get('skipped')}")
    print(f"preprocessing: {spec}")
    return 0


def _cmd_ensemble(a: argparse.Namespace) -> int:
    from cnnlab.inference.ensemble import ensemble_runs

    report = ensemble_runs(a.run_dirs, a.split)
    print(report.table())
    return 0


def _cmd_boundary(a: argparse.Namespace) -> int:
    from cnnlab.inference.boundary import compare_boundaries

    path, metrics = compare_boundaries(a.run_dirs, a.out, a.split, a.width)
    for name, m in metrics.items():
        print(f"{name}: per-image Dice {m['per_image_dice_mean']:.4f}, boundary-band Dice "
              f"{m['boundary_dice_mean']:.4f} ({a.width} px), boundary F1 {m['boundary_f1_mean']:.4f}")
    print(f"figure: {path}")
    return 0


TTA_HELP = ("average the model over each image and the flips the run trained with (horizontal; vertical and both "
            "where augment.vflip); default: as the run's test (train.tta)")


def register(sub) -> None:
    """Add `predict`, `evaluate`, `export` and `ensemble` to the main CLI's subparsers (handlers in `func`)."""
    e = sub.add_parser("ensemble", help="average the predictions of several classification runs; compare members")
    e.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    e.add_argument("--split", help="split to evaluate on (default: the first run's test split)")
    e.set_defaults(func=_cmd_ensemble)
    b = sub.add_parser("boundary", help="boundary-band figure and metrics of binary runs side by side "
                       "(e.g. without and with skip connections)")
    b.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    b.add_argument("--out", default="boundary.png", help="figure path (PNG)")
    b.add_argument("--split", help="split to compare on (default: the first run's test split)")
    b.add_argument("--width", type=int, default=3, help="band width in pixels")
    b.set_defaults(func=_cmd_boundary)
    p = sub.add_parser("predict", help="masks (or class probabilities) of a trained run for new images")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders (and their subfolders)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (existing files are never replaced)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None, help=TTA_HELP)
    p.add_argument("--no-overlays", action="store_true", help="write the masks and class areas only, no overlay "
                   "picture per image (for many images: the overlays are most of predict's time on a fast model)")
    p.add_argument("--window", metavar="HxW", help="sliding window of HxW pixels, e.g. 256x256, or 'train' for the "
                   "training input size; each image is first scaled as training scaled it (default: prepare each "
                   "image exactly as in training, letterbox included)")
    p.add_argument("--overlap", type=float, default=0.25, help="sliding-window overlap fraction (default 0.25)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.set_defaults(func=_run_predict)

    p = sub.add_parser("evaluate", help="metrics of a trained run on any split or another data set")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--data", metavar="ROOT", help="another data set of the same format (replaces data.root; "
                   "a folders run's image and mask folders keep their places under it)")
    p.add_argument("--images", metavar="DIR", help="folders runs: evaluate on every pair of these images ... "
                   "(class-folder runs: every image of this folder of class folders)")
    p.add_argument("--masks", metavar="DIR", help="... and these masks (read with the run's mask values; split 'all')")
    p.add_argument("--fov", metavar="DIR", help="... and this field of view, if the run had one")
    p.add_argument("--split", help="split to evaluate (default: the recipe's test split, usually 'test')")
    p.add_argument("--out", metavar="DIR", help="folder for evaluate_<split>.json (default RUN_DIR; never "
                                               "overwritten: a second evaluation gets -2, -3 ...)")
    p.add_argument("--batch-size", type=int, metavar="N", help="default: the recipe's train.eval_batch_size")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--native", action="store_true", help="score at each image's own size: predictions upsampled to "
                   "it, ground truth as stored (the DRIVE/ISBI protocol; segmentation, folders data sets)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None, help=TTA_HELP)
    p.set_defaults(func=_run_evaluate)

    p = sub.add_parser("export", help="ONNX or TorchScript file of a run's best model, checked against torch")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    p.add_argument("--out", metavar="PATH", help="model file (default RUN_DIR/export/<run>.onnx or .torchscript.pt)")
    p.set_defaults(func=_run_export)
