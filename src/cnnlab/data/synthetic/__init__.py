"""Synthetic data sets written in the real on-disk formats (demo and tests)."""
from __future__ import annotations

from typing import Callable

from . import endovis, glas

SYNTHETIC: dict[str, Callable] = {"endovis": endovis.write, "glas": glas.write}
