"""Apply a trained run to new images: rebuild it from its run dir, predict masks/probabilities, re-evaluate it."""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from cnnlab.config import Recipe
from cnnlab.data.formats.common import IMAGE_EXTS, convert_channels, is_junk, read_input, resize_images, to_chw
from cnnlab.data.formats.preprocess import Preprocess
from cnnlab.data.mask_encoding import MaskEncoding
from cnnlab.data.stain import unmix_he_batch
from cnnlab.engine.checkpoint import read_checkpoint
from cnnlab.engine.flips import HORIZONTAL, Flips, flip_names, flips_named, model_logits, tta_flips
from cnnlab.engine.progress import Bars
from cnnlab.engine.run_files import BEST, read_summary
from cnnlab.engine.runtime import Runtime, resolve_runtime
from cnnlab.engine.steps import Normalizer, Scorer
from cnnlab.errors import CnnlabError, DataError
from cnnlab.inference.sliding_window import Window, check_window, sliding_window, window_logits
from cnnlab.logs import console as default_console  # the process's one terminal: messages and bars
from cnnlab.losses.core import Loss
from cnnlab.models import build_model
from cnnlab.tasks import task_for

CHECKPOINT_KEYS = ("model", "recipe", "norm", "class_names", "in_channels", "input_size")
MASK_STEM_SUFFIXES = ("_mask", "_label", "_labels", "_gt")  # ground truth beside inputs in data set folders


@dataclass
class TrainedRun:
    """A trained model ready for inference, with everything its inputs and outputs need."""

    model: nn.Module
    rt: Runtime
    norm: Normalizer
    class_names: list[str]
    in_channels: int
    input_size: tuple[int, int]
    task: str
    encoding: MaskEncoding
    recipe: Recipe | None = None
    run_dir: Path | None = None
    best_epoch: int | None = None
    checkpoint: dict = field(default_factory=dict, repr=False)
    notes: list[str] = field(default_factory=list)
    chosen_flips: Flips = ()  # train.tta auto: the flips the end of the run kept (summary.json), else unused

    @property
    def preprocess(self) -> Preprocess:
        """How training prepared images (the recipe's reader policy at the trained size); without a recipe
        (hand-built runs) images were taken at native resolution and resized to input_size."""
        if self.recipe is None:
            return Preprocess(self.input_size, native_scale=True, mean=self.norm.mean, std=self.norm.std)
        d = self.recipe.data
        if d.patch is not None and d.size is None:  # patches cut at the images' own size
            return Preprocess(self.input_size, native_scale=True, mean=self.norm.mean, std=self.norm.std)
        size = tuple(d.size) if d.patch is not None else self.input_size  # patches cut from images at data.size
        return Preprocess.for_data(d.format, d.size, d.options, size, self.norm.mean, self.norm.std)

    @property
    def window(self) -> Window | None:
        """The sliding window of a patch-trained run (data.patch), the one its validation and test used; None
        for runs trained on whole images."""
        if self.recipe is None:
            return None
        return Window.of_recipe(self.recipe.data.patch, self.recipe.train.window_overlap,
                                self.recipe.train.eval_batch_size)

    def scorer(self, batch_size: int, loss_fn: Loss | None = None) -> Scorer:
        """The model as the engine passes it over a split (engine.steps): the run's task, looked up by its name,
        and its sliding window."""
        return Scorer(task_for(self.task), self.model, self.rt, self.norm, batch_size, loss_fn, self.window)


