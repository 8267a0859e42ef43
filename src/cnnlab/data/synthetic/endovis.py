"""Synthetic EndoVis course data: tissue-like background, seven instrument types, occlusion, highlights, noise."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["Background_Tissue", "Bipolar_Forceps", "Prograsp_Forceps", "Large_Needle_Driver", "Vessel_Sealer",
           "Grasping_Retractor", "Monopolar_Curved_Scissors", "Other"]
# Per instrument: shaft half-width (fraction of image width), RGB tint, tip shape. Distinct enough to learn,
# close enough (grey metal, shared shading) that colour alone is not the whole answer.
_KINDS = {
    1: (0.030, (150, 150, 165), "prongs"),
    2: (0.040, (120, 125, 120), "jaw"),
    3: (0.022, (175, 170, 160), "needle"),
    4: (0.050, (95, 100, 115), "block"),
    5: (0.035, (185, 180, 150), "hook"),
    6: (0.028, (140, 150, 175), "scissors"),
    7: (0.045, (200, 190, 120), "blob"),
}


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: random cells upsampled bilinearly."""
    small = rng.random((cells + 1, int(cells * w / h) + 2))
    img = Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 255.0


def _tissue(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Pink-red tissue with blotches, dark vessels and fine grain."""
    base = np.array([175, 70, 65], np.float32) * rng.uniform(0.85, 1.1)
    blotch = _smooth_noise(rng, h, w, 4)[..., None]
    img = base * (0.65 + 0.5 * blotch) + np.array([30, 10, 10], np.float32) * _smooth_noise(rng, h, w, 12)[..., None]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(rng.integers(2, 5)):
        a, f, ph, y0 = rng.uniform(5, 25), rng.uniform(0.01, 0.05), rng.uniform(0, 6.3), rng.uniform(0, h)
        d = np.abs(yy - (y0 + a * np.sin(f * xx + ph)))
        img *= 1 - 0.35 * np.exp(-(d / rng.uniform(1.5, 3.5)) ** 2)[..., None]
    return img


def _segment_dist(xx: np.ndarray, yy: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance of each pixel to segment p0-p1, and the position t in [0, 1] along it."""
    d = p1 - p0
    t = np.clip(((xx - p0[0]) * d[0] + (yy - p0[1]) * d[1]) / max(float(d @ d), 1e-6), 0, 1)
    return np.hypot(xx - (p0[0] + t * d[0]), yy - (p0[1] + t * d[1])), t


def _tip(kind: str, xx, yy, tip, u, r):
    """Mask of a class-specific tip shape at `tip`, pointing along unit vector u, scale r."""
    n = np.array([-u[1], u[0]])
    if kind == "prongs":
        m = np.zeros_like(xx, bool)
        for s in (-1, 1):
            m |= _segment_dist(xx, yy, tip, tip + 2.2 * r * u + s * 0.8 * r * n)[0] < 0.25 * r
        return m
    if kind == "scissors":
        m = np.zeros_like(xx, bool)
        for s in (-1, 1):
            m |= _segment_dist(xx, yy, tip, tip + 2.0 * r * u + s * 0.35 * r * n)[0] < 0.3 * r
        return m
    if kind == "jaw":
        c = tip + 1.2 * r * u
        a = ((xx - c[0]) * u[0] + (yy - c[1]) * u[1]) / (1.6 * r)
        b = ((xx - c[0]) * n[0] + (yy - c[1]) * n[1]) / (1.1 * r)
        return a ** 2 + b ** 2 < 1
    if kind == "needle":
        return _segment_dist(xx, yy, tip, tip + 3.0 * r * u)[0] < 0.2 * r
    if kind == "block":
        a = (xx - tip[0]) * u[0] + (yy - tip[1]) * u[1]
        b = (xx - tip[0]) * n[0] + (yy - tip[1]) * n[1]
        return (a > 0) & (a < 1.8 * r) & (np.abs(b) < 1.3 * r)
    if kind == "hook":
        c = tip + 1.2 * r * u
        d = np.hypot(xx - c[0], yy - c[1])
        return (d > 0.7 * r) & (d < 1.2 * r) & (((xx - c[0]) * n[0] + (yy - c[1]) * n[1]) > -0.3 * r)
    c = tip + 0.8 * r * u
    return np.hypot(xx - c[0], yy - c[1]) < 1.5 * r  # blob ("Other": clips, tubes)


def _instrument(rng, img, mask, cls: int, xx, yy) -> None:
    """Draw one instrument entering from the image border (later ones occlude earlier ones)."""
    h, w = mask.shape
    half, tint, kind = _KINDS[cls]
    r = half * w * rng.uniform(0.85, 1.2)
    side = rng.integers(0, 3)
    start = [np.array([rng.uniform(-0.05, 0.05) * w, rng.uniform(0.1, 0.9) * h]),
             np.array([rng.uniform(0.95, 1.05) * w, rng.uniform(0.1, 0.9) * h]),
             np.array([rng.uniform(0.1, 0.9) * w, rng.uniform(0.95, 1.05) * h])][side]
    tip = np.array([rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.75) * h])
    u = (tip - start) / max(np.linalg.norm(tip - start), 1e-6)
    dist, _ = _segment_dist(xx, yy, start, tip)
    shaft = dist < r
    region = shaft | _tip(kind, xx, yy, tip, u, r)
    across = np.clip(dist / r, 0, 1)
    shade = 0.55 + 0.45 * np.cos(across * np.pi / 2) * rng.uniform(0.8, 1.0)  # cylinder-like shading
    colour = np.array(tint, np.float32) * rng.uniform(0.8, 1.1)
    img[region] = (colour[None] * shade[region][:, None])
    mask[region] = cls


