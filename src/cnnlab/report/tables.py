"""Short results tables for the terminal, from a run's summary.json."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from cnnlab.engine.run_files import require_summary
from cnnlab.logs import console as default_console
from cnnlab.metrics.names import METRICS, PER_CLASS_LABELS, row_label
from cnnlab.metrics.per_image import per_image_line
from cnnlab.report.common import fmt


def print_run_table(run_dir: Path, console: Console | None = None) -> None:
    """Headline metrics and per-class Dice of a finished run, naming the metric conventions."""
    console = console or default_console  # tables wrap at its width, as they did on a console of their own
    s = require_summary(Path(run_dir), f"finish it with cnnlab train --resume {run_dir}")
    m = s["metrics"]
    console.print(f"[bold]{s['name']}[/bold]: {s['evaluated_on']} split ({s['n_images']} images), "
                  f"best epoch {s['best_epoch']} of {s['epochs_run']}", soft_wrap=False)
    t = Table()
    t.add_column("metric")
    t.add_column("value", justify="right")
    for key in METRICS:  # the report's rows, labelled as in report.md (metrics.names)
        if key in m:
            t.add_row(row_label(key), fmt(m[key]))
    console.print(t, soft_wrap=False)
    if "per_class" in s:
        print_per_class(s["per_class"], console)
    if "binary" in s:
        b = s["binary"]
        console.print(f"per-image Dice {b['per_image_dice_mean']:.4f}, "
                      f"boundary-band Dice {b['boundary_dice_mean']:.4f} "
                      f"(band {b['boundary_band_width']} px), boundary F1 {b['boundary_f1_mean']:.4f}", soft_wrap=False)
    if "per_image" in s:  # multi-class (metrics.per_image)
        console.print(per_image_line(s["per_image"]), soft_wrap=False)
    if "fit_note" in s:
        console.print(s["fit_note"], soft_wrap=False)
    if "parameters" in s:
        p = s["parameters"]
        console.print(f"learnable parameters: {p['trainable']:,} trainable of {p['total']:,}", soft_wrap=False)
    console.print(f"train {s['train_seconds']:.0f} s at {s['train_images_per_s']:.1f} img/s "
                  f"({s['device']}, {s['precision']}); run dir: {run_dir}", soft_wrap=False)


def print_per_class(per_class: dict, console: Console) -> None:
    """The per-class table: Dice, IoU, share of the ground-truth pixels (where known), in ground truth."""
    share = any("pixel_share" in v for v in per_class.values())
    pc = Table()
    keys = ("dice", "iou", *(("pixel_share",) if share else ()), "in_ground_truth")
    for col in ("class", *(PER_CLASS_LABELS[k] for k in keys)):
        pc.add_column(col, justify="left" if col == "class" else "right")
    for name, v in per_class.items():
        cells = [fmt(v["dice"]), fmt(v["iou"])] + ([f"{v.get('pixel_share', 0):.2%}"] if share else [])
        pc.add_row(name, *cells, "yes" if v["in_ground_truth"] else "no")
    console.print(pc, soft_wrap=False)


def per_class_lines(per_class: dict) -> list[str]:
    """The per-class table as plain text lines (`cnnlab evaluate`): IoU, Dice and share of the ground-truth pixels,
    one class a line, so that no terminal width wraps a column head."""
    width = max(len("class"), *(len(n) for n in per_class))
    heads = [PER_CLASS_LABELS[k] for k in ("iou", "dice", "pixel_share")]
    lines = [f"{'class':<{width}}  " + "  ".join(f"{h:>15}" for h in heads)]
    for name, v in per_class.items():
        share = v.get("pixel_share")
        cells = [fmt(v.get("iou")), fmt(v.get("dice")), "n/a" if share is None else f"{share:.2%}"]
        lines.append(f"{name:<{width}}  " + "  ".join(f"{c:>15}" for c in cells))
    return lines
