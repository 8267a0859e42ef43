"""CIFAR-100 "python version": pickled dicts in cifar-100-python/{train,test,meta}, read locally, no download.

The data set is distributed only as Python pickles, so reading it means unpickling. We do not call
torchvision.datasets.CIFAR100 itself: it unpickles with the unrestricted `pickle.load` (which can run
arbitrary code from a tampered file), checks the md5 of the official archive (so synthetic or re-packed
files are refused), and keeps only the fine labels. Instead we follow torchvision's layout constants and
unpickle with an allow-list that admits nothing but numpy array reconstruction.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.formats._cls_common import (
    is_junk,
    load_disk_or_resplit,
    resplit_names,
    summarise_split,
    unknown_options,
)
from cnnlab.data.types import ClsData
from cnnlab.errors import DataError

FOLDER = "cifar-100-python"  # torchvision.datasets.CIFAR100.base_folder
SPLITS = ("train", "test")   # the file names are the split names
LABEL_KEYS = {"fine": ("fine_labels", "fine_label_names"), "coarse": ("coarse_labels", "coarse_label_names")}
EXPECTED = f"{FOLDER}/train, {FOLDER}/test and {FOLDER}/meta (the CIFAR-100 python version), in the folder or below it"

# Everything a numpy-array pickle needs (numpy 1.x and 2.x module names), and nothing that runs code.
_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # protocol-2 pickles written by Python 3 store bytes this way
}


class _Refused(pickle.UnpicklingError):
    """A pickle asked for something outside the allow-list."""


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Refuses every global outside the numpy allow-list."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise _Refused(f"it would load '{module}.{name}', which is not a numpy array part")


def _unpickle(path: Path) -> dict:
    """One CIFAR pickle (latin1, as the Python 2 originals need), or one line naming the file."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayOnlyUnpickler(f, encoding="latin1").load()
    except _Refused as e:
        raise DataError(f"{path}: refused, {str(e)[:100]}", "CIFAR pickles hold only arrays, lists and names; "
                        "this file is not one (or was tampered with)") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, OSError,
            MemoryError) as e:
        raise DataError(f"{path}: truncated or corrupt pickle ({type(e).__name__})", "fetch the file again") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: holds a {type(obj).__name__}, expected a CIFAR dict")
    return obj


def _folder(root: Path) -> Path:
    """Accept the cifar-100-python folder itself or its parent."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found", f"expected {EXPECTED}")
    for cand in (root / FOLDER, root):
        if (cand / "meta").is_file() or any((cand / s).is_file() for s in SPLITS):
            return cand
    raise DataError(f"{root}: no CIFAR-100 pickles found", f"expected {EXPECTED}")


def _class_names(folder: Path, labels: str) -> list[str]:
    meta_path = folder / "meta"
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: not found (it holds the class names)", f"expected {EXPECTED}")
    key = LABEL_KEYS[labels][1]
    names = _unpickle(meta_path).get(key)
    if not isinstance(names, list) or not names:
        raise DataError(f"{meta_path}: no '{key}' list", "is this CIFAR-10's batches.meta instead of CIFAR-100?")
    return [str(n) for n in names]


def _load_disk_split(root: Path, split: str, labels: str) -> ClsData:
    folder = _folder(root)
    if split not in SPLITS:
        raise DataError(f"{root}: CIFAR-100 has no split '{split}'", "valid: train, test (or define one with resplit)")
    path = folder / split
    if not path.is_file():
        raise DataError(f"{path}: not found", f"splits on disk: {', '.join(list_splits(root)) or 'none'}")
    class_names = _class_names(folder, labels)
    entry = _unpickle(path)
    data, targets = entry.get("data"), entry.get(LABEL_KEYS[labels][0])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        shape = getattr(data, "shape", None)
        raise DataError(f"{path}: 'data' must be a uint8 array N x 3072, got {shape}")
    if targets is None or len(targets) != data.shape[0]:
        raise DataError(f"{path}: '{LABEL_KEYS[labels][0]}' missing or not one per image")
    y = torch.as_tensor(np.asarray(targets, dtype=np.int64))
    if y.numel() and (y.min() < 0 or y.max() >= len(class_names)):
        raise DataError(f"{path}: label {int(y.max())} outside 0..{len(class_names) - 1}")
    # Rows are the red, green and blue planes of a 32x32 image, one after the other.
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    files = entry.get("filenames")
    names = [str(n) for n in files] if isinstance(files, list) and len(files) == len(y) else \
        [f"{split}-{i:05d}" for i in range(len(y))]
    return ClsData(images, y, names, class_names)


def load(root: Path, split: str, size: list[int] | None = None, labels: str = "fine",
         resplit: dict | None = None, **unknown) -> ClsData:
    """Read one split; labels='fine' (100 classes) or 'coarse' (20 superclasses)."""
    unknown_options(unknown, ["labels", "resplit"], "CIFAR-100")
    if labels not in LABEL_KEYS:
        raise DataError(f"data.options.labels must be fine or coarse, got {labels!r}")
    root = Path(root)
    return load_disk_or_resplit(lambda s: _load_disk_split(root, s, labels), split, size, resplit,
                                list_splits(root), str(root))


def list_splits(root: Path, **options) -> list[str]:
    """Splits whose pickle is present, or the resplit's splits."""
    if isinstance(options.get("resplit"), dict):
        return resplit_names(options["resplit"])
    folder = _folder(Path(root))
    return [s for s in SPLITS if (folder / s).is_file()]


def check(root: Path, labels: str = "fine") -> str:
    """Counts and class shares per split, and junk files beside the pickles."""
    folder = _folder(Path(root))
    lines = [f"CIFAR-100 pickles in {folder} ({labels} labels)"]
    for split in list_splits(root):
        lines.append(summarise_split(split, _load_disk_split(Path(root), split, labels)))
    missing = [s for s in SPLITS if not (folder / s).is_file()]
    if missing:
        lines.append(f"  missing split file(s): {', '.join(missing)}")
    junk = [p.name for p in folder.iterdir() if is_junk(p.name)]
    if junk:
        lines.append(f"  skipped {len(junk)} junk file(s)")
    return "\n".join(lines)
