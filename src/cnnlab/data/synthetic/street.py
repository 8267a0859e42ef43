"""A synthetic street-scene stand-in (CamVid-like) for measuring rare classes: large regions (sky, buildings, road,
pavement, trees, cars) plus thin poles and small signs and pedestrians, each at 0.3-1% of the pixels.

Why: on the real street set (issue 39) the small classes ended at 0.00 IoU under the default loss while the
large ones carried the mean; the options that bring them back are compared on this stand-in (docs/results.md),
never on copies of real data. The small classes are made hard the way they are in photographs: poles are 1-2 px
wide and coloured like the buildings behind them, pedestrians are dark like shadows and car windows, signs are a few
pixels; colours vary per object and per image, with noise and lighting, so colour alone is not the answer.

Layout: images/0001TP_NNNNNN.png and masks/0001TP_NNNNNN.png (grey class indices 0..8, in CLASSES order), as one
keeps a labelled folder of frames.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["sky", "building", "pole", "road", "pavement", "tree", "sign", "car", "pedestrian"]
SKY, BUILDING, POLE, ROAD, PAVEMENT, TREE, SIGN, CAR, PEDESTRIAN = range(len(CLASSES))


def _noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1] (random cells upsampled bilinearly)."""
    small = rng.random((cells + 1, max(int(cells * w / h), 1) + 1))
    img = Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 255.0


def _paint(img: np.ndarray, lab: np.ndarray, where: np.ndarray, cls: int, rgb: np.ndarray) -> None:
    img[where] = rgb
    lab[where] = cls


