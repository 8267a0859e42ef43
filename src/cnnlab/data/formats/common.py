"""Shared reader pieces: junk-file filtering, safe image decoding, resizing stacks of uint8 tensors.

Every image file cnnlab reads goes through `open_image` (Pillow's decompression-bomb check becomes a DataError
naming the file; an EXIF orientation is applied, as viewers show the picture) and every model input through
`read_input` (16-bit and float images scaled the same way in every reader and in predict, so that training and
prediction on the same file agree).
"""
from __future__ import annotations

import contextlib
import os
import re
import shlex
import stat
import threading
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnlab.errors import ConfigError, DataError

JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini", "__MACOSX", ".ipynb_checkpoints"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
PIXEL_LIMIT_ENV = "CNNLAB_MAX_IMAGE_PIXELS"  # raises Pillow's decompression-bomb limit for trusted large files
EXIF_ORIENTATION = 0x0112  # the EXIF tag of how a stored image is turned for display (1: as stored)
EXIF_FORMATS = {"JPEG", "MPO", "TIFF", "WEBP"}  # Pillow formats whose EXIF is read with the header
WIDE_MODES = ("I", "F")  # mode prefixes of 16/32-bit integer and float images (I, I;16, I;16B, ..., F)
_OPEN_LOCK = threading.Lock()  # warnings filters are process-wide: readers decode in threads (VOC)
# The last callable here is called once per decoded model input (the engine's decoding progress bar), so no reader
# needs an extra argument. A plain list, not a context variable: readers decode in worker threads (data/parallel.py),
# which would not see one; a process decodes one run's data at a time. Callables here must be thread-safe.
DECODE_HOOKS: list[Callable[[], None]] = []


def is_junk(p: Path) -> bool:
    """System metadata that users' folders collect (macOS, Windows, Jupyter)."""
    return p.name in JUNK_NAMES or p.name.startswith("._")


def _pixel_limit() -> int | None:
    """Pillow's limit, raised by CNNLAB_MAX_IMAGE_PIXELS when set (the user vouches for the files)."""
    text = os.environ.get(PIXEL_LIMIT_ENV)
    if text:
        if not text.strip().isdigit() or int(text) < 1:
            raise ConfigError(f"{PIXEL_LIMIT_ENV}={text!r} is not a positive whole number of pixels",
                              f"e.g. {PIXEL_LIMIT_ENV}=500000000")
        Image.MAX_IMAGE_PIXELS = int(text)
    return Image.MAX_IMAGE_PIXELS


def bomb_error(path: Path, e: Exception) -> DataError:
    """The one line for an image over Pillow's decompression-bomb limit: the file, its pixels, the limit, a way on."""
    found = re.search(r"\((\d+) pixels\)", str(e))
    pixels = f"{int(found.group(1)):,} pixels" if found else "more pixels than allowed"
    limit = Image.MAX_IMAGE_PIXELS
    raise_to = int(found.group(1)) if found else 2 * (limit or 0)
    return DataError(f"{path}: {pixels}, over Pillow's decompression-bomb limit of {limit:,} pixels (a file this "
                     "large can exhaust memory)", f"downscale or tile the image; if you trust the file, run again "
                     f"with {PIXEL_LIMIT_ENV}={raise_to} before the command")


@contextlib.contextmanager
def open_image(path: Path) -> Iterator[Image.Image]:
    """Image.open for readers: over the decompression-bomb limit (Pillow's warning or error) is a DataError naming
    the file instead of a traceback or an anonymous warning; a FIFO or device named like an image is a DataError
    too (reading one blocked forever); other decode errors are left to the caller."""
    _regular_file(path)
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        _pixel_limit()
        try:
            im = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise bomb_error(Path(path), e) from None
    with im:
        try:
            yield _upright(im)
        except Image.DecompressionBombError as e:  # frames of animated files are checked again when loaded
            raise bomb_error(Path(path), e) from None


def _regular_file(path) -> None:
    """A DataError for a path that exists and is not a regular file or folder (a FIFO, a socket, a device)."""
    if not isinstance(path, (str, os.PathLike)):
        return
    try:
        mode = os.stat(path).st_mode
    except OSError:  # missing or unreadable: Image.open says so, and the caller names it
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise DataError(f"{path}: not a regular file (a FIFO or device named like an image would block the read)",
                        f"replace it with the image file: ls -l {shlex.quote(str(path))}")


