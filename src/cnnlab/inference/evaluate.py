"""`cnnlab evaluate`: re-evaluate a trained run's best model on any split or another data set of its format.

What is scored, kept and written beyond the metrics is the run's task's (cnnlab.tasks): binary segmentation, for
one, also gets the foreground's Dice and IoU per image, averaged over the images, beside the strict global ones
(counts pooled over the split): polyp papers report the per-image mean, and the two differ (a small polyp missed
costs a whole image's Dice per image but few pixels globally).

--native (segmentation) scores at the images' own size, as DRIVE and ISBI papers do: the model sees exactly its
training inputs, its logits are upsampled (bilinear) to the native size, and the masks (and field of view) are the
format reader's own decoding at that size, so no thin structure is lost to a nearest resize of the ground truth."""
from __future__ import annotations

import json
import shlex
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console

from cnnlab.config import DataConfig
from cnnlab.data.formats import imagefolder
from cnnlab.data.formats.folders import (
    find_split,
    header,
    parse_options,
    pin_encoding,
    rebase_options,
    scan_layout,
    summarize_sizes,
    whole_folder_options,
)
from cnnlab.data.formats.preprocess import Preprocess
from cnnlab.data.loading import load_run_data, load_split
from cnnlab.data.types import SegData
from cnnlab.engine.flips import flip_names
from cnnlab.engine.steps import Scorer, evaluate
from cnnlab.errors import CnnlabError, ConfigError, DataError
from cnnlab.inference.predict import TrainedRun, bars, load_run, model_channels, run_flips, tta_notes
from cnnlab.losses.core import build_loss, needs_weights
from cnnlab.metrics.per_class import vanished_warnings, without_class_iou
from cnnlab.tasks import task_for


def _loss_for(run: TrainedRun, ignore_index: int | None, notes: list[str]):
    """The run's training loss, with the class weights its checkpoint stored; a run saved before weights were
    stored gets them recomputed from its training split (unweighted cross-entropy, said in a note, without it)."""
    r = run.recipe
    weights = run.checkpoint.get("class_weights")
    if weights is not None:
        return build_loss(r.loss.name, r.loss.params, ignore_index, weights=torch.as_tensor(weights))
    if not needs_weights(r.loss.name, r.loss.params):
        return build_loss(r.loss.name, r.loss.params, ignore_index)
    try:
        train = load_run_data(r.data, r.train.seed, r.out).train
    except DataError:
        notes.append(f"training data not found: the loss is unweighted cross-entropy, not {r.loss.name}")
        return build_loss("cross_entropy", {}, ignore_index)
    return build_loss(r.loss.name, r.loss.params, ignore_index, train)


def _free_path(folder: Path, stem: str) -> Path:
    """folder/stem.json, or stem-2.json, stem-3.json ... when taken: evaluations never overwrite."""
    for i in range(1, 10000):
        p = folder / (f"{stem}.json" if i == 1 else f"{stem}-{i}.json")
        try:
            with open(p, "x"):
                return p
        except FileExistsError:
            continue
    raise CnnlabError(f"no free file name for {stem}.json in {folder}")


def _other_data(run: TrainedRun, data_root: str | Path | None, folders: dict | None) -> tuple[DataConfig, bool]:
    """The data config to evaluate on, and whether it is the run's own. data_root replaces data.root (a folders
    recipe's absolute folders move with it); folders ({images, masks, fov}: folders runs) are read whole as one
    split, 'all'. Other folders are read with the run's own mask values (pin_encoding)."""
    r = run.recipe
    if not folders and data_root is None:
        return r.data, True
    if folders and r.data.format == "imagefolder" and data_root is None and not folders.get("masks"):
        return _class_folders(r.data, Path(folders["images"]).expanduser()), False
    if folders and (r.data.format != "folders" or data_root is not None or not (folders.get("images")
                                                                                 and folders.get("masks"))):
        raise ConfigError("--images DIR --masks DIR [--fov DIR] evaluate a run trained on image/mask folders "
                          f"(this one: format {r.data.format}) on other such folders, without --data",
                          "give both --images and --masks, or --data ROOT alone (a class-folder run: --images "
                          "DIR alone)")
    if r.data.format != "folders":
        return replace(r.data, root=str(data_root)), False
    if folders:
        root, opts = whole_folder_options(r.data.options, folders["images"], folders["masks"], folders.get("fov"))
    else:
        root, opts = Path(data_root), rebase_options(r.data.options, Path(r.data.root), Path(data_root))
    opts = pin_encoding(opts, run.checkpoint.get("mask_encoding"), run.class_names)
    return replace(r.data, root=str(root), options=opts, val_fraction=0.0), False