def load_run(run_dir: str | Path, device: str = "auto", precision: str | None = None) -> TrainedRun:
    """Rebuild a run's best model from best.pt and its saved recipe; precision defaults to the recipe's."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CnnlabError(f"run dir not found: {run_dir}", "give a folder written by `cnnlab train`")
    best = run_dir / BEST
    if not best.is_file():
        raise CnnlabError(f"{best}: not found", "a run writes best.pt after its first finished epoch; "
                          "is this a cnnlab run dir?")
    ck = read_checkpoint(best)
    missing = [key for key in CHECKPOINT_KEYS if key not in ck.entries]
    if missing:
        raise CnnlabError(f"{best}: not a cnnlab checkpoint (no '{missing[0]}')", "give a run dir of `cnnlab train`")
    recipe = ck.recipe()
    precision = precision or recipe.train.precision
    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if precision == "fp16" and on_cpu:
        precision = "auto"  # trained with CUDA fp16 AMP, now on CPU: bf16 where the CPU has it, else fp32
    rt = resolve_runtime(device, precision, recipe.train.channels_last)
    class_names, in_ch, size = ck.class_names, ck.in_channels, ck.input_size
    n_out = task_for(recipe.task).num_outputs(class_names)
    # best.pt holds every weight: never fetch or read the pre-trained source again
    params = {k: ("none" if k == "weights" else v) for k, v in recipe.model.params.items()}
    model = build_model(recipe.model.name, in_ch, n_out, size, params)
    try:
        model.load_state_dict(ck.weights)
    except RuntimeError as e:
        raise CnnlabError(f"{best}: weights do not fit model '{recipe.model.name}' "
                          f"({str(e).splitlines()[0][:80]})", "was the model code changed since training?") from None
    fmt = torch.channels_last if rt.channels_last else torch.preserve_format
    model = model.to(rt.device, memory_format=fmt).eval()
    encoding, notes = ck.encoding(recipe)
    chosen, auto_notes = _auto_flips(run_dir, recipe)
    return TrainedRun(model, rt, ck.norm, class_names, in_ch, size, recipe.task, encoding, recipe, run_dir,
                      ck.best_epoch, ck.entries, notes + auto_notes, chosen)


def _auto_flips(run_dir: Path, recipe: Recipe) -> tuple[Flips, list[str]]:
    """For train.tta auto, the flips the end of the run chose on validation (summary.json's test_time_flips), and
    a note saying so; an unfinished run has not chosen: one pass."""
    if recipe.train.tta != "auto":
        return (), []
    s = read_summary(run_dir)
    if s is None or s.get("tta_choice") is None:
        return (), ["train.tta auto: the run has not chosen yet (no summary.json): one pass; --tta averages over "
                    "the flips it trains with"]
    c = s["tta_choice"]
    return flips_named(s.get("test_time_flips") or []), [
        f"train.tta auto: the run's validation chose {c['chose']} ({c['score']} {c['one_pass']:.4f} in one pass, "
        f"{c['flips']:.4f} averaged over the flips); --tta or --no-tta overrides it"]


def run_flips(run: TrainedRun, tta: bool | None) -> Flips:
    """The flips a pass averages over: tta None follows the run's train.tta (as its test was scored; auto: what
    the run chose), True and False force it; the flips are those the run trained with (engine.flips.tta_flips; a
    run without its recipe: the horizontal mirror alone)."""
    if run.recipe is None:
        return HORIZONTAL if tta else ()
    if tta is None and run.recipe.train.tta == "auto":
        return run.chosen_flips  # as the run's own test: what its validation chose
    return tta_flips(run.recipe.augment, run.recipe.train.tta if tta is None else tta)


def tta_notes(flips: Flips, tta: bool | None) -> list[str]:
    """What test-time augmentation did (flips: run_flips of the asked tta), in words (predict.json,
    evaluate_<split>.json and the terminal)."""
    if flips:
        return [f"test-time augmentation: the model averaged over each image and its flips "
                f"({', '.join(flip_names(flips))})"]
    if tta:
        return ["--tta: the run trained with no flips (augment.hflip, augment.vflip), so there is nothing to "
                "average: one pass"]
    return []


@torch.no_grad()
def _mean_logits(model: nn.Module, x: torch.Tensor, rt: Runtime, flips: Flips) -> torch.Tensor:
    """Float logits (on the model's device) of normalised inputs, averaged over the image and its flips under TTA:
    engine.flips.model_logits, as the engine's Scorer.logits."""
    model.eval()
    return model_logits(model, rt, x, flips)


def class_probabilities(model: nn.Module, x: torch.Tensor, rt: Runtime, flips: Flips = ()) -> torch.Tensor:
    """Softmax over classes (float32, CPU) of normalised inputs; with flips the mean over the image and its
    flips, as the end-of-run test."""
    return _mean_logits(model, x, rt, flips).softmax(1).cpu()


def _natural(p: Path) -> list:
    """Sort key that puts 2 before 10 in file and folder names."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def _folder_images(folder: Path) -> tuple[list[Path], int, int]:
    """Images in a folder and its direct subfolders, plus counts of skipped non-images and mask-named files."""
    entries = sorted((q for q in folder.iterdir() if not is_junk(q)), key=_natural)
    entries = [f for q in entries
               for f in ([q] if q.is_file() else sorted(q.iterdir(), key=_natural) if q.is_dir() else [])]
    files, skipped, masks = [], 0, 0
    for f in entries:
        if not f.is_file() or is_junk(f) or f.suffix.lower() not in IMAGE_EXTS:
            skipped += 1
        elif f.stem.lower().endswith(MASK_STEM_SUFFIXES):
            masks += 1
        else:
            files.append(f)
    return files, skipped, masks


def list_inputs(inputs: list[Path]) -> tuple[list[Path], list[str]]:
    """Image files from files and folders (a folder's files and its subfolders' files); junk and masks skipped."""
    files, skipped, masks = [], 0, 0
    for p in map(Path, inputs):
        if p.is_dir():
            found, n_skipped, n_masks = _folder_images(p)
            files, skipped, masks = files + found, skipped + n_skipped, masks + n_masks
        elif not p.is_file():
            raise DataError(f"{p}: no such file or folder")
        elif is_junk(p):
            skipped += 1
        elif p.suffix.lower() not in IMAGE_EXTS:
            raise DataError(f"{p}: not an image file", f"known extensions: {', '.join(sorted(IMAGE_EXTS))}")
        else:
            files.append(p)
    notes = [f"skipped {skipped} non-image entries"] if skipped else []
    if masks:
        notes.append(f"skipped {masks} files named like masks (*{', *'.join(MASK_STEM_SUFFIXES)})")
    files = list(dict.fromkeys(files))
    if not files:
        raise DataError(f"no images found in {', '.join(map(str, inputs))}",
                        f"give image files or folders of them ({', '.join(sorted(IMAGE_EXTS))})")
    return files, notes


def output_stems(files: list[Path]) -> list[str]:
    """Unique output names: the file stem, prefixed with its folder where stems repeat, then numbered."""
    stems = [f.stem for f in files]
    stems = [f"{f.parent.name}_{s}" if stems.count(s) > 1 else s for f, s in zip(files, stems)]
    seen: dict[str, int] = {}
    out = []
    for s in stems:
        seen[s] = seen.get(s, 0) + 1
        out.append(s if seen[s] == 1 else f"{s}-{seen[s]}")
    return out


def bars(show: bool, console: Console | None) -> Bars:
    """predict's and evaluate's progress, as training shows it (cnnlab.engine.progress): a rich bar with count,
    images/s and ETA on a terminal, plain lines at a bounded rate elsewhere, nothing when show is False."""
    return Bars(console or default_console, show)


def _read(run: TrainedRun, path: Path) -> torch.Tensor:
    """C x H x W uint8 as shown to people: grey for grey runs, else RGB; 16-bit files scaled as in training."""
    return to_chw(read_input(path, 1 if run.in_channels == 1 else 3))


def model_channels(run: TrainedRun, images: torch.Tensor) -> torch.Tensor:
    """N x C x H x W uint8 in the run's input channels, the one conversion of predict and evaluate: grey to RGB or
    RGB to grey as read_input converts files (convert_channels), RGB unmixed to H&E stains for 2-channel runs."""
    images = convert_channels(images, run.in_channels)
    if images.shape[1] == run.in_channels:
        return images
    stain = run.recipe.data.options.get("stain") if run.recipe is not None else None
    if run.in_channels == 2 and stain == "hed":
        return unmix_he_batch(images)
    raise CnnlabError(f"the run takes {run.in_channels}-channel inputs; cnnlab cannot make them from image files")


def _normalised(run: TrainedRun, images: torch.Tensor) -> torch.Tensor:
    return run.norm(images.float().div_(255))


def _tiled(run: TrainedRun, img: torch.Tensor, window: tuple[int, int], overlap: float, batch_size: int,
           flips: Flips) -> torch.Tensor:
    """K x H x W probabilities of one C x H x W image by sliding windows at the training pixel size: the image is
    scaled as training scaled it, tiled, and the probabilities resized back to the image's own size."""
    h, w = img.shape[-2:]
    scaled = run.preprocess.training_scale(h, w)
    x = _normalised(run, resize_images(model_channels(run, img[None]), scaled))[0]
    if run.window is not None and window == run.window.size:  # the run's own window, as its test scored it
        p = window_logits(lambda b: _logits(run, b, flips), x, run.window).softmax(0)
    else:
        try:
            p = sliding_window(lambda b: class_probabilities(run.model, b, run.rt, flips), x, window, overlap,
                               batch_size)
        except RuntimeError as e:  # the model takes its training size: the window is what it cannot take
            if "allocate" in str(e) or "out of memory" in str(e) or all(a >= b for a, b in zip(window, run.input_size)):
                raise
            raise CnnlabError(f"the model cannot take {window[0]}x{window[1]} windows "
                              f"({str(e).splitlines()[0][:120]})", "use the training pixel size: --window train") \
                from None
    if tuple(p.shape[-2:]) != (h, w):
        p = F.interpolate(p[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    return p


def _logits(run: TrainedRun, x: torch.Tensor, flips: Flips) -> torch.Tensor:
    """Logits (float32, CPU) of normalised inputs, averaged over the image and its flips under TTA."""
    return _mean_logits(run.model, x, run.rt, flips).cpu()


def _batched(run: TrainedRun, images: list[torch.Tensor], flips: Flips) -> list[torch.Tensor]:
    """Probabilities of images prepared as in training, in one model call; segmentation maps mapped back onto
    each image (padding cut off, resized to its own size)."""
    prep = run.preprocess
    placed = [prep.apply(model_channels(run, img[None])[0]) for img in images]
    x = torch.stack([t for t, _, _ in placed])
    probs = class_probabilities(run.model, _normalised(run, x), run.rt, flips)
    return [prep.restore(p, pl) if p.ndim == 3 else p for p, (_, _, pl) in zip(probs, placed)]


def _predict_chunks(run: TrainedRun, files: list[Path], batch_size: int, tta: bool | None,
                    window: tuple[int, int] | None,
                    overlap: float) -> Iterator[tuple[Path, torch.Tensor, torch.Tensor]]:
    """(path, image, probabilities at the image's own size) per file; model calls batched. Images go through the
    run's preprocessing; with --window, or where the training crop would leave part of an image unseen, they are
    tiled at the training pixel size instead."""
    for i in range(0, len(files), batch_size):
        chunk = files[i: i + batch_size]
        images = [_read(run, f) for f in chunk]
        yield from zip(chunk, images, image_probabilities(run, images, tta, window, overlap, batch_size))


def image_probabilities(run: TrainedRun, images: list[torch.Tensor], tta: bool | None = None,
                        window: tuple[int, int] | None = None, overlap: float = 0.25,
                        batch_size: int = 8) -> list[torch.Tensor]:
    """Probabilities (K x H x W at each image's own size, or K) of C x H x W uint8 images, in one batch: the one
    path of `cnnlab predict` (files) and cnnlab.Run.predict (arrays), so both give the same masks. tta: see
    run_flips (None: as the run's test)."""
    flips = run_flips(run, tta)
    prep, dense = run.preprocess, task_for(run.task).dense
    tile = [window is not None or run.window is not None or (dense and not prep.place(*img.shape[-2:]).whole)
            for img in images]
    whole = iter(_batched(run, [img for img, t in zip(images, tile) if not t], flips) if not all(tile) else [])
    size = window or (run.window.size if run.window is not None else prep.size)
    return [_tiled(run, img, size, overlap, batch_size, flips) if t else next(whole)
            for img, t in zip(images, tile)]


def _preprocess_notes(run: TrainedRun, window: tuple[int, int] | None) -> list[str]:
    """What predict did to the images, in words (predict.json and the terminal)."""
    prep = run.preprocess
    notes = [f"images prepared as in training: {prep.words()}"]
    if window is None and run.window is not None:
        w = run.window
        notes.append(f"trained on {w.size[0]}x{w.size[1]} patches (data.patch): each whole image is predicted by "
                     f"sliding windows of that size, overlap {w.overlap:g}, Gaussian-weighted logits, as the run's "
                     "validation and test scored it")
    if window is not None and not prep.native_scale:
        notes.append(f"--window: each image is first scaled as in training, tiled with {window[0]}x{window[1]} "
                     "windows, and the probabilities resized back to the image's own size")
    elif window is None and prep.fit == "crop":
        notes.append(f"trained on {prep.size[0]}x{prep.size[1]} crops: images larger than that are tiled with "
                     "windows of that size at the training scale, so that every pixel gets a prediction")
    return notes


WINDOW_AREA_MAX = 64  # a --window over this many times the training input's area is refused (memory, and pointless)


def _check_window_fits(run: TrainedRun, window: tuple[int, int], inputs: list[Path], out: Path) -> None:
    """Refuse, in one line before any image, a --window over WINDOW_AREA_MAX times the training input (99999x99999
    asked the allocator for 120 GB). One too small for the model's poolings (1x1: 'Output size is too small') is
    refused at its first tile (_tiled): a probe here would cost a forward pass of every prediction."""
    (h, w), (wh, ww) = run.input_size, window
    hint = "use the training pixel size: " + " ".join(shlex.quote(str(a)) for a in (
        "cnnlab", "predict", run.run_dir, *inputs, "--out", out, "--window", "train"))
    if wh * ww > WINDOW_AREA_MAX * h * w:
        raise CnnlabError(f"--window {wh}x{ww} is over {WINDOW_AREA_MAX} times the training input ({h}x{w})", hint)


def predict_paths(run: TrainedRun, inputs: list[Path], out: Path, tta: bool | None = None,
                  window: tuple[int, int] | None = None, overlap: float = 0.25, batch_size: int = 8,
                  progress: bool = True, console: Console | None = None, overlays: bool = True) -> dict:
    """Predict every image under inputs into out; returns (and writes as predict.json) what was written.
    progress: a bar (or plain lines) on `console` (default: stdout) as the images are done; overlays: False for
    the masks (and class areas) alone."""
    task = task_for(run.task)
    task.require_inference("predict")
    if window is not None and not task.dense:
        raise CnnlabError("--window is for segmentation runs", "classification images are resized instead")
    if batch_size < 1:
        raise CnnlabError(f"batch size {batch_size} must be >= 1")
    if window is not None:
        check_window(window, overlap)
        _check_window_fits(run, window, inputs, out)
    files, notes = list_inputs(inputs)
    stems = output_stems(files)
    out = Path(out)
    planned = [*task.planned_outputs(out, stems, overlays), out / "predict.json"]
    clash = next((p for p in planned if p.exists()), None)
    if clash is not None:
        raise CnnlabError(f"{clash} exists; predict never overwrites", "choose a new or empty --out folder")
    out.mkdir(parents=True, exist_ok=True)
    stem_of = dict(zip(files, stems))
    entries = []
    with bars(progress, console).bar("predicting", len(files)) as bar:
        for f, img, probs in _predict_chunks(run, files, batch_size, tta, window, overlap):
            entries.append(task.write_prediction(out, stem_of[f], f, img, probs, run.class_names, run.encoding,
                                                 overlays))
            bar.advance(1)
    task.finish_predictions(out, entries, run.class_names)
    flips = run_flips(run, tta)
    index = {"run_dir": str(run.run_dir), "task": run.task, "tta": bool(flips), "tta_flips": flip_names(flips),
             "window": list(window) if window else None, "overlap": overlap if window else None,
             "input_size": list(run.input_size), "class_names": run.class_names,
             "preprocess": run.preprocess.describe(),
             "mask_encoding": task.mask_encoding(run.encoding),
             "notes": run.notes + notes + _preprocess_notes(run, window) + tta_notes(flips, tta),
             "images": entries}
    (out / "predict.json").write_text(json.dumps(index, indent=2))
    return index
