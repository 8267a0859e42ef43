"""Shared reader pieces: junk-file filtering, safe image decoding, resizing stacks of uint8 tensors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ...errors import DataError

JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini", "__MACOSX", ".ipynb_checkpoints"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif"}


def is_junk(p: Path) -> bool:
    """System metadata that users' folders collect (macOS, Windows, Jupyter)."""
    return p.name in JUNK_NAMES or p.name.startswith("._")


def read_image(path: Path, mode: str | None = None) -> np.ndarray:
    """Decode one image file to a uint8 array, or a DataError naming the file."""
    try:
        with Image.open(path) as im:
            im.load()
            if mode is not None and im.mode != mode:
                im = im.convert(mode)
            arr = np.asarray(im)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except PermissionError:
        raise DataError(f"{path}: not readable (permission denied)", "check the file's permissions") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({str(e)[:60]})", "the file is corrupt or truncated; "
                        "replace or remove it") from None
    if arr.dtype != np.uint8:
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        elif np.issubdtype(arr.dtype, np.integer) and arr.max(initial=0) <= 255 and arr.min(initial=0) >= 0:
            arr = arr.astype(np.uint8)
        else:
            raise DataError(f"{path}: unsupported pixel type {arr.dtype}", "save it as 8-bit")
    return arr


def to_chw(arr: np.ndarray) -> torch.Tensor:
    """H x W (x C) uint8 array -> C x H x W tensor."""
    arr = np.ascontiguousarray(arr)
    t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


def resize_images(x: torch.Tensor, size: list[int] | tuple[int, int] | None) -> torch.Tensor:
    """Resize N x C x H x W uint8 images (bilinear, antialiased); masks use resize_masks."""
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return x
    y = F.interpolate(x.float(), size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
    return y.round_().clamp_(0, 255).to(torch.uint8)


def resize_masks(m: torch.Tensor, size: list[int] | tuple[int, int] | None) -> torch.Tensor:
    """Resize N x H x W label maps with nearest neighbour (labels are never blended)."""
    if size is None or tuple(m.shape[-2:]) == tuple(size):
        return m
    y = F.interpolate(m[:, None].float(), size=tuple(size), mode="nearest-exact")
    return y[:, 0].to(m.dtype)


def class_shares(masks: torch.Tensor, num_classes: int, ignore_index: int | None = None) -> torch.Tensor:
    """Fraction of (non-ignored) pixels of each class."""
    flat = masks.reshape(-1).long()
    if ignore_index is not None:
        flat = flat[flat != ignore_index]
    counts = torch.bincount(flat, minlength=num_classes)[:num_classes].double()
    return counts / counts.sum().clamp(min=1)


def inside_root(path: Path, root: Path) -> Path:
    """path itself, refusing one that escapes root through '..' or a symbolic link (the format keeps files inside)."""
    real, base = Path(path).resolve(), Path(root).resolve()
    if real != base and base not in real.parents:
        raise DataError(f"{path}: points outside the data root {root} (symbolic link or '..')",
                        "copy the file into the data set, or remove the link")
    return Path(path)