def _upright(im: Image.Image) -> Image.Image:
    """The image as every viewer, OpenCV and annotation tools such as LabelMe show it: phone and camera photos are
    often stored sideways with an EXIF orientation tag, and masks drawn on them match the turned picture (read
    raw, their sizes disagree, or a 180-degree turn silently flips every label). Untagged files are untouched.
    Only JPEG, TIFF and WebP (EXIF_FORMATS, read with the header) are asked: Pillow decodes a whole PNG to look."""
    if im.format not in EXIF_FORMATS:
        return im
    try:
        orientation = im.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError):  # malformed EXIF: the pixels as stored
        return im
    return ImageOps.exif_transpose(im) if orientation in range(2, 9) else im


def _decode_error(path: Path, e: BaseException) -> DataError:
    if isinstance(e, FileNotFoundError):
        return DataError(f"{path}: file not found")
    if isinstance(e, PermissionError):
        return DataError(f"{path}: not readable (permission denied)", "check the file's permissions")
    return DataError(f"{path}: not a readable image ({str(e)[:60]})", "the file is corrupt or truncated; "
                     "replace or remove it")


def header(path: Path) -> tuple[int, int, str]:
    """(height, width, mode) without decoding pixels; a DataError naming an unreadable or oversized file."""
    try:
        with open_image(path) as im:
            return im.size[1], im.size[0], im.mode
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise _decode_error(path, e) from None


def read_image(path: Path, mode: str | None = None) -> np.ndarray:
    """Decode one image file to a uint8 array, or a DataError naming the file (masks: values kept, never scaled)."""
    try:
        with open_image(path) as im:
            im.load()
            if mode is not None and im.mode != mode:
                im = im.convert(mode)
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise _decode_error(path, e) from None
    if arr.dtype != np.uint8:
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        elif np.issubdtype(arr.dtype, np.integer) and arr.max(initial=0) <= 255 and arr.min(initial=0) >= 0:
            arr = arr.astype(np.uint8)
        else:
            raise DataError(f"{path}: unsupported pixel type {arr.dtype}", "save it as 8-bit")
    return arr


def scale_wide(arr: np.ndarray) -> np.ndarray:
    """16-bit, 32-bit and float pixels -> uint8 by the image's own maximum (negative values become 0).

    Why the own maximum: 16-bit files rarely use the full 0..65535 range (12-bit cameras, microscopes), so a fixed
    /257 would make them nearly black, and Pillow's convert to 8 bits clips them to white."""
    arr = np.asarray(arr, dtype=np.float64)
    return np.round(255 * arr / max(arr.max(initial=0), 1e-12)).clip(0, 255).astype(np.uint8)


def read_input(path: Path, channels: int) -> np.ndarray:
    """A model input as H x W (channels 1) or H x W x 3 uint8, the same in every reader and in predict.

    8-bit files are converted by Pillow (grey repeated to RGB, colour averaged to grey); 16-bit, 32-bit and float
    grey files are scaled by `scale_wide`, then repeated to RGB when 3 channels are asked for."""
    try:
        with open_image(path) as im:
            arr = image_array(im, channels)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise _decode_error(path, e) from None
    note_decoded()
    return arr


def image_array(im: Image.Image, channels: int) -> np.ndarray:
    """An opened image as read_input makes it (H x W or H x W x 3 uint8): the one conversion of files and of the
    PIL images given to cnnlab.Run.predict."""
    if not im.mode.startswith(WIDE_MODES):
        im.load()
        return np.asarray(im if im.mode == ("RGB" if channels == 3 else "L")
                          else im.convert("RGB" if channels == 3 else "L"))
    arr = scale_wide(np.asarray(im))
    return np.repeat(arr[..., None], 3, axis=2) if channels == 3 else arr


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """N x C x H x W uint8 (C 1, 3 or 4) in `channels` (1 or 3), converted as read_input converts a file: grey
    repeated to RGB, alpha dropped, RGB to grey by Pillow's own fixed-point rule (ITU-R 601-2 luma,
    (19595 R + 38470 G + 7471 B + 32768) >> 16), so pixels already decoded (evaluate's split) match what predict
    makes of the same files."""
    c = images.shape[1]
    if c == channels or c not in (1, 3, 4) or channels not in (1, 3):
        return images
    if c == 1:
        return images.expand(-1, 3, -1, -1).contiguous()
    rgb = images[:, :3].to(torch.int64)
    if channels == 3:
        return images[:, :3].contiguous()
    grey = (rgb[:, 0] * 19595 + rgb[:, 1] * 38470 + rgb[:, 2] * 7471 + 0x8000) >> 16
    return grey.to(torch.uint8)[:, None]


def note_decoded() -> None:
    """One model input decoded: the innermost watcher's counter (the decode bar and events.jsonl) advances."""
    if DECODE_HOOKS:
        DECODE_HOOKS[-1]()


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
