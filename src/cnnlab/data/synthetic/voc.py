"""A small synthetic PASCAL VOC segmentation set, written in the real layout (JPEGs, palette PNGs, image sets).

Each image is a cluttered background (colour gradient, low-contrast rectangles and lines, noise) with one to
three objects drawn from five VOC classes. A class is told by its shape and texture, not by colour alone:
colours are jittered and the clutter reuses object-like colours, so a model that only thresholds colour fails.
Class frequencies are unequal (person common, boat rare) so the class-weighted loss has something to fix.
Masks carry a 255 band along every object outline, as VOC's SegmentationClass PNGs do.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from cnnlab.data.voc_colors import VOC_BOUNDARY, VOC_PALETTE

# class index -> (shape, base RGB colour, texture); frequencies below make some classes rare
OBJECTS = {
    15: ("person", (200, 150, 120), "plain"),     # head disc on a rounded body
    7: ("car", (190, 40, 40), "stripes"),         # wide box with two wheels
    3: ("bird", (120, 90, 60), "spots"),          # ellipse with a triangular beak
    1: ("aeroplane", (170, 170, 185), "stripes"),  # cross of fuselage and wings
    4: ("boat", (40, 70, 160), "checker"),        # hull trapezoid with a mast triangle
}
FREQUENCY = {15: 0.34, 7: 0.26, 3: 0.2, 1: 0.12, 4: 0.08}


def _background(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """A gradient with random clutter, so background is not a flat colour."""
    c0, c1 = rng.integers(40, 220, size=(2, 3))
    t = np.linspace(0, 1, w)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, h)[:, None, None]
    arr = (c0 * (1 - t) + c1 * t) * np.ones((h, w, 1))
    img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 8))):  # clutter boxes, some in object-like colours
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(4, w // 3)), y0 + int(rng.integers(4, h // 3))
        if rng.random() < 0.3:
            base = np.array(OBJECTS[int(rng.choice(list(OBJECTS)))][1])
        else:
            base = rng.integers(30, 230, size=3)
        draw.rectangle([x0, y0, x1, y1], fill=tuple(int(v) for v in (base + rng.integers(-25, 26, 3)).clip(0, 255)))
    for _ in range(int(rng.integers(2, 5))):
        pts = [tuple(int(v) for v in rng.integers(0, (w, h))) for _ in range(2)]
        draw.line(pts, fill=tuple(int(v) for v in rng.integers(0, 256, 3)), width=int(rng.integers(1, 3)))
    return img


def _shape(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, s: float) -> None:
    """Draw one object silhouette (fill 255) centred at (cx, cy) with size s."""
    if kind == "person":
        draw.ellipse([cx - 0.18 * s, cy - 0.5 * s, cx + 0.18 * s, cy - 0.14 * s], fill=255)
        draw.rounded_rectangle([cx - 0.22 * s, cy - 0.12 * s, cx + 0.22 * s, cy + 0.5 * s], 0.1 * s, fill=255)
    elif kind == "car":
        draw.rectangle([cx - 0.5 * s, cy - 0.15 * s, cx + 0.5 * s, cy + 0.15 * s], fill=255)
        draw.rectangle([cx - 0.25 * s, cy - 0.32 * s, cx + 0.2 * s, cy - 0.1 * s], fill=255)
        for wx in (cx - 0.3 * s, cx + 0.3 * s):
            draw.ellipse([wx - 0.12 * s, cy + 0.08 * s, wx + 0.12 * s, cy + 0.32 * s], fill=255)
    elif kind == "bird":
        draw.ellipse([cx - 0.4 * s, cy - 0.22 * s, cx + 0.3 * s, cy + 0.22 * s], fill=255)
        draw.polygon([(cx + 0.28 * s, cy - 0.08 * s), (cx + 0.5 * s, cy), (cx + 0.28 * s, cy + 0.08 * s)], fill=255)
    elif kind == "aeroplane":
        draw.rectangle([cx - 0.5 * s, cy - 0.07 * s, cx + 0.5 * s, cy + 0.07 * s], fill=255)
        draw.polygon([(cx - 0.1 * s, cy - 0.45 * s), (cx + 0.1 * s, cy), (cx - 0.1 * s, cy + 0.45 * s)], fill=255)
        draw.polygon([(cx - 0.5 * s, cy - 0.2 * s), (cx - 0.38 * s, cy), (cx - 0.5 * s, cy + 0.05 * s)], fill=255)
    else:  # boat
        draw.polygon([(cx - 0.5 * s, cy + 0.05 * s), (cx + 0.5 * s, cy + 0.05 * s),
                      (cx + 0.32 * s, cy + 0.3 * s), (cx - 0.32 * s, cy + 0.3 * s)], fill=255)
        draw.polygon([(cx, cy - 0.5 * s), (cx, cy), (cx + 0.3 * s, cy)], fill=255)


def _texture(rng: np.random.Generator, kind: str, base: tuple[int, int, int], h: int, w: int) -> np.ndarray:
    """H x W x 3 colour field: jittered base colour modulated by the class's texture."""
    colour = np.array(base, dtype=np.float64) + rng.integers(-30, 31, 3)
    yy, xx = np.mgrid[0:h, 0:w]
    period = int(rng.integers(4, 7))
    if kind == "stripes":
        mod = ((xx + yy) // period % 2) * 2 - 1
    elif kind == "checker":
        mod = ((xx // period + yy // period) % 2) * 2 - 1
    elif kind == "spots":
        mod = np.where((xx % period < 2) & (yy % period < 2), 1.5, -0.3)
    else:
        mod = np.zeros((h, w))
    arr = colour + 35 * mod[..., None] + rng.normal(0, 6, (h, w, 3))
    return arr.clip(0, 255).astype(np.uint8)


def _sample(rng: np.random.Generator, h: int, w: int, band: int) -> tuple[Image.Image, np.ndarray]:
    """One image and its label map (0 background, class indices, 255 outline band)."""
    img = _background(rng, h, w)
    labels = np.zeros((h, w), dtype=np.uint8)
    classes = list(FREQUENCY)
    probs = np.array([FREQUENCY[c] for c in classes])
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.choice(classes, p=probs / probs.sum()))
        kind, base, texture = OBJECTS[cls]
        s = float(rng.uniform(0.35, 0.7)) * min(h, w)
        cx, cy = rng.uniform(0.3 * s, w - 0.3 * s), rng.uniform(0.3 * s, h - 0.3 * s)
        sil = Image.new("L", (w, h), 0)
        _shape(ImageDraw.Draw(sil), kind, cx, cy, s)
        img.paste(Image.fromarray(_texture(rng, texture, base, h, w)), (0, 0), sil)  # later objects occlude
        labels[np.asarray(sil) > 0] = cls
    img = img.filter(ImageFilter.GaussianBlur(0.6))
    img = Image.fromarray((np.asarray(img) + rng.normal(0, 5, (h, w, 3))).clip(0, 255).astype(np.uint8))
    lab = Image.fromarray(labels)
    size = 2 * band + 1  # a pixel is boundary when its neighbourhood mixes labels, as VOC's outlines are
    edge = np.asarray(lab.filter(ImageFilter.MaxFilter(size))) != np.asarray(lab.filter(ImageFilter.MinFilter(size)))
    labels[edge] = VOC_BOUNDARY
    return img, labels


def write(out: Path, seed: int = 0, n_train: int = 48, n_val: int = 16, n_test: int = 16,
          height: int = 112, width: int = 128, band: int = 1, year: int = 2012) -> Path:
    """Write out/VOCdevkit/VOC<year>/ deterministically by seed; sizes vary a little per image, as VOC's do."""
    out = Path(out)
    voc = out / "VOCdevkit" / f"VOC{year}"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits = {"train": n_train, "val": n_val, "test": n_test}
    lists: dict[str, list[str]] = {}
    index = 0
    for split, count in splits.items():
        lists[split] = []
        for _ in range(count):
            index += 1
            name = f"{year}_{index:06d}"
            landscape = rng.random() < 0.7  # like VOC: mostly landscape, some portrait
            h, w = (height, width) if landscape else (width, height)
            img, labels = _sample(rng, h, w, band)
            img.save(voc / "JPEGImages" / f"{name}.jpg", quality=92)
            mask = Image.fromarray(labels)
            mask.putpalette(VOC_PALETTE)  # 'L' -> 'P': indices kept, colours for viewers
            mask.save(voc / "SegmentationClass" / f"{name}.png")
            lists[split].append(name)
    lists["trainval"] = lists["train"] + lists["val"]
    for split, names in lists.items():
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return out