def _class_folders(cfg: DataConfig, root: Path) -> DataConfig:
    """A class-folder run on every image of another folder of class folders (split '.', no resplit)."""
    if not root.is_dir() or not imagefolder.is_flat(root):
        raise DataError(f"{root}: not a folder of class folders (e.g. {root / 'cat'}/*.jpg)",
                        "give --images the folder that holds one folder per class")
    options = {k: v for k, v in cfg.options.items() if k != "resplit"}
    return replace(cfg, root=str(root), options=options, val_fraction=0.0)


def evaluate_run(run_dir: str | Path, data_root: str | Path | None = None, split: str | None = None,
                 out: str | Path | None = None, device: str = "auto", batch_size: int | None = None,
                 progress: bool = True, console: Console | None = None, native: bool = False,
                 folders: dict | None = None, tta: bool | None = None) -> tuple[dict, Path]:
    """Metrics of a run's best model on any split (default: the recipe's test split), or on another data set of
    the same format (data_root replaces data.root; folders: every pair of {images, masks, fov} folders, split
    'all'); writes evaluate_<split>.json into out (default the run dir).
    progress: a bar (or plain lines) on `console` (default: stdout) while the images are evaluated.
    native: segmentation scored at the images' own size (see the module docstring); the trained-size metrics
    are kept under "metrics_trained_size". tta: the model averaged over the flips it trained with (None: as the
    run's own test, train.tta)."""
    run = load_run(run_dir, device)
    r = run.recipe
    task = task_for(r.task)  # the run's task, by its name: everything below asks it
    task.require_inference("evaluate")
    if native and not task.dense:
        raise ConfigError(f"--native applies to segmentation runs; this is a {r.task} run",
                          f"cnnlab evaluate {shlex.quote(str(run_dir))} (without --native)")
    cfg, own = _other_data(run, data_root, folders)
    split = (imagefolder.FLAT if r.data.format == "imagefolder" else "all") if folders else (split or r.data.test)
    if cfg.size is None and run.window is None:  # a patch-trained run's images stay at their own size
        cfg = replace(cfg, size=list(run.input_size))  # no-op at the trained size
    notes = list(run.notes)
    if folders and r.data.options.get("fov") and not folders.get("fov"):
        notes.append("the run was trained with a field of view; none given (--fov DIR): every pixel is scored")
    data = _load(run, cfg, split, own, notes)
    loss_fn = _loss_for(run, task.ignore_index(data), notes)
    bs = batch_size or r.train.eval_batch_size
    # the task's prediction (segmentation: label maps for the per-image scores), kept from evaluate's own batches
    scored, at, keeper, size = data, "trained", task.keeper(data), tuple(cfg.size or data.images.shape[-2:])
    if run.window is not None:  # sliding windows over each whole image, at the size training cut patches from
        at, native = ("native" if cfg.size is None else "trained"), False
        notes.append(WINDOWED.format(h=run.window.size[0], w=run.window.size[1], overlap=run.window.overlap))
    if native:
        scored = _native_data(run, cfg, split, own, data)
        keeper = task.native_keeper(scored)
        at, size = "native", keeper.size
    resolution = f"{at} {size[0]}x{size[1]}"
    flips = run_flips(run, tta)
    notes += tta_notes(flips, tta)
    with bars(progress, console).bar(f"evaluating '{split}'", len(data)) as bar:
        metrics, cm = evaluate(Scorer(task, run.model, run.rt, run.norm, bs, loss_fn, run.window, flips), data,
                               bar.advance, keeper)
    metrics, extra = without_class_iou(metrics), {}  # per-class IoU: in per_class below
    if native:  # the native counts replace the trained-size ones
        extra, notes = {"metrics_trained_size": metrics}, notes + [NATIVE]
        metrics, cm = keeper.result()
    pred = keeper.prediction()
    result = {"run_dir": str(run.run_dir), "checkpoint": "best.pt", "best_epoch": run.best_epoch,
              "data_format": cfg.format, "data_root": str(cfg.root), "split": split, "n_images": len(data),
              "input_size": list(cfg.size or run.input_size), "resolution": resolution,
              "tta_flips": flip_names(flips),
              "metrics": metrics, **extra, "class_names": run.class_names, "device": str(run.rt.device),
              "precision": run.rt.precision, "notes": notes + list(data.notes)}
    result.update(task.test_entries(scored, cm, pred))  # per-class and per-image scores; binary: boundary scores
    result["warnings"] = vanished_warnings(result, split, run.run_dir)  # a class in the ground truth never predicted
    result.update(task.evaluate_entries(scored, pred, result, at=f"{at} size"))  # binary: the foreground's scores
    folder = Path(out) if out is not None else Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = _free_path(folder, f"evaluate_{'all' if split == imagefolder.FLAT else split.replace('/', '_')}")
    path.write_text(json.dumps(result, indent=2))
    return result, path


