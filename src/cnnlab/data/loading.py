"""From a recipe's data section to in-memory train/val/test splits (label fractions and carved splits seeded)."""
from __future__ import annotations

import inspect
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cnnlab.config import DataConfig
from cnnlab.data.cache import load_or_decode
from cnnlab.data.formats import FORMATS
from cnnlab.data.synthetic import SYNTHETIC
from cnnlab.data.types import ClsData, SegData
from cnnlab.errors import DataError, lookup

Split = SegData | ClsData


@dataclass
class RunData:
    """The splits of one run; test is None when the data set has none (metrics then come from val)."""

    train: Split
    val: Split
    test: Split | None
    notes: list[str] = field(default_factory=list)

    @property
    def class_names(self) -> list[str]:
        return self.train.class_names


def load_split(cfg: DataConfig, split: str, outputs: str | Path | None = None) -> Split:
    """One split through the format's reader, or from the decoded-image cache (cnnlab.data.cache) when an entry
    for exactly these files and settings is there (data.cache: false reads and writes none). outputs: the runs'
    folder (a recipe's `out`), left out of the cache's file list where it lies inside the data root."""
    reader = lookup(FORMATS, cfg.format, "data format")
    root = Path(cfg.root).expanduser()
    if not root.exists():
        raise DataError(f"data root not found: {root}", missing_root_hint(cfg.format, root))
    reads = getattr(reader, "data_paths", None)  # a reader that can name its files spares the cache a walk of root
    native = native_size(cfg, reader)  # patch training keeps each image at its own size (one cache entry apart)
    extra = {"native": True} if native else {}
    return load_or_decode(cfg.format, root, split, cfg.size, {**cfg.options, **extra},
                          lambda: reader.load(root, split, size=cfg.size, **extra, **cfg.options),
                          enabled=cfg.cache, cache_dir=cfg.cache_dir,
                          skip=[Path(outputs).expanduser()] if outputs is not None else [],
                          reads=reads(root, **cfg.options) if reads is not None else None)


def native_size(cfg: DataConfig, reader) -> bool:
    """Whether the reader keeps each image at its own size: patch training (data.patch) without data.size, from a
    reader that can (one taking `native`: folders); the others keep their stored size when data.size is unset."""
    return (cfg.patch is not None and cfg.size is None
            and "native" in inspect.signature(reader.load).parameters)


# Formats read from another format's synthetic set (the endovis writer also writes colorization/).
SYNTH_WRITER = {"endovis_colorization": "endovis"}


def missing_root_hint(fmt: str, root: Path) -> str:
    """What to do about a missing data root; only formats with a synthetic writer get a `cnnlab data synth` command
    (printing one for any format once sent users to `cnnlab data synth folders`, which does not exist)."""
    writer = SYNTH_WRITER.get(fmt, fmt)
    if writer in SYNTHETIC:
        out = shlex.quote(str(root))
        return f"set data.root, or write a synthetic set with `cnnlab data synth {writer} --out {out}`"
    if fmt == "folders":
        return ("set data.root to the folder holding your images and masks folders; "
                "`cnnlab new --images DIR --masks DIR --out RECIPE` writes a recipe for them")
    if fmt == "digits":
        return "the digits ship with scikit-learn and data.root is not read: set it to any existing folder, e.g. ."
    return "set data.root to the folder holding the data set"


def list_splits(reader, root: Path, options: dict) -> list[str]:
    """Splits a reader finds; readers whose splits depend on options (folders, re-splits) receive them."""
    params = inspect.signature(reader.list_splits).parameters.values()
    takes_options = any(p.kind is p.VAR_KEYWORD for p in params)
    return reader.list_splits(root, **options) if takes_options else reader.list_splits(root)


def _seeded_perm(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)


def load_run_data(cfg: DataConfig, seed: int, outputs: str | Path | None = None) -> RunData:
    """Train/val/test as the recipe asks; val carved from train (seeded) when val_fraction > 0. outputs: as for
    load_split."""
    reader = lookup(FORMATS, cfg.format, "data format")
    train = load_split(cfg, cfg.train, outputs)
    notes = list(train.notes)
    if cfg.val_fraction > 0:
        perm = _seeded_perm(len(train), 12345)  # fixed: the validation set must not move with the run seed
        n_val = max(1, round(cfg.val_fraction * len(train)))
        val, train = train.subset(perm[:n_val].sort().values), train.subset(perm[n_val:].sort().values)
        notes.append(f"validation: {n_val} samples carved from '{cfg.train}' (fraction {cfg.val_fraction})")
    else:
        val = load_split(cfg, cfg.val, outputs)
    if cfg.label_fraction < 1:
        k = max(1, round(cfg.label_fraction * len(train)))
        train = train.subset(_seeded_perm(len(train), seed)[:k].sort().values)
        notes.append(f"label fraction {cfg.label_fraction}: training on {k} samples (subset seeded by {seed})")
    test = None
    present = list_splits(reader, Path(cfg.root).expanduser(), cfg.options)
    if cfg.test and cfg.test in present:
        test = load_split(cfg, cfg.test, outputs)
    elif cfg.test:
        notes.append(f"no '{cfg.test}' split in {cfg.root}: final metrics are on '{cfg.val}'")
    if train.class_names != val.class_names:
        raise DataError(f"{cfg.root}: train and validation splits disagree on the classes")
    return RunData(train, val, test, list(dict.fromkeys(notes)))
