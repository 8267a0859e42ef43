"""Study figures (loss curves overlaid per variant, headline metric with error bars, differences to the baseline)
and the per-class Dice bar chart of a run.

One colour per variant (tab10 in the study's variant order) in every study figure; per-class bars use the class
colours of cnnlab.figures.palette, as overlays do. Matplotlib's object API (Figure + Agg canvas) keeps this free of
pyplot state; figures.io.save_figure writes them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from cnnlab.engine.run_files import read_history
from cnnlab.figures.io import save_figure
from cnnlab.figures.per_class import per_class_dice_bars  # noqa: F401 (drawn with the run; used here by latex)
from cnnlab.figures.text import literal

VARIANT_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                  "tab:gray", "tab:olive", "tab:cyan"]
STUDY_DPI = 100  # PNG for report.md/html, PDF for the LaTeX report (the suffix decides)


def variant_color(variants: list[str], name: str) -> str:
    """The colour of a variant, the same in every study figure."""
    return VARIANT_COLORS[variants.index(name) % len(VARIANT_COLORS)]


def _mean_curve(curves: list[list[float]]) -> np.ndarray:
    """Mean per epoch over seeds that reached that epoch (early stopping makes curves of unequal length)."""
    longest = max(len(c) for c in curves)
    grid = np.full((len(curves), longest), np.nan)
    for i, c in enumerate(curves):
        grid[i, : len(c)] = c
    counts = np.isfinite(grid).sum(0)
    # epochs where every seed's loss is nan (a diverged run) stay nan instead of warning
    return np.where(counts > 0, np.nansum(grid, 0) / np.maximum(counts, 1), np.nan)


def _curves_panel(ax, results: dict, label: str, series: tuple) -> None:
    """One grid point's curves: per variant a colour, thin lines per seed, a thick line for their mean."""
    longest = 1
    for r in (r for r in results["rows"] if r["label"] == label):
        color = variant_color(results["variants"], r["variant"])
        hists = [h for h in (read_history(Path(d)) for d in r["run_dirs"].values()) if h]
        for key, style, mark in series:
            curves = [[row[key] for row in h] for h in hists if key in h[0]]
            for c in curves:
                ax.plot(range(1, len(c) + 1), c, style, color=color, alpha=0.25, lw=0.8, marker=mark, ms=2)
            if curves:
                m = _mean_curve(curves)
                ax.plot(range(1, len(m) + 1), m, style, color=color, lw=2, marker=mark, ms=4)
                longest = max(longest, len(m))
    ax.set_xlim(0.5, longest + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.grid(alpha=0.3)


PAPER_WIDTH = 5.5  # inches: the text width of an article or NeurIPS page


def study_loss_curves(results: dict, path: Path, metric: str | None = None, metric_label: str = "") -> Path:
    """Training (solid) and validation (dashed) loss per epoch, one column per grid point, one colour per variant,
    thin lines single seeds, thick lines their mean; a second row shows the validation `metric` per epoch, which
    (unlike losses of different loss functions) compares across variants."""
    labels = list(dict.fromkeys(r["label"] for r in results["rows"]))
    first_rows = [h[0] for r in results["rows"] for d in r["run_dirs"].values() if (h := read_history(Path(d)))]
    has_metric = metric is not None and any(f"val_{metric}" in row for row in first_rows)
    # a paper's 5.5 in text width, whatever the number of grid points: with a metric, one row per grid point (loss,
    # metric); without, two grid points per row. Wider figures were shrunk to the column and their text with them.
    cols = 2 if has_metric or len(labels) > 1 else 1
    rows = len(labels) if has_metric else -(-len(labels) // cols)
    fig = Figure(figsize=(PAPER_WIDTH, 2.6 * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, label in enumerate(labels):
        loss_ax = axes[i, 0] if has_metric else axes[i // cols, i % cols]
        _curves_panel(loss_ax, results, label, (("train_loss", "-", "o"), ("val_loss", "--", "s")))
        loss_ax.set(xlabel="epoch", ylabel="loss", title=literal(label.replace("__", ", ")) or "all runs")
        if has_metric:
            _curves_panel(axes[i, 1], results, label, ((f"val_{metric}", "--", "s"),))
            axes[i, 1].set(xlabel="epoch", ylabel=f"validation {metric_label or metric}")
    for ax in axes.flat[len(labels) * (2 if has_metric else 1):]:
        ax.set_visible(False)  # the empty cell of an odd number of grid points
    handles = [Line2D([], [], color=variant_color(results["variants"], v), lw=2, label=literal(v))
               for v in results["variants"]]
    handles += [Line2D([], [], color="black", ls="-", marker="o", ms=4, label="training"),
                Line2D([], [], color="black", ls="--", marker="s", ms=4, label="validation")]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 6), fontsize=8, bbox_to_anchor=(0.5, 1.06))
    fig.tight_layout()
    return save_figure(fig, path, dpi=STUDY_DPI)


def headline_bars(results: dict, metric: str, label: str, path: Path) -> Path:
    """Mean of one metric per variant and grid point, error bars = sample std over seeds, dots = single seeds."""
    rows = results["rows"]
    groups = list(dict.fromkeys(r["label"] for r in rows))
    variants = results["variants"]
    width = 0.8 / len(variants)
    fig = Figure(figsize=(PAPER_WIDTH, 3.6))  # the text width: more bars are narrower, the text keeps its size
    ax = fig.add_subplot()
    for j, v in enumerate(variants):
        for i, g in enumerate(groups):
            r = next((r for r in rows if r["variant"] == v and r["label"] == g), None)
            st = r["stats"].get(metric) if r else None
            if not st or st["mean"] is None:
                continue
            x = i + (j - (len(variants) - 1) / 2) * width
            ax.bar(x, st["mean"], width * 0.9, color=variant_color(variants, v), label=v if i == 0 else None,
                   yerr=st["std"] or 0.0, capsize=3, ecolor="black")
            vals = list(st["values"].values())
            ax.scatter([x] * len(vals), vals, s=10, color="black", zorder=3)
    ax.set_xticks(range(len(groups)), [literal(g.replace("__", "\n")) or "all runs" for g in groups])
    ax.set(xlabel="grid point" if any(groups) else "", ylabel=label,
           title=f"{label}: mean ± std over seeds (dots: single seeds)")
    if all(0 <= v <= 1 for r in rows for v in r["stats"].get(metric, {}).get("values", {}).values()):
        ax.set_ylim(0, 1)
    ax.legend(title="variant", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path, dpi=STUDY_DPI)


def difference_plot(results: dict, metric: str, label: str, path: Path) -> Path:
    """Each variant minus the baseline at the same grid point: mean paired difference with its 95% interval."""
    rows = [r for r in results["rows"] if r["vs_baseline"] and r["vs_baseline"][metric]["mean"] is not None]
    fig = Figure(figsize=(6.4, 0.45 * max(len(rows), 1) + 1.6))
    ax = fig.add_subplot()
    for y, r in enumerate(rows):
        d = r["vs_baseline"][metric]
        color = variant_color(results["variants"], r["variant"])
        if d["low"] is not None:
            ax.errorbar(d["mean"], y, xerr=[[d["mean"] - d["low"]], [d["high"] - d["mean"]]], fmt="o", color=color,
                        capsize=4)
        else:
            ax.plot(d["mean"], y, "o", color=color, mfc="white")
    ax.axvline(0, color="black", lw=1)
    ax.invert_yaxis()  # first row on top, as in the table
    ax.set_yticks(range(len(rows)), [literal(f"{r['variant']} {r['label'].replace('__', ', ')}") for r in rows])
    ax.set(xlabel=f"Δ {label} vs '{results['baseline']}' (paired over seeds)",
           title="difference to the baseline, 95% t-interval (open: one pair, no interval)")
    ax.grid(axis="x", alpha=0.3)
    if not rows:
        ax.text(0.5, 0.5, "no finished pairs yet", transform=ax.transAxes, ha="center")
    return save_figure(fig, path, dpi=STUDY_DPI)
