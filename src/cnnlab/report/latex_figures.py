"""Vector (PDF) figures for the LaTeX report, re-plotted from a run's metrics.csv so that a paper gets sharp curves
at any zoom. Only the run folder is read: no model, no engine. Saved by figures.io.save_figure, which embeds
TrueType fonts in PDFs (the format follows the file suffix)."""
from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cnnlab.figures.io import save_figure
from cnnlab.metrics.names import CURVE_METRICS, label

PDF_DPI = 100  # matplotlib's figure dpi: only what a PDF rasterises (nothing here) depends on it


def _series(history: list[dict], key: str) -> tuple[list[float], list[float]]:
    """Epochs and values of one column, skipping epochs where it is missing (nan)."""
    pts = [(h["epoch"], h[key]) for h in history if key in h and not math.isnan(h[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def curve_metric(history: list[dict]) -> tuple[str, str] | None:
    """(metrics.csv column, axis label) of the validation metric drawn beside the losses, or None."""
    return next(((f"val_{m}", f"validation {label(m)}") for m in CURVE_METRICS if _series(history, f"val_{m}")[0]),
                None)


def run_curves_pdf(history: list[dict], path: Path) -> Path:
    """Training and validation loss per epoch (left) and the validation headline metric (right, where recorded):
    two panels instead of twin axes, which read better at a paper's column width."""
    metric = curve_metric(history)
    fig = Figure(figsize=(5.5 if metric else 3.4, 2.3))  # for a 5.5 in text width
    axes = fig.subplots(1, 2 if metric else 1, squeeze=False)[0]
    ax = axes[0]
    for key, style, legend in (("train_loss", "o-", "training"), ("val_loss", "s--", "validation")):
        x, y = _series(history, key)
        if x:
            ax.plot(x, y, style, ms=3, lw=1.2, label=legend)
    ax.set(xlabel="epoch", ylabel="loss")
    ax.legend(fontsize=8, frameon=False)
    if metric:
        x, y = _series(history, metric[0])
        axes[1].plot(x, y, "^-", ms=3, lw=1.2, color="tab:green")
        axes[1].set(xlabel="epoch", ylabel=metric[1])
        if all(0 <= v <= 1 for v in y):
            axes[1].set_ylim(0, 1)
    for a in axes:
        a.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        a.grid(alpha=0.3)
        a.tick_params(labelsize=8)
        a.xaxis.label.set_size(9)
        a.yaxis.label.set_size(9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=PDF_DPI)
