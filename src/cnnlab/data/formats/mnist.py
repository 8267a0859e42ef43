"""MNIST-style IDX files (gz or not), parsed by torchvision's IDX reader from a local folder, no download.

Accepted layouts: the four IDX files directly in `root`, or torchvision's `root/MNIST/raw/`
(`root/FashionMNIST/raw/` for Fashion-MNIST). We call torchvision's `read_image_file` /
`read_label_file` rather than the `MNIST` dataset class because the class insists on the md5 of the
official archives, which re-compressed copies (like ../shared/data/mnist_test) and synthetic files fail.
"""
from __future__ import annotations

import gzip
import shutil
import tempfile
import zlib
from pathlib import Path

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

DIGIT_NAMES = [str(i) for i in range(10)]
# The on-disk split name -> file prefix used by the IDX distribution.
PREFIXES = {"train": "train", "test": "t10k"}
EXPECTED = ("train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
            "t10k-labels-idx1-ubyte[.gz] directly in the folder or in MNIST/raw/ (FashionMNIST/raw/)")


def _idx_dir(root: Path) -> Path:
    """The folder that holds the IDX files, among the layouts we accept."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found", f"expected {EXPECTED}")
    for cand in (root, root / "MNIST" / "raw", root / "FashionMNIST" / "raw", root / "raw"):
        if cand.is_dir() and any("-idx" in p.name and not is_junk(p.name) for p in cand.iterdir()):
            return cand
    raise DataError(f"{root}: no MNIST IDX files found", f"expected {EXPECTED}")


def _find(folder: Path, stem: str) -> Path | None:
    """The uncompressed file if present (cheaper), else the .gz one."""
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _split_files(folder: Path, split: str) -> tuple[Path | None, Path | None]:
    prefix = PREFIXES[split]
    return _find(folder, f"{prefix}-images-idx3-ubyte"), _find(folder, f"{prefix}-labels-idx1-ubyte")


def _read_idx(path: Path, kind: str) -> torch.Tensor:
    """One IDX file through torchvision's parser; any parse failure becomes one line naming the file."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    reader = read_image_file if kind == "images" else read_label_file
    try:
        if path.suffix != ".gz":
            out = reader(str(path))
        else:
            # torchvision's reader opens a plain path, so the gz is inflated to a scratch file first.
            with tempfile.TemporaryDirectory() as tmp, gzip.open(path, "rb") as src:
                plain = Path(tmp) / path.stem
                with open(plain, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                out = reader(str(plain))
    except (AssertionError, ValueError, TypeError, RuntimeError, KeyError, OSError, EOFError, zlib.error) as e:
        reason = str(e).splitlines()[0][:80] if str(e) else type(e).__name__
        raise DataError(f"{path}: not a valid IDX {kind} file ({reason})",
                        "the file is truncated or corrupt; fetch it again") from None
    want = 3 if kind == "images" else 1
    if out.ndim != want:
        raise DataError(f"{path}: IDX {kind} file has {out.ndim} dimensions, expected {want}")
    return out


def _load_disk_split(root: Path, split: str, class_names: list[str]) -> ClsData:
    """A split exactly as stored: images N x 1 x 28 x 28 uint8, labels int64."""
    folder = _idx_dir(root)
    if split not in PREFIXES:
        raise DataError(f"{root}: MNIST has no split '{split}'", "valid: train, test (or define one with resplit)")
    img_path, lab_path = _split_files(folder, split)
    if img_path is None or lab_path is None:
        missing = f"{PREFIXES[split]}-{'images-idx3' if img_path is None else 'labels-idx1'}-ubyte[.gz]"
        raise DataError(f"{folder}: split '{split}' is incomplete, {missing} not found",
                        f"splits on disk: {', '.join(_disk_splits(folder)) or 'none'}")
    images = _read_idx(img_path, "images")
    labels = _read_idx(lab_path, "labels")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{lab_path}: {labels.shape[0]} labels for {images.shape[0]} images in {img_path.name}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise DataError(f"{lab_path}: label {int(labels.max())} outside 0..{len(class_names) - 1}")
    names = [f"{PREFIXES[split]}-{i:05d}" for i in range(images.shape[0])]
    return ClsData(images.unsqueeze(1).contiguous(), labels.long(), names, list(class_names))


def _disk_splits(folder: Path) -> list[str]:
    return [s for s in PREFIXES if all(p is not None for p in _split_files(folder, s))]


def load(root: Path, split: str, size: list[int] | None = None, resplit: dict | None = None,
         class_names: list[str] | None = None, **unknown) -> ClsData:
    """Read one split; option resplit={from: test, seed: 0, train: 8000, test: 2000} carves splits from one."""
    unknown_options(unknown, ["resplit", "class_names"], "MNIST")
    names = list(class_names or DIGIT_NAMES)
    root = Path(root)
    available = _disk_splits(_idx_dir(root)) if resplit is not None else []
    return load_disk_or_resplit(lambda s: _load_disk_split(root, s, names), split, size, resplit, available,
                                str(root))


def list_splits(root: Path, **options) -> list[str]:
    """Complete splits on disk, or the resplit's splits when that option is given."""
    if isinstance(options.get("resplit"), dict):
        return resplit_names(options["resplit"])
    return _disk_splits(_idx_dir(Path(root)))


def check(root: Path, class_names: list[str] | None = None) -> str:
    """Counts and class shares per split, plus half-present splits and junk files."""
    folder = _idx_dir(Path(root))
    names = list(class_names or DIGIT_NAMES)
    lines = [f"MNIST-style IDX files in {folder}"]
    for split in PREFIXES:
        img, lab = _split_files(folder, split)
        if img is None and lab is None:
            continue
        if img is None or lab is None:
            have = (img or lab).name
            lines.append(f"  {split}: incomplete, only {have} (cannot be used without its pair)")
            continue
        lines.append(summarise_split(split, _load_disk_split(Path(root), split, names)))
    junk = [p.name for p in folder.iterdir() if is_junk(p.name)]
    if junk:
        lines.append(f"  skipped {len(junk)} junk file(s): {', '.join(sorted(junk)[:5])}")
    return "\n".join(lines)