def _background(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Sky, buildings, road and pavement: the large regions. Returns image, labels, horizon row, kerb rows."""
    img, lab = np.zeros((h, w, 3), np.float32), np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    horizon = int(h * rng.uniform(0.42, 0.55))
    _paint(img, lab, yy < horizon, SKY, np.array([150, 175, 215]) * rng.uniform(0.8, 1.1))
    img[:horizon] += 30 * (1 - yy[:horizon, :, None] / horizon)  # brighter towards the top
    x = 0
    while x < w:  # building blocks of varying height and colour along the street
        bw = int(rng.uniform(0.15, 0.4) * w)
        top = int(h * rng.uniform(0.05, 0.3))
        rgb = rng.uniform(80, 170) + rng.uniform(-25, 25, 3)
        block = (yy >= top) & (yy < horizon + 2) & (xx >= x) & (xx < x + bw)
        _paint(img, lab, block, BUILDING, rgb)
        win = block & ((yy - top) % 7 < 3) & ((xx - x) % 6 < 3)  # windows: a darker grid
        img[win] *= 0.6
        x += bw
    vanish = w * rng.uniform(0.35, 0.65)
    t = np.clip((yy - horizon) / max(h - horizon, 1), 0, 1)  # 0 at the horizon, 1 at the bottom row
    left, right = vanish - t * w * 0.9, vanish + t * w * 0.9
    ground = yy >= horizon
    _paint(img, lab, ground, PAVEMENT, np.array([165, 155, 140]) * rng.uniform(0.8, 1.1))
    road = ground & (xx > left + t * w * 0.25) & (xx < right - t * w * 0.25)
    _paint(img, lab, road, ROAD, np.array([95, 95, 100]) * rng.uniform(0.8, 1.15))
    lane = road & (np.abs(xx - vanish) < 0.6 + t * 1.5) & ((yy // 4) % 2 == 0)
    img[lane] = 215
    return img, lab, horizon, np.stack([left, right])


def _trees(rng: np.random.Generator, img: np.ndarray, lab: np.ndarray, horizon: int) -> None:
    h, w = lab.shape
    yy, xx = np.mgrid[0:h, 0:w]
    tex = _noise(rng, h, w, 10)
    for _ in range(rng.integers(1, 4)):
        cy, cx = horizon * rng.uniform(0.4, 0.9), rng.uniform(0, w)
        ry, rx = h * rng.uniform(0.1, 0.22), w * rng.uniform(0.06, 0.15)
        blob = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1 + 0.4 * (tex - 0.5)
        _paint(img, lab, blob, TREE, np.array([60, 105, 45]) * rng.uniform(0.7, 1.2))
        img[blob] *= (0.7 + 0.6 * tex[blob])[:, None]


def _cars(rng: np.random.Generator, img: np.ndarray, lab: np.ndarray, horizon: int) -> None:
    h, w = lab.shape
    for _ in range(rng.integers(1, 4)):
        cw, ch = int(w * rng.uniform(0.12, 0.25)), int(h * rng.uniform(0.08, 0.14))
        y1 = int(horizon + rng.uniform(0.1, 0.4) * (h - horizon))
        x0 = int(rng.uniform(0, w - cw))
        body = np.zeros_like(lab, bool)
        body[y1 - ch:y1, x0:x0 + cw] = True
        _paint(img, lab, body, CAR, rng.uniform(30, 220, 3))
        img[y1 - ch:y1 - ch // 2, x0 + cw // 6:x0 + cw - cw // 6] = 40  # windows: dark like pedestrians
        img[y1 - 2:y1, x0:x0 + cw] = 20  # shadow line under the car


def _small_things(rng: np.random.Generator, img: np.ndarray, lab: np.ndarray, horizon: int,
                  kerbs: np.ndarray) -> None:
    """Poles (1-2 px, building-coloured), signs on some of them, pedestrians on the pavement."""
    h, w = lab.shape
    for _ in range(rng.integers(2, 5)):
        y1 = int(horizon + rng.uniform(0.05, 0.5) * (h - horizon))
        side = rng.integers(0, 2)
        x = int(np.clip(kerbs[side, y1, 0] + (rng.uniform(-6, 0) if side == 0 else rng.uniform(0, 6)), 2, w - 3))
        x = int(rng.uniform(0, w - 2)) if rng.random() < 0.3 else x
        pw, top = int(rng.integers(1, 3)), int(h * rng.uniform(0.1, 0.3))
        grey = rng.uniform(90, 160) + rng.uniform(-10, 10, 3)
        img[top:y1, x:x + pw], lab[top:y1, x:x + pw] = grey, POLE
        if rng.random() < 0.7:  # a sign near the top of the pole
            s = int(rng.integers(4, 8))
            sy, sx = top + int(rng.integers(0, 4)), x - s // 2
            colour = [(200, 40, 40), (40, 70, 190), (220, 200, 50), (230, 230, 230)][rng.integers(0, 4)]
            img[sy:sy + s, max(sx, 0):sx + s] = np.array(colour) * rng.uniform(0.7, 1.1)
            lab[sy:sy + s, max(sx, 0):sx + s] = SIGN
    for _ in range(rng.integers(1, 5)):
        ph = int(h * rng.uniform(0.07, 0.13))
        pwid = max(2, ph // 3)
        y1 = int(horizon + rng.uniform(0.1, 0.7) * (h - horizon))
        side = rng.integers(0, 2)
        x = int(np.clip(kerbs[side, y1, 0] - (pwid + 3 if side == 0 else -3) + rng.uniform(-4, 4), 0, w - pwid))
        yy, xx = np.mgrid[0:h, 0:w]
        body = (((yy - (y1 - ph / 2)) / (ph / 2)) ** 2 + ((xx - (x + pwid / 2)) / (pwid / 2)) ** 2) < 1
        _paint(img, lab, body, PEDESTRIAN, rng.uniform(20, 90) + rng.uniform(-15, 15, 3))


def render(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One frame: RGB uint8 H x W x 3 and class indices uint8 H x W."""
    img, lab, horizon, kerbs = _background(rng, height, width)
    _trees(rng, img, lab, horizon)
    _cars(rng, img, lab, horizon)
    _small_things(rng, img, lab, horizon, kerbs)
    light = 0.75 + 0.5 * _noise(rng, height, width, 3)[..., None]  # uneven light and shade
    img = img * light * rng.uniform(0.8, 1.15) + rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), lab


def write(out: Path, seed: int = 0, n: int = 240, height: int = 120, width: int = 160) -> Path:
    """images/ and masks/ of n frames under out (one generator per frame: n never changes the others); the 240
    of docs/results.md by default (`cnnlab data synth street --out DIR`)."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        rgb, lab = render(np.random.default_rng([seed, i]), height, width)
        Image.fromarray(rgb, "RGB").save(out / "images" / f"0001TP_{i:06d}.png")
        Image.fromarray(lab, "L").save(out / "masks" / f"0001TP_{i:06d}.png")
    return out


def shares(masks: np.ndarray) -> dict[str, float]:
    """Each class's share of the pixels of a stack of label maps."""
    counts = np.bincount(masks.reshape(-1), minlength=len(CLASSES))[:len(CLASSES)]
    return {c: float(n) / masks.size for c, n in zip(CLASSES, counts)}
