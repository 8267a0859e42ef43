"""Fashion-MNIST: the same IDX layout as MNIST (same file names), with clothing class names."""
from __future__ import annotations

from pathlib import Path

from cnnlab.data.formats import mnist
from cnnlab.data.formats._cls_common import unknown_options
from cnnlab.data.types import ClsData

# Fixed by the data set's label order; spelled as in torchvision.datasets.FashionMNIST.classes.
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def load(root: Path, split: str, size: list[int] | None = None, resplit: dict | None = None,
         **unknown) -> ClsData:
    """Read one split (see mnist.load for the resplit option)."""
    unknown_options(unknown, ["resplit"], "Fashion-MNIST")
    return mnist.load(root, split, size, resplit=resplit, class_names=CLASS_NAMES)


def list_splits(root: Path, **options) -> list[str]:
    """Complete splits on disk, or the resplit's splits."""
    return mnist.list_splits(root, **options)


def check(root: Path) -> str:
    """Counts and class shares per split."""
    return mnist.check(root, class_names=CLASS_NAMES).replace("MNIST-style", "Fashion-MNIST", 1)
