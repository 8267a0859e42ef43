"""Segmentation: a class per pixel. Masks warp with their images, metrics are strict Dice/IoU from one confusion
matrix over the split (plus the course's soft Dice per batch), a prediction is an argmax label map."""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from cnnlab.config import AugmentConfig, Recipe
from cnnlab.data.mask_encoding import MaskEncoding, resolve_encoding
from cnnlab.data.patches import cut_patches, plan_patches
from cnnlab.data.types import SegData
from cnnlab.figures.legend import with_legend
from cnnlab.figures.palette import overlay
from cnnlab.figures.run import overlay_scores, seg_overlays
from cnnlab.losses.core import Loss, soft_dice_per_class
from cnnlab.metrics.argmax import class_argmax
from cnnlab.metrics.boundary import binary_summary, foreground_scores
from cnnlab.metrics.confusion import ConfusionMatrix
from cnnlab.metrics.per_class import class_iou_metrics, never_predicted, pixel_shares
from cnnlab.metrics.per_image import per_image_summary
from cnnlab.tasks.base import LabelTally, Norm, Placement, PredictionKeeper, Task, label_batch, shrink_images


class SegTally(LabelTally):
    """Strict Dice/IoU summary from the confusion matrix, and the course's per-batch soft Dice."""

    def soft_dice(self, out: torch.Tensor, target: torch.Tensor) -> float:
        # the course's metric: soft Dice on probabilities, per batch, smoothing 1
        return float(soft_dice_per_class(out.softmax(1), target, 1.0, self.ignore).mean())

    def metrics(self, soft_sum: float, n_batches: float) -> dict:
        s = self.cm.summary(self.class_names)
        out = {k: v for k, v in s.items() if k != "per_class"}
        out["soft_dice_batch_mean"] = soft_sum / max(n_batches, 1)
        out.update(class_iou_metrics(self.cm, self.class_names))  # every validation: a vanished class shows
        return out


def _outputs(out: Path, stem: str, overlays: bool = True) -> list[Path]:
    """predict's files for one image: mask, overlay (unless left out), class areas."""
    return [out / f"{stem}_mask.png", *([out / f"{stem}_overlay.png"] if overlays else []), out / f"{stem}_areas.json"]


