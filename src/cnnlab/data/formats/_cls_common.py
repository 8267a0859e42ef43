"""Helpers shared by the classification readers: seeded re-splits, resizing, summaries."""
from __future__ import annotations

from collections import Counter
from typing import Callable

import torch

from cnnlab.data.types import ClsData
from cnnlab.errors import ConfigError, DataError, did_you_mean

JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


def is_junk(name: str) -> bool:
    """OS litter (Finder, Explorer, AppleDouble) that is skipped and counted, never read."""
    return name in JUNK_NAMES or name.startswith("._")


def resize_images(images: torch.Tensor, size: list[int] | None) -> torch.Tensor:
    """Resize a uint8 N x C x H x W batch once at load time (bilinear, antialiased)."""
    if size is None or list(images.shape[-2:]) == list(size):
        return images
    from torchvision.transforms.v2 import functional as TF

    return TF.resize(images, list(size), antialias=True)


def unknown_options(given: dict, valid: list[str], reader: str) -> None:
    """Reader options arrive from data.options: an unknown key fails naming it."""
    for key in given:
        raise ConfigError(f"unknown config key 'data.options.{key}' for the {reader} reader", did_you_mean(key, valid))


RESPLIT_KEYS = ("from", "seed", "stratify")  # every other key of a resplit names a split


def parse_resplit(spec: object, available: list[str], what: str) -> tuple[str, int, bool, dict[str, int | float]]:
    """Validate a 'resplit' option: {from: <split>, seed: int, stratify: bool, <name>: count or fraction, ...}."""
    if not isinstance(spec, dict):
        raise DataError(f"{what}: option 'resplit' must be a mapping like {{from: test, train: 8000, test: 2000}}")
    spec = dict(spec)
    source = str(spec.pop("from", ""))
    seed = spec.pop("seed", 0)
    stratify = spec.pop("stratify", False)
    if not isinstance(stratify, bool):
        raise DataError(f"{what}: resplit stratify must be true or false, got {stratify!r}")
    if source not in available:
        raise DataError(f"{what}: resplit source split '{source}' is not on disk",
                        f"available: {', '.join(available) or 'none'}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise DataError(f"{what}: resplit seed must be an integer, got {seed!r}")
    if not spec:
        raise DataError(f"{what}: resplit names no target splits", "e.g. {from: test, train: 8000, test: 2000}")
    for name, n in spec.items():
        ok_int = isinstance(n, int) and not isinstance(n, bool) and n > 0
        ok_frac = isinstance(n, float) and 0 < n < 1
        if not (ok_int or ok_frac):
            raise DataError(f"{what}: resplit size of '{name}' must be a positive count or a fraction, got {n!r}")
    return source, seed, stratify, spec


def stratified_order(labels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A seeded order of the samples in which every class is spread evenly: each class's samples, shuffled, sit at
    evenly spaced positions (random phase) of [0, 1), merged by position. Consecutive chunks of it (the carved
    splits) then hold each class within one sample of its share, where a plain shuffle can leave a rare class
    out of a small test split altogether."""
    position = torch.empty(len(labels), dtype=torch.float64)
    for k in torch.unique(labels).tolist():
        idx = (labels == k).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        phase = torch.rand(1, generator=g, dtype=torch.float64)
        position[idx] = (torch.arange(len(idx), dtype=torch.float64) + phase) / len(idx)
    return torch.argsort(position, stable=True)


def carve_splits(load_source: Callable[[str], ClsData], split: str, spec: object, available: list[str],
            what: str) -> ClsData:
    """Carve disjoint, seeded splits out of one split on disk (e.g. MNIST test -> 8000 train / 2000 test)."""
    source, seed, stratify, sizes = parse_resplit(spec, available, what)
    if split not in sizes:
        raise DataError(f"{what}: split '{split}' is not one of the resplit's splits",
                        f"resplit defines: {', '.join(sizes)}")
    data = load_source(source)
    n = len(data)
    counts = {k: (v if isinstance(v, int) else int(round(v * n))) for k, v in sizes.items()}
    if sum(counts.values()) > n:
        raise DataError(f"{what}: resplit asks for {sum(counts.values())} samples but split '{source}' has {n}",
                        "lower the counts")
    # One order for all targets, so the carved splits never overlap whatever is asked.
    g = torch.Generator().manual_seed(seed)
    order = stratified_order(data.labels, g) if stratify else torch.randperm(n, generator=g)
    start = 0
    for name, count in counts.items():
        if name == split:
            out = data.subset(order[start:start + count])
            origin = "the class folders under the root" if source == "." else f"on-disk split '{source}'"
            how = f"seed {seed}, stratified by class" if stratify else f"seed {seed}"
            out.notes.append(f"split '{split}' = {count} samples drawn ({how}) from {origin}")
            return out
        start += count
    raise AssertionError("unreachable: split was checked above")


def class_shares(labels: torch.Tensor, class_names: list[str], top: int = 12) -> str:
    """'0: 9.8%, 1: 11.4%, ...' for a summary line (the top few when there are many classes)."""
    n = max(int(labels.numel()), 1)
    counts = Counter(labels.tolist())
    items = sorted(counts.items(), key=lambda kv: kv[0])
    if len(items) > top:
        items = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
    parts = [f"{class_names[k] if 0 <= k < len(class_names) else k}: {100 * c / n:.1f}%" for k, c in items]
    missing = len(class_names) - len(counts)
    tail = f" (+{len(counts) - top} more)" if len(counts) > top else ""
    gap = f"; {missing} classes absent" if missing > 0 else ""
    return ", ".join(parts) + tail + gap


def summarise_split(split: str, data: ClsData) -> str:
    """One line per split for check(): count, shape, class shares."""
    c, h, w = data.images.shape[1:]
    return f"  {split}: {len(data)} images {c}x{h}x{w}; classes {class_shares(data.labels, data.class_names)}"


def resplit_names(spec: dict) -> list[str]:
    """The split names a 'resplit' option defines (every key but from, seed and stratify)."""
    return [k for k in spec if k not in RESPLIT_KEYS]


def load_disk_or_resplit(read_disk: Callable[[str], ClsData], split: str, size: list[int] | None,
                         resplit: object, available: list[str], what: str) -> ClsData:
    """One split as stored on disk, or carved by the 'resplit' option; resized when size is given."""
    if resplit is not None:
        data = carve_splits(read_disk, split, resplit, available, what)
    else:
        data = read_disk(split)
    data.images = resize_images(data.images, size)
    return data
