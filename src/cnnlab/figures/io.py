"""The one way cnnlab saves a figure: matplotlib's object API (a Figure on an Agg canvas, no pyplot state, safe in
threads, tests and headless runs), the format from the file suffix (PNG for run dirs and reports, PDF for the
LaTeX report), the folder created first.

PDFs embed TrueType (Type 42) fonts instead of matplotlib's default Type 3, which many conference submission
checks (NeurIPS, IEEE, ACM) reject; PNGs are unaffected by that setting."""
from __future__ import annotations

from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

VECTOR_FONTS = {"pdf.fonttype": 42, "ps.fonttype": 42}


def save_figure(fig: Figure, path: str | Path, dpi: int = 110, tight: bool = True) -> Path:
    """Write fig to path (format from the suffix), creating the folder; tight: crop to the drawn content
    (bbox_inches='tight'), else keep the figure size as laid out."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    with matplotlib.rc_context(VECTOR_FONTS):
        fig.savefig(path, dpi=dpi, bbox_inches="tight" if tight else None)
    return path
