"""Synthetic data sets written in the real on-disk formats (demo and tests)."""
from __future__ import annotations

from functools import partial
from typing import Callable

from cnnlab.data.synthetic import classification, endovis, glas, street, voc

SYNTHETIC: dict[str, Callable] = {
    "endovis": endovis.write, "glas": glas.write, "voc": voc.write,
    "street": street.write,  # image/mask folders (cnnlab new --images DIR/images --masks DIR/masks); issue 39
    **{name: partial(classification.write, format=name) for name in classification.WRITERS},
}