class Segmentation(Task):
    name = "segmentation"
    data_type = SegData
    headline = "dice_mean"
    selects = ("auto", "miou")  # miou: strict mean IoU over the classes in the ground truth picks best.pt
    dense = True
    losses = ("dice", "cross_entropy", "dice_ce", "weighted_ce", "lovasz", "ohem_ce")
    study_metrics = ("dice_mean", "dice_mean_foreground", "dice_background", "iou_mean", "pixel_accuracy",
                     "soft_dice_batch_mean")
    conventions = (
        "{dice_mean} = `dice_mean`: argmax predictions, counts summed over the whole split, averaged over the classes "
        "present in the ground truth (fg: background excluded; bg: background only). {soft_dice_batch_mean} = "
        "`soft_dice_batch_mean`: the course's soft Dice on probabilities per batch (smoothing 1), averaged over "
        "batches; it moves with batch composition and is not comparable across reports.")
    conventions_tex = (
        "All Dice and IoU values are \\emph{{strict}}: each pixel is predicted as its argmax class, true and false "
        "positives are counted over the whole {split} split at once (global counts, not per image or per batch), "
        "and the mean runs over the classes present in the ground truth; a class absent from both prediction and "
        "ground truth has no defined score and is left out of every mean. The foreground mean excludes the "
        "background (class~0). The course's soft Dice per batch (Dice of the softmax probabilities per batch, "
        "smoothing~1, averaged over batches) is listed only for comparison with the course's own numbers: it moves "
        "with the batch composition, is not comparable across reports, and is never the headline metric.")

    def reached(self, summary: dict) -> tuple[str, object, list[tuple[str, object]]]:
        """The strict mean Dice, then the foreground's (where there is one), mean IoU and pixel accuracy."""
        m = summary.get("metrics", {})
        if m.get("dice_mean") is None:
            return super().reached(summary)
        fg = [("foreground", m["dice_mean_foreground"])] if m.get("dice_mean_foreground") is not None else []
        return "a strict mean Dice of", m["dice_mean"], [*fg, ("mean IoU", m.get("iou_mean")),
                                                         ("pixel accuracy", m.get("pixel_accuracy"))]

    def ignore_index(self, data: SegData) -> int | None:
        return data.ignore_index

    def make_batch(self, data: SegData, idx: torch.Tensor, rt: Placement, norm: Norm,
                   aug: AugmentConfig | None = None, g: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotations bring in pixels labelled ignore_index where the data has one (else the mask is reflected
        with the image: cnnlab.data.augment)."""
        return label_batch(data.images, data.masks, idx, rt, norm, aug, g, True, data.ignore_index)

    def patches(self, data: SegData, idx: torch.Tensor, patch: tuple[int, int], foreground: float,
                g: torch.Generator) -> SegData:
        """One random patch per sample in idx, never leaving its image; `foreground` of them centred on a
        non-background class drawn uniformly among those present (cnnlab.data.patches)."""
        plan = plan_patches(data.masks, data.sizes, idx, patch, foreground, g, data.ignore_index)
        fill = data.ignore_index if data.ignore_index is not None else 0
        x, m = cut_patches(data.images, data.masks, data.sizes, plan, patch, fill)
        return SegData(x, m, [data.names[i] for i in idx.tolist()], data.class_names, data.ignore_index)

    def shrink_batch(self, x: torch.Tensor, y: torch.Tensor, size: tuple[int, int]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks by nearest label (no blended classes; ignored pixels stay ignored), images area-averaged."""
        y = torch.nn.functional.interpolate(y[:, None].float(), size=size, mode="nearest-exact")[:, 0].to(y.dtype)
        return shrink_images(x, size), y

    def tally(self, data: SegData, loss_fn: Loss) -> SegTally:
        return SegTally(loss_fn, data.class_names, len(data), data.ignore_index)

    def selection_score(self, metrics: dict, select: str = "auto") -> float:
        """Strict mean Dice, or with train.select 'miou' the strict mean IoU over the classes in the ground truth."""
        v = metrics.get("iou_mean" if select == "miou" else "dice_mean")
        return -float("inf") if v is None else v

    def checkpoint_entries(self, recipe: Recipe, train: SegData) -> dict:
        """The data set's own mask encoding, so that predicted masks use its pixel values even after the data
        moved: as the reader found it in the files (folders), else from the format (mapping.json, VOC palette)."""
        own = train.mask_encoding
        if isinstance(own, dict) and len(own.get("values", [])) == len(train.class_names):
            return {"mask_encoding": dict(own)}
        return {"mask_encoding": resolve_encoding(recipe, train.class_names, {})[0].describe()}

    def predicted_samples(self, split: SegData) -> int:
        return len(split)

    def prediction_batch(self, logits: torch.Tensor) -> torch.Tensor:
        """Argmax label maps (B x H x W uint8)."""
        return class_argmax(logits, 1).to(torch.uint8)

    def test_entries(self, split: SegData, cm: ConfusionMatrix | None, pred: torch.Tensor | None) -> dict:
        """Per-class Dice/IoU and ground-truth pixel share, the classes in the ground truth but never predicted;
        binary tasks add per-image and boundary scores of the foreground."""
        out = {"per_class": cm.summary(split.class_names)["per_class"]}
        for name, share in zip(split.class_names, pixel_shares(cm)):
            out["per_class"][name]["pixel_share"] = share
        out["never_predicted"] = never_predicted(cm, split.class_names)  # warned about (metrics.per_class)
        if pred is not None and len(split.class_names) == 2:
            out["binary"] = binary_summary(pred, split.masks, split.ignore_index)
        elif pred is not None:  # multi-class: each image's mean over its classes, averaged (metrics.per_image)
            out["per_image"] = per_image_summary(pred, split.masks, split.class_names, split.ignore_index)
        return out

    def native_keeper(self, native: SegData) -> NativeKeeper:
        return NativeKeeper(self, native)

    def evaluate_entries(self, split: SegData, pred: torch.Tensor | None, entries: dict, at: str) -> dict:
        """Binary segmentation: the foreground's Dice and IoU both ways, global and as means over the images (polyp
        papers report the per-image mean)."""
        if pred is None or len(split.class_names) != 2:
            return {}
        name = split.class_names[1]
        return {"foreground": foreground_scores(pred, split.masks, split.ignore_index, entries["per_class"], name, at)}

    def figures(self, fig_dir: Path, split: SegData, pred: torch.Tensor | None,
                cm: ConfusionMatrix | None) -> list[Path]:
        """The worst and best images by the per-image Dice the report states."""
        if pred is None:
            return []
        scores, score_name = overlay_scores(pred, split.masks, len(split.class_names), split.ignore_index)
        return [seg_overlays(split, pred, scores, fig_dir / "overlays.png", score_name=score_name)]

    def mask_encoding(self, encoding: MaskEncoding) -> dict:
        return encoding.describe()

    def export_output(self) -> str:
        return ("logits N x K x H x W; softmax over dim 1, map back to the image (preprocess.output_to_image), "
                "argmax gives class indices")

    def planned_outputs(self, out: Path, stems: list[str], overlays: bool = True) -> list[Path]:
        return [p for s in stems for p in _outputs(out, s, overlays)]

    def write_prediction(self, out: Path, stem: str, path: Path, image: torch.Tensor, probs: torch.Tensor,
                         class_names: list[str], encoding: MaskEncoding, overlays: bool = True) -> dict:
        """Mask in the data set's encoding, overlay (unless left out) and class areas for one image."""
        mask = class_argmax(probs, 0)
        mask_p, areas_p = _outputs(out, stem, overlays=False)
        overlay_p = out / f"{stem}_overlay.png" if overlays else None
        encoding.image(mask.numpy()).save(mask_p)
        if overlay_p is not None:
            # compress_level 1: the overlay is a photograph-like RGB image; zlib's default level took ~100 ms of a
            # ~200 ms prediction per image (benchmarks/predict_speed.py), level 1 about 20 ms for a larger file
            present = torch.unique(mask).tolist()  # the legend names the classes this prediction holds
            Image.fromarray(with_legend(overlay(image, mask, len(class_names)), class_names, present)).save(
                overlay_p, compress_level=1)
        counts = torch.bincount(mask.reshape(-1), minlength=len(class_names)).tolist()
        total = mask.numel()
        areas = {"image": str(path), "height": int(mask.shape[0]), "width": int(mask.shape[1]),
                 "mask": mask_p.name, "mask_encoding": encoding.kind,
                 "classes": {n: {"pixels": c, "fraction": c / total} for n, c in zip(class_names, counts)}}
        areas_p.write_text(json.dumps(areas, indent=2))
        return {"image": str(path), "mask": mask_p.name, "overlay": overlay_p.name if overlay_p else None,
                "areas": areas_p.name}

    def predict_lines(self, result: dict, out: str, overlays: bool = True) -> list[str]:
        """Where the masks, overlays and class areas went, and how the masks encode classes."""
        what = "overlays and class areas" if overlays else "class areas"
        return [f"wrote masks ({result['mask_encoding']['kind']}), {what} of {len(result['images'])} images to {out}"]


class NativeKeeper(PredictionKeeper):
    """Per batch of logits at the trained size: each image's logits upsampled (bilinear) to the native split's size,
    its argmax counted against the native masks, one image at a time (never a batch's logits at native size at
    once); the prediction is the label maps at native size."""

    def __init__(self, task: Task, native: SegData) -> None:
        super().__init__(task, len(native))
        self.data, self.size = native, tuple(native.masks.shape[-2:])
        self.cm = ConfusionMatrix(len(native.class_names), native.ignore_index)

    def __call__(self, out: torch.Tensor, idx: torch.Tensor) -> None:
        for logits, i in zip(out.float(), idx.tolist()):
            up = F.interpolate(logits[None], size=self.size, mode="bilinear", align_corners=False)
            label = class_argmax(up, 1)[0]
            self.cm.update(label, self.data.masks[i].to(label.device))
            self.parts.append(label.to(torch.uint8).cpu()[None])

    def result(self) -> tuple[dict, ConfusionMatrix]:
        """The strict metrics from the native counts (the split's summary, as the tally writes them) and the
        counts."""
        return {k: v for k, v in self.cm.summary(self.data.class_names).items() if k != "per_class"}, self.cm
