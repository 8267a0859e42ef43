"""Figures for binary segmentation: the boundary-band comparison (e.g. skip vs no skip).

Colour code in prediction panels: white = predicted foreground, yellow tint = the band around the truth's boundary
scored by boundary Dice, red = false positive, blue = false negative (inside the band). Figures are drawn with
matplotlib's object API and saved by figures.io.save_figure (no pyplot state, safe in threads and headless runs).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from cnnlab.figures.io import save_figure
from cnnlab.figures.palette import display_image
from cnnlab.figures.text import literal
from cnnlab.metrics.boundary import boundary_band, boundary_dice

BAND_TINT = np.array([255, 220, 0], dtype=np.float64)
FALSE_POS = np.array([230, 40, 40], dtype=np.uint8)
FALSE_NEG = np.array([40, 120, 255], dtype=np.uint8)


def mask_panel(pred: np.ndarray, truth: np.ndarray, band: np.ndarray | None = None,
               errors_in: np.ndarray | None = None) -> np.ndarray:
    """RGB panel: prediction in white, optional band tint, false positives red and false negatives blue."""
    canvas = np.where(pred[..., None], 255.0, 0.0) * np.ones(3)
    if band is not None:
        canvas[band] = 0.55 * canvas[band] + 0.45 * BAND_TINT
    where = np.ones_like(pred) if errors_in is None else errors_in
    canvas[pred & ~truth & where] = FALSE_POS
    canvas[~pred & truth & where] = FALSE_NEG
    return canvas.astype(np.uint8)



def _axes_grid(fig: Figure, rows: int, cols: int) -> np.ndarray:
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return axes


def boundary_figure(images: torch.Tensor, truth: torch.Tensor, preds: dict[str, torch.Tensor],
                    path: str | Path, names: Sequence[str] | None = None, width: int = 3,
                    indices: Sequence[int] | None = None, n: int = 4) -> Path:
    """Image, truth with its boundary band, and each prediction (e.g. {'no skip': ..., 'skip': ...}) with the band
    and its errors there, titled with boundary Dice; rows are `indices` (default: the first n images)."""
    if not preds:
        raise ValueError("boundary_figure needs at least one prediction")
    t = truth != 0
    band = boundary_band(t, width)
    scores = {k: boundary_dice(p, t, width) for k, p in preds.items()}
    rows = list(indices) if indices is not None else list(range(min(n, len(t))))
    fig = Figure(figsize=(2.4 * (2 + len(preds)), 2.4 * len(rows) + 0.5))
    axes = _axes_grid(fig, len(rows), 2 + len(preds))
    for r, i in enumerate(rows):
        ti, bi = t[i].cpu().numpy(), band[i].cpu().numpy()
        axes[r, 0].imshow(display_image(images[i]))
        axes[r, 0].set_title(literal(names[i]) if names else f"image {i}", fontsize=8)
        axes[r, 1].imshow(mask_panel(ti, ti, bi))
        axes[r, 1].set_title("truth + band", fontsize=8)
        for c, (label, p) in enumerate(preds.items(), start=2):
            pi = (p[i] != 0).cpu().numpy()
            axes[r, c].imshow(mask_panel(pi, ti, bi, errors_in=bi))
            axes[r, c].set_title(f"{label}: bDice {scores[label][i]:.3f}", fontsize=8)
    means = ", ".join(f"{k} {v.mean():.3f}" for k, v in scores.items())
    fig.suptitle(f"boundary-band Dice (band {width}px, mean over {len(t)} images): {means}", fontsize=9)
    return save_figure(fig, path)
