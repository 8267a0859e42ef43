"""On-disk formats: name -> reader module exposing load(root, split, size, **options), list_splits, check."""
from __future__ import annotations

from types import ModuleType

from . import endovis, endovis_color, glas

FORMATS: dict[str, ModuleType] = {"endovis": endovis, "endovis_colorization": endovis_color,
                                 "glas": glas}
