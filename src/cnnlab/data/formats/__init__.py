"""On-disk formats: name -> reader module exposing load(root, split, size, **options), list_splits, check."""
from __future__ import annotations

from types import ModuleType

from cnnlab.data.formats import (
                                 cifar,
                                 digits,
                                 endovis,
                                 endovis_color,
                                 fashion_mnist,
                                 folders,
                                 glas,
                                 imagefolder,
                                 mnist,
                                 voc,
)

FORMATS: dict[str, ModuleType] = {"endovis": endovis, "endovis_colorization": endovis_color,
                                 "glas": glas,
                                 "folders": folders, "mnist": mnist, "fashion_mnist": fashion_mnist,
                                 "cifar100": cifar, "imagefolder": imagefolder, "digits": digits, "voc": voc}
