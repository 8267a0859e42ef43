"""In-memory splits: whole data sets held as uint8 tensors, decoded once.

Each split type also says how the decoded-image cache (data/cache.py) stores it: `cache_kind` (its name in
meta.json), `cache_arrays` (the tensors written as .npy), `cache_fields` (the rest, as JSON) and `from_cache`
(the split rebuilt from them). The cache then needs no branch per type, and a new split type brings its own."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch


@dataclass
class SegData:
    """A segmentation split: images N x C x H x W uint8, masks N x H x W uint8 (class indices).

    sizes: N x 2 (height, width) where images of different sizes are kept at their own size (data.patch without
    data.size): each sits in the top-left corner of the common tensor, padded with image 0 and mask ignore_index
    (else 0); patches and sliding windows never look beyond an image's own size. None: every image fills it."""

    images: torch.Tensor
    masks: torch.Tensor
    names: list[str]
    class_names: list[str]
    ignore_index: int | None = None  # mask value excluded from loss and metrics (e.g. 255)
    notes: list[str] = field(default_factory=list)  # what the reader recovered or decided
    # how the data set's own mask files store each class ({"kind": grey_levels | binary | palette | rgb, "values":
    # one pixel value or [r, g, b] per class}), where the reader learnt it: predict writes masks the same way
    mask_encoding: dict | None = None
    sizes: torch.Tensor | None = None
    cache_kind: ClassVar[str] = "seg"
    cache_arrays: ClassVar[tuple[str, ...]] = ("images", "masks")

    def cache_fields(self) -> dict:
        """What the cache keeps beside the arrays, names and notes."""
        own = {"mask_encoding": self.mask_encoding} if self.mask_encoding is not None else {}
        if self.sizes is not None:
            own["sizes"] = self.sizes.tolist()
        return {"class_names": list(self.class_names), "ignore_index": self.ignore_index, **own}

    @classmethod
    def from_cache(cls, arrays: dict[str, torch.Tensor], names: list[str], fields: dict, notes: list[str]
                   ) -> "SegData":
        """The split as it was stored (arrays named by cache_arrays, fields from cache_fields)."""
        sizes = torch.tensor(fields["sizes"], dtype=torch.long) if fields.get("sizes") is not None else None
        return cls(arrays["images"], arrays["masks"], names, fields["class_names"], fields["ignore_index"], notes,
                   fields.get("mask_encoding"), sizes)

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, idx: torch.Tensor | list[int]) -> "SegData":
        """A view on some samples (label-fraction runs, train/val splits)."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        return SegData(self.images[idx], self.masks[idx], [self.names[i] for i in idx.tolist()],
                       self.class_names, self.ignore_index, list(self.notes), self.mask_encoding,
                       self.sizes[idx] if self.sizes is not None else None)

    def own_size(self, i: int) -> tuple[int, int]:
        """Sample i's own height and width (see sizes)."""
        if self.sizes is None:
            return int(self.images.shape[-2]), int(self.images.shape[-1])
        h, w = self.sizes[i].tolist()
        return int(h), int(w)


@dataclass
class ClsData:
    """A classification split: images N x C x H x W uint8, labels N int64."""

    images: torch.Tensor
    labels: torch.Tensor
    names: list[str]
    class_names: list[str]
    notes: list[str] = field(default_factory=list)
    cache_kind: ClassVar[str] = "cls"
    cache_arrays: ClassVar[tuple[str, ...]] = ("images", "labels")

    def cache_fields(self) -> dict:
        """What the cache keeps beside the arrays, names and notes."""
        return {"class_names": list(self.class_names)}

    @classmethod
    def from_cache(cls, arrays: dict[str, torch.Tensor], names: list[str], fields: dict, notes: list[str]
                   ) -> "ClsData":
        """The split as it was stored (arrays named by cache_arrays, fields from cache_fields)."""
        return cls(arrays["images"], arrays["labels"], names, fields["class_names"], notes)

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, idx: torch.Tensor | list[int]) -> "ClsData":
        """A view on some samples."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        return ClsData(self.images[idx], self.labels[idx], [self.names[i] for i in idx.tolist()],
                       self.class_names, list(self.notes))


@dataclass
class ColorData:
    """A colorization split: grey inputs N x 1 x H x W uint8, colour targets N x K x H x W uint8.

    space 'rgb': targets are RGB (K=3). space 'lab': targets are a*, b* + 128 (K=2), the input is L* scaled to 0..255.
    """

    images: torch.Tensor
    targets: torch.Tensor
    names: list[str]
    space: str = "rgb"
    notes: list[str] = field(default_factory=list)
    cache_kind: ClassVar[str] = "color"
    cache_arrays: ClassVar[tuple[str, ...]] = ("images", "targets")

    def cache_fields(self) -> dict:
        """What the cache keeps beside the arrays, names and notes."""
        return {"space": self.space}

    @classmethod
    def from_cache(cls, arrays: dict[str, torch.Tensor], names: list[str], fields: dict, notes: list[str]
                   ) -> "ColorData":
        """The split as it was stored (arrays named by cache_arrays, fields from cache_fields)."""
        return cls(arrays["images"], arrays["targets"], names, fields["space"], notes)

    @property
    def class_names(self) -> list[str]:
        return ["R", "G", "B"] if self.space == "rgb" else ["a*", "b*"]

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, idx: torch.Tensor | list[int]) -> "ColorData":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return ColorData(self.images[idx], self.targets[idx], [self.names[i] for i in idx.tolist()], self.space,
                         list(self.notes))


Split = SegData | ClsData | ColorData
SPLIT_TYPES: tuple[type, ...] = (SegData, ClsData, ColorData)