def _highlights(rng, img, xx, yy) -> None:
    """Specular highlights: bright saturated spots (they do not change the mask)."""
    h, w = img.shape[:2]
    for _ in range(rng.integers(2, 6)):
        c = rng.uniform([0, 0], [w, h])
        s = rng.uniform(2, 7) * w / 320
        g = np.exp(-(((xx - c[0]) / (1.8 * s)) ** 2 + ((yy - c[1]) / s) ** 2))
        img += 255 * g[..., None]


def make_sample(rng: np.random.Generator, h: int = 256, w: int = 320) -> tuple[np.ndarray, np.ndarray]:
    """One RGB frame and its class-index mask."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = _tissue(rng, h, w)
    mask = np.zeros((h, w), np.uint8)
    for cls in rng.choice(np.arange(1, 8), size=rng.integers(1, 4), replace=False):
        _instrument(rng, img, mask, int(cls), xx, yy)
    _highlights(rng, img, xx, yy)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), mask


def write(out: Path, seed: int = 0, n_train: int = 60, n_val: int = 16, n_test: int = 16,
          n_color_train: int = 60, n_color_val: int = 16, height: int = 256, width: int = 320) -> Path:
    """Write segmentation/{train,validation,test}, colorization/{train_cor,validation_cor} and mapping.json."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    (out / "segmentation").mkdir(parents=True, exist_ok=True)
    (out / "mapping.json").write_text(json.dumps({c: 32 * i for i, c in enumerate(CLASSES)}, indent=1))
    for split, n in (("train", n_train), ("validation", n_val), ("test", n_test)):
        for i in range(n):
            img, mask = make_sample(rng, height, width)
            d = out / "segmentation" / split / str(i)
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{i}_input.jpg", quality=92)
            Image.fromarray(mask * 32).save(d / f"{i}_mask.png")
    for split, n in (("train_cor", n_color_train), ("validation_cor", n_color_val)):
        for i in range(n):
            img, _ = make_sample(rng, height, width)
            d = out / "colorization" / split / str(i)
            d.mkdir(parents=True, exist_ok=True)
            pil = Image.fromarray(img)
            pil.save(d / f"{i}_input.jpg", quality=92)
            pil.convert("L").save(d / f"{i}_gray.jpg", quality=92)
    return out
