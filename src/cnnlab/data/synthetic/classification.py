"""Small, seeded classification sets in the real on-disk formats: IDX (gz), PNG class folders, CIFAR-100 pickles.

Each class is a fixed random glyph (a coarse binary pattern, enlarged) drawn at a jittered position with random
contrast, pixel dropout, a distracting stroke and noise: a working CNN learns it in a few epochs, while a
model that ignores its input stays at chance (1 / classes).
"""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

from cnnlab.errors import lookup

CIFAR_FOLDER = "cifar-100-python"


def _templates(rng: np.random.Generator, num_classes: int, cells: int = 5) -> np.ndarray:
    """num_classes distinct binary cells x cells patterns, each about 45% on."""
    out: list[np.ndarray] = []
    while len(out) < num_classes:
        t = rng.random((cells, cells)) < 0.45
        if t.sum() >= 4 and not any((t == o).all() for o in out):
            out.append(t)
    return np.stack(out)


def _glyph_images(rng: np.random.Generator, templates: np.ndarray, labels: np.ndarray, size: int,
                  colours: np.ndarray | None) -> np.ndarray:
    """N x size x size x C uint8 images of the labels' glyphs (C = 3 when colours are given)."""
    cells = templates.shape[1]
    scale = max(1, (size * 3 // 5) // cells)
    side = cells * scale
    channels = 1 if colours is None else 3
    out = np.empty((len(labels), size, size, channels), np.uint8)
    for i, lab in enumerate(labels):
        canvas = rng.normal(30.0, 18.0, (size, size))
        glyph = np.kron(templates[lab], np.ones((scale, scale))) * rng.uniform(140, 230)
        glyph *= rng.random(glyph.shape) > 0.12  # pixel dropout: no two samples alike
        y, x = rng.integers(0, size - side + 1, size=2)
        canvas[y:y + side, x:x + side] += glyph
        row = rng.integers(0, size)  # a distracting stroke that carries no class information
        canvas[row, rng.integers(0, size // 2):] += rng.uniform(60, 140)
        canvas = np.clip(canvas, 0, 255)
        if colours is None:
            out[i, :, :, 0] = canvas.astype(np.uint8)
        else:
            tint = np.clip(colours[lab] + rng.normal(0, 0.1, 3), 0.2, 1.0)
            background = rng.normal(0, 12.0, (size, size, 3))
            out[i] = np.clip(canvas[:, :, None] * tint + background, 0, 255).astype(np.uint8)
    return out


def _balanced_labels(rng: np.random.Generator, n: int, num_classes: int) -> np.ndarray:
    return rng.permutation(np.arange(n) % num_classes)


def _idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding: magic (0, 0, 0x08 = ubyte, number of dims), big-endian dim sizes, raw data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(out: Path, seed: int = 0, n_train: int = 500, n_test: int = 200, size: int = 28,
              gz: bool = True, layout: str = "flat", num_classes: int = 10) -> Path:
    """MNIST/Fashion-MNIST IDX files; layout 'flat' (files in out) or 'torchvision' (out/MNIST/raw)."""
    out = Path(out)
    folder = out if layout == "flat" else out / "MNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    templates = _templates(rng, num_classes)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = _balanced_labels(rng, n, num_classes)
        images = _glyph_images(rng, templates, labels, size, None)[..., 0]
        for kind, array in (("images-idx3", images), ("labels-idx1", labels.astype(np.uint8))):
            path = folder / f"{prefix}-{kind}-ubyte"
            data = _idx_bytes(array)
            if gz:
                # mtime=0 keeps the archive byte-identical for a given seed.
                with open(path.with_name(path.name + ".gz"), "wb") as raw, \
                        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
                    f.write(data)
            else:
                path.write_bytes(data)
    return out


def write_image_folders(out: Path, seed: int = 0, n_train: int = 200, n_test: int = 100, size: int = 28,
                        channels: int = 1, num_classes: int = 10, splits: tuple[str, str] = ("Train", "Test")) -> Path:
    """The course layout: out/Train/<class>/<n>.png and out/Test/<class>/<n>.png."""
    from PIL import Image

    out = Path(out)
    rng = np.random.default_rng(seed)
    templates = _templates(rng, num_classes)
    colours = rng.uniform(0.3, 1.0, (num_classes, 3)) if channels == 3 else None
    for split, n in zip(splits, (n_train, n_test)):
        labels = _balanced_labels(rng, n, num_classes)
        images = _glyph_images(rng, templates, labels, size, colours)
        for i, (img, lab) in enumerate(zip(images, labels)):
            folder = out / split / str(lab)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img[:, :, 0] if channels == 1 else img).save(folder / f"{i:05d}.png")
    return out


def write_cifar100(out: Path, seed: int = 0, n_train: int = 1000, n_test: int = 300) -> Path:
    """out/cifar-100-python/{train,test,meta} with the official keys; coarse label = fine // 5."""
    out = Path(out)
    folder = out / CIFAR_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    templates = _templates(rng, 100)
    colours = rng.uniform(0.3, 1.0, (100, 3))
    for split, n in (("train", n_train), ("test", n_test)):
        fine = _balanced_labels(rng, n, 100)
        hwc = _glyph_images(rng, templates, fine, 32, colours)
        entry = {
            "filenames": [f"synthetic_{split}_{i:05d}.png" for i in range(n)],
            "batch_label": f"synthetic {split} batch",
            "fine_labels": fine.tolist(),
            "coarse_labels": (fine // 5).tolist(),
            "data": hwc.transpose(0, 3, 1, 2).reshape(n, 3072),  # the planes R, G, B in row order
        }
        (folder / split).write_bytes(pickle.dumps(entry, protocol=2))
    meta = {"fine_label_names": [f"fine_{i:02d}" for i in range(100)],
            "coarse_label_names": [f"coarse_{i:02d}" for i in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return out


WRITERS = {"mnist": write_idx, "fashion_mnist": write_idx, "imagefolder": write_image_folders,
           "cifar100": write_cifar100}


def write(out: Path, seed: int = 0, format: str = "mnist", **sizes) -> Path:
    """Dispatch by format name (the keys of WRITERS)."""
    return lookup(WRITERS, format, "synthetic classification format")(out, seed=seed, **sizes)
