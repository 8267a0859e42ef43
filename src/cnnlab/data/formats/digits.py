"""scikit-learn's bundled 8x8 handwritten digits (1,797 real images): the default that needs no download.

The data ship inside scikit-learn, so `root` is not read; the train/test split is seeded and stratified.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnlab.data.formats._cls_common import class_shares, resize_images, unknown_options
from cnnlab.data.types import ClsData
from cnnlab.errors import DataError

SPLITS = ("train", "test")


def _all() -> tuple[np.ndarray, np.ndarray]:
    """Images as uint8 (the stored values are 0..16) and labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("the digits data set ships with scikit-learn, which is not installed",
                        "pip install scikit-learn") from None
    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return images, bunch.target.astype(np.int64)


def _split_indices(labels: np.ndarray, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train, test = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=labels)
    return {"train": np.sort(train), "test": np.sort(test)}


def load(root: Path | None, split: str, size: list[int] | None = None, test_fraction: float = 0.25,
         seed: int = 0, **unknown) -> ClsData:
    """One split of the seeded, stratified train/test division; root is ignored."""
    unknown_options(unknown, ["test_fraction", "seed"], "digits")
    if split not in SPLITS:
        raise DataError(f"digits has no split '{split}'", "valid: train, test")
    if not 0 < float(test_fraction) < 1:
        raise DataError(f"data.options.test_fraction must be in (0, 1), got {test_fraction!r}")
    images, labels = _all()
    idx = _split_indices(labels, float(test_fraction), int(seed))[split]
    data = ClsData(torch.from_numpy(images[idx]).unsqueeze(1).contiguous(), torch.from_numpy(labels[idx]),
                   [f"digit-{i:04d}" for i in idx.tolist()], [str(i) for i in range(10)],
                   [f"scikit-learn digits, {split} = {len(idx)} of {len(labels)} (seed {seed}, stratified)"])
    data.images = resize_images(data.images, size)
    return data


def list_splits(root: Path | None = None, **options) -> list[str]:
    """Always train and test."""
    return list(SPLITS)


def check(root: Path | None = None) -> str:
    """Counts and class shares of the default split."""
    lines = ["scikit-learn digits (bundled, 8x8 grey; root is not read)"]
    for split in SPLITS:
        d = load(root, split)
        lines.append(f"  {split}: {len(d)} images 1x8x8; classes {class_shares(d.labels, d.class_names)}")
    return "\n".join(lines)
