"""The plain PyTorch 'course solution' every benchmark compares against: per-sample PIL decoding, augmentation
and one-hot encoding in a Dataset, a DataLoader, fp32 NCHW, loss.item() per step."""
from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work so wall-clock timings mean something (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def course_dice_loss(logits: torch.Tensor, onehot: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """The course's soft Dice on one-hot targets: 1 - mean over classes of (2 sum pg + s) / (sum p + sum g + s)."""
    probs = logits.softmax(dim=1)
    dims = (0, 2, 3)
    dice = (2 * (probs * onehot).sum(dims) + smooth) / (probs.sum(dims) + onehot.sum(dims) + smooth)
    return 1 - dice.mean()


class CourseSegDataset(Dataset):
    """What a course solution writes: open each image and mask with PIL per sample, augment, one-hot per sample."""

    def __init__(self, root: Path, split: str, mean: tuple, std: tuple, num_classes: int,
                 size: tuple[int, int] | None = None, augment: bool = False) -> None:
        from cnnlab.data.formats.endovis import read_mapping
        self.dirs = sorted(p for p in (Path(root) / "segmentation" / split).iterdir() if p.is_dir())
        mapping, _ = read_mapping(Path(root))
        self.lut = np.zeros(256, np.int64)
        for i, level in enumerate(mapping.values()):
            self.lut[level] = i
        self.mean, self.std, self.num_classes, self.size, self.augment = mean, std, num_classes, size, augment

    def __len__(self) -> int:
        return len(self.dirs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        import torchvision.transforms.functional as TF
        from torchvision.transforms import ColorJitter
        d = self.dirs[i]
        img = Image.open(d / f"{d.name}_input.jpg").convert("RGB")
        mask = Image.open(d / f"{d.name}_mask.png").convert("L")
        if self.size is not None:
            img = img.resize(self.size[::-1], Image.BILINEAR)
            mask = mask.resize(self.size[::-1], Image.NEAREST)
        if self.augment:  # the same augmentation as recipe endovis/b_augment, per sample on PIL images
            if random.random() < 0.5:
                img, mask = TF.hflip(img), TF.hflip(mask)
            if random.random() < 0.5:
                img, mask = TF.vflip(img), TF.vflip(mask)
            img = ColorJitter(0.2, 0.2, 0.2)(img)
        x = TF.normalize(TF.to_tensor(img), self.mean, self.std)
        m = torch.from_numpy(self.lut[np.asarray(mask)])
        onehot = F.one_hot(m, self.num_classes).permute(2, 0, 1).float()
        return x, onehot


def forever(loader: DataLoader) -> Iterator:
    """Batches across epoch boundaries (a new epoch's iterator setup counts as data time, as it would)."""
    while True:
        yield from loader


@dataclasses.dataclass
class PlainSide:
    """The plain PyTorch loop: fp32, NCHW, DataLoader batches, loss.item() per step like every course solution."""

    model: torch.nn.Module
    batches: Iterator
    loss_fn: Callable
    opt: torch.optim.Optimizer
    device: torch.device

    def run(self, steps: int) -> dict:
        """One repetition of `steps` optimizer steps."""
        from cnnlab.engine.runtime import reuse_freed_memory
        reuse_freed_memory(False)  # glibc's default, as in a process that never imported cnnlab
        self.model.train()
        data_s, seen, running = 0.0, 0, 0.0
        t0 = time.perf_counter()
        for _ in range(steps):
            td = time.perf_counter()
            x, y = next(self.batches)
            x, y = x.to(self.device), y.to(self.device)
            sync(self.device)
            data_s += time.perf_counter() - td
            loss = self.loss_fn(self.model(x), y)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            running += loss.item()
            seen += len(x)
        sync(self.device)
        return {"seconds": time.perf_counter() - t0, "images": seen, "data_seconds": data_s}