WINDOWED = ("trained on {h}x{w} patches (data.patch): each whole image scored by sliding windows of that size "
            "(overlap {overlap:g}, Gaussian-weighted logits), as the run's validation and test; --native is implied "
            "where training kept the images' own size")
NATIVE = ("scored at each image's own size: the model's logits at the trained size upsampled bilinearly "
          "(align_corners=False) to it, argmax, against the masks (and field of view) as stored; "
          "'metrics_trained_size' holds the scores at the trained size (loss and soft Dice exist only there)")


def _load(run: TrainedRun, cfg: DataConfig, split: str, own_root: bool, notes: list[str],
          size: tuple[int, int] | None = None) -> SegData:
    """The split to evaluate, read by its format as training read it, or at `size` (a carved validation split
    carved as in training)."""
    r = run.recipe
    if own_root and r.data.val_fraction > 0 and split == r.data.val:
        rd = r.data if size is None else replace(r.data, size=list(size))
        data = load_run_data(rd, r.train.seed, r.out).val  # the same seeded carve-out as in training
        notes.append(f"'{split}' is carved from '{r.data.train}' (fraction {r.data.val_fraction}) as in training")
    else:
        data = load_split(cfg if size is None else replace(cfg, size=list(size)), split, r.out)
    if list(data.class_names) != run.class_names:
        raise DataError(f"{cfg.root}: classes {data.class_names} differ from the run's {run.class_names}",
                        "evaluate on a data set with the same classes")
    if data.images.shape[1] != run.in_channels:  # RGB images on a grey run, or the reverse: converted as predict does
        notes.append(f"images have {data.images.shape[1]} channels, the run takes {run.in_channels}: converted as "
                     "cnnlab predict converts them")
        data.images = model_channels(run, data.images)
    return data


def _native_data(run: TrainedRun, cfg: DataConfig, split: str, own_root: bool, data: SegData) -> SegData:
    """The split decoded by its format at the images' own (common) size: masks, palettes and field of view at full
    resolution; its images must be those of `data`, in the same order."""
    r = run.recipe
    carved = own_root and r.data.val_fraction > 0 and split == r.data.val
    size = _native_size(run, cfg, r.data.train if carved else split)
    native = _load(run, cfg, split, own_root, [], size)
    if native.names != data.names:
        raise DataError(f"{cfg.root}: '{split}' read at {size[0]}x{size[1]} holds other images than at the trained "
                        "size", f"cnnlab evaluate {shlex.quote(str(run.run_dir))} (without --native)")
    return native


def _native_size(run: TrainedRun, cfg: DataConfig, split: str) -> tuple[int, int]:
    """The one size (H, W) of a split's image files; a DataError where sizes differ or training letterboxed."""
    root = Path(cfg.root).expanduser()
    if cfg.format != "folders":
        raise ConfigError(f"--native reads the images' own sizes from folders data sets, not '{cfg.format}'",
                          _predict_hint(run, root))
    layout = scan_layout(root, parse_options(cfg.options))
    pairs = layout.splits[find_split(split, list(layout.splits), str(root))]
    sizes = [header(p.image)[:2] for p in pairs]
    prep = Preprocess.for_data(cfg.format, cfg.size, cfg.options, run.input_size)
    folders = {p.image.parent for p in pairs}
    hint = _predict_hint(run, folders.pop() if len(folders) == 1 else root)
    if len(set(sizes)) != 1:
        raise DataError(f"--native needs one image size in '{split}'; found {summarize_sizes(sizes)} (HxW)", hint)
    if not prep.stretches:
        raise DataError(f"--native: training placed the images ({prep.words()}), so the trained-size output does not "
                        f"map onto the {sizes[0][0]}x{sizes[0][1]} images by a resize", hint)
    return sizes[0]


def _predict_hint(run: TrainedRun, images: Path) -> str:
    """The command that writes masks at each image's own size, for scoring them outside cnnlab."""
    return (f"cnnlab predict {shlex.quote(str(run.run_dir))} {shlex.quote(str(images))} --out DIR "
            "writes masks at each image's own size")
