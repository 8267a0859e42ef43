"""Small synthetic stand-ins for data as people keep it (issue 30), with the real naming: street-scene video frames
(CamVid's `0001TP_006690`, `Seq05VD_f00000`), grey masks 0..K-1 plus a void value, given splits in the common
layouts. Nothing is copied from a real data set."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SEQUENCES = ("0001TP", "0006R0", "0016E5", "Seq05VD")
VOID = 11


def frame_name(seq: str, i: int) -> str:
    """CamVid's naming: `0001TP_006690`, and `Seq05VD_f00000` for the sequence whose frames carry an f."""
    return f"{seq}_f{i:05d}" if seq.startswith("Seq") else f"{seq}_{i:06d}"


def street_frame(seq_index: int, i: int, h: int = 24, w: int = 32, void: int | None = VOID,
                 rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """An RGB frame and its grey mask: sky (0) on top, a sequence-specific band of classes in the middle, a road
    class at the bottom; a few void pixels in the top-left corner. Frames of one sequence differ slightly (the
    middle band moves by i), so neighbours are near copies, as in a driving video."""
    rng = rng or np.random.default_rng(seq_index * 1000 + i)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 3: 2 * h // 3] = 1 + seq_index % 3
    shift = (i // 30) % (w // 2)
    mask[h // 3: 2 * h // 3, shift: shift + w // 4] = 4
    mask[2 * h // 3:] = 5 + seq_index % 2
    if void is not None:
        mask[0, :3] = void
    colours = np.array([[120, 160, 230], [90, 90, 90], [160, 120, 60], [60, 140, 60], [200, 30, 30],
                        [110, 110, 120], [80, 80, 40]] + [[0, 0, 0]] * 250, np.int16)
    img = colours[mask] + rng.integers(-20, 21, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8), mask


def write_split(images: Path, masks: Path, seqs: list[int], frames: int, start: int = 0, mask_suffix: str = "",
                void: int | None = VOID) -> list[str]:
    """Frames of the given sequences as PNG pairs; returns their names."""
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    names = []
    for k in seqs:
        for j in range(frames):
            i = start + 30 * j
            img, mask = street_frame(k, i, void=void)
            name = frame_name(SEQUENCES[k], i)
            Image.fromarray(img).save(images / f"{name}.png")
            Image.fromarray(mask).save(masks / f"{name}{mask_suffix}.png")
            names.append(name)
    return names


def camvid_like(root: Path, frames: int = 3, test: bool = True, val: bool = True) -> dict[str, list[str]]:
    """SegNet's CamVid layout: train/ trainannot/ val/ valannot/ test/ testannot/ (the test from other frames)."""
    out = {"train": write_split(root / "train", root / "trainannot", [0, 1, 2], frames)}
    if val:
        out["val"] = write_split(root / "val", root / "valannot", [3], frames)
    if test:
        out["test"] = write_split(root / "test", root / "testannot", [3], frames, start=15)
    return out
