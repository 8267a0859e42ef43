"""A small synthetic GlaS-layout data set: stained-looking colon tissue with irregular glands.

Each image is rendered from haematoxylin and eosin concentration maps through the Beer-Lambert law (the inverse of
the reader's colour deconvolution), so both the RGB and the stain-unmixed inputs look like H&E:
- pink stroma (eosin texture) with scattered purple stromal nuclei;
- glands: an irregular outline, a purple epithelial rim dense with nuclei and a pale lumen (the lumen is part of
  the gland, as in GlaS annotations); malignant images have more irregular glands, thicker rims, smaller lumens;
- distractors: pale gaps in the stroma with no epithelial rim (not glands), so "pale = gland" is wrong and a
  model must use the rim around the lumen.
Annotations are instance labels (1..k per image, 8-bit BMP) and Grade.csv lists the benign/malignant grade.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from cnnlab.data.stain import stains_to_rgb

GRADE_HEADER = ["name", "Patient ID", " grade (GlaS)", " grade (Sirinukunwattana et al. 2015)"]
_SUBTYPE = {"benign": "adenomatous", "malignant": "moderately differentiated"}
_PREFIX_CODE = {"train": 0, "testA": 1, "testB": 2}


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid bilinearly upsampled (tissue texture)."""
    gh, gw = shape[0] // cell + 2, shape[1] // cell + 2
    grid = rng.uniform(-1, 1, (gh, gw))
    y = np.linspace(0, gh - 1.001, shape[0])
    x = np.linspace(0, gw - 1.001, shape[1])
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    a, b = grid[y0][:, x0], grid[y0][:, x0 + 1]
    c, d = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _dots(rng: np.random.Generator, shape: tuple[int, int], count: int, radius: float) -> np.ndarray:
    """A map of `count` small round blobs (nuclei), values in [0, 1]."""
    out = np.zeros(shape)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    for cy, cx in zip(rng.uniform(0, shape[0], count), rng.uniform(0, shape[1], count)):
        r = radius * rng.uniform(0.7, 1.3)
        y0, y1 = max(int(cy - 2 * r), 0), min(int(cy + 2 * r) + 1, shape[0])
        x0, x1 = max(int(cx - 2 * r), 0), min(int(cx + 2 * r) + 1, shape[1])
        d2 = (yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2
        np.maximum(out[y0:y1, x0:x1], np.exp(-d2 / (r * r)), out=out[y0:y1, x0:x1])
    return out


def _blob(shape: tuple[int, int], centre: tuple[float, float], radii: tuple[float, float], angle: float,
          harmonics: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """Normalised radius rho of an irregular blob: rho <= 1 inside; the outline wobbles with a few harmonics."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    dy, dx = yy - centre[0], xx - centre[1]
    ca, sa = np.cos(angle), np.sin(angle)
    u, v = (dx * ca + dy * sa) / radii[1], (-dx * sa + dy * ca) / radii[0]
    theta = np.arctan2(v, u)
    wobble = 1.0 + sum(a * np.cos((k + 2) * theta + p) for k, (a, p) in enumerate(zip(harmonics, phases)))
    return np.hypot(u, v) / np.maximum(wobble, 0.3)


def _place(rng: np.random.Generator, shape: tuple[int, int], placed: list[tuple[float, float, float]],
           radius: float) -> tuple[float, float] | None:
    """A centre whose disc does not overlap the discs already placed (rejection sampling), or None."""
    for _ in range(60):
        cy, cx = rng.uniform(-0.1, 1.1) * shape[0], rng.uniform(-0.1, 1.1) * shape[1]
        if all(np.hypot(cy - py, cx - px) > 1.25 * (radius + pr) + 2 for py, px, pr in placed):
            return cy, cx
    return None


def render(rng: np.random.Generator, shape: tuple[int, int], malignant: bool) -> tuple[np.ndarray, np.ndarray]:
    """One slide: RGB uint8 image (H x W x 3) and instance labels (H x W uint8, 0 = background)."""
    h_conc = 0.012 + 0.006 * _smooth_noise(rng, shape, 12)
    e_conc = 0.032 + 0.014 * _smooth_noise(rng, shape, 10) + 0.006 * _smooth_noise(rng, shape, 3)
    h_conc += 0.16 * _dots(rng, shape, int(shape[0] * shape[1] / 180), 1.3)  # stromal nuclei
    labels = np.zeros(shape, np.uint8)
    placed: list[tuple[float, float, float]] = []
    side = min(shape)
    n_glands, gland_id = int(rng.integers(4, 8)), 0
    for _ in range(n_glands):
        radius = side * rng.uniform(0.10, 0.22)
        centre = _place(rng, shape, placed, radius)
        if centre is None:
            continue
        placed.append((*centre, radius))
        wobble = rng.uniform(0.10, 0.28, 4) if malignant else rng.uniform(0.0, 0.09, 4)
        rho = _blob(shape, centre, (radius * rng.uniform(0.7, 1.0), radius), rng.uniform(0, np.pi),
                    wobble / np.arange(1, 5), rng.uniform(0, 2 * np.pi, 4))
        inside = (rho <= 1.0) & (labels == 0)  # wobbly outlines may touch: the first gland keeps the pixel
        if not inside.any():
            continue
        # malignant glands: thick rims, small or no lumen (solid nests)
        lumen_frac = rng.uniform(0.0, 0.45) if malignant else rng.uniform(0.45, 0.7)
        lumen = inside & (rho < lumen_frac)
        rim = inside & ~lumen
        nuclei = _dots(rng, shape, int(inside.sum() / 25) + 1, 1.6)
        # epithelium: nuclei crowd at the basal (outer) side, paler cytoplasm towards the lumen
        basal = np.clip((rho[rim] - lumen_frac) / (1.0 - lumen_frac), 0.0, 1.0)
        h_conc[rim] = 0.03 + 0.08 * basal + 0.16 * nuclei[rim] + 0.015 * rng.random(int(rim.sum()))
        e_conc[rim] = 0.05 - 0.015 * basal
        h_conc[lumen], e_conc[lumen] = 0.004, 0.006 + 0.004 * rng.random()
        gland_id += 1
        labels[inside] = gland_id
    _add_gaps(rng, shape, placed, h_conc, e_conc, labels)
    stain_h, stain_e = rng.uniform(0.8, 1.25, 2)  # slide-to-slide staining differences
    od_noise = rng.normal(0, 0.0025, (2, *shape))
    rgb = stains_to_rgb(np.clip(h_conc * stain_h + od_noise[0], 0, None),
                        np.clip(e_conc * stain_e + od_noise[1], 0, None))
    return _box_blur(rgb), labels


def _add_gaps(rng: np.random.Generator, shape: tuple[int, int], placed: list[tuple[float, float, float]],
              h_conc: np.ndarray, e_conc: np.ndarray, labels: np.ndarray) -> None:
    """Pale tissue gaps without an epithelial rim (not glands): they punish 'pale means gland'."""
    for _ in range(int(rng.integers(1, 4))):
        radius = min(shape) * rng.uniform(0.05, 0.10)
        centre = _place(rng, shape, placed, radius)
        if centre is None:
            continue
        placed.append((*centre, radius))
        rho = _blob(shape, centre, (radius * rng.uniform(0.4, 0.9), radius), rng.uniform(0, np.pi),
                    rng.uniform(0.05, 0.2, 4), rng.uniform(0, 2 * np.pi, 4))
        gap = (rho <= 1.0) & (labels == 0)
        h_conc[gap], e_conc[gap] = 0.003, 0.005


def _box_blur(rgb: np.ndarray) -> np.ndarray:
    """3 x 3 mean filter: scanned slides are slightly soft, and hard pixel edges would make the task trivial."""
    pad = np.pad(rgb.astype(np.float32), ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = rgb.shape[:2]
    acc = sum(pad[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3))
    return np.rint(acc / 9.0).astype(np.uint8)


def write(out: Path, seed: int = 0, n_train: int = 24, n_test_a: int = 10, n_test_b: int = 6,
          width: int = 176, height: int = 120) -> Path:
    """Write train_N / testA_N / testB_N .bmp with _anno.bmp instance labels and Grade.csv into one folder.

    Every fourth image is smaller (as GlaS mixes 775x522 and 567x430 slides), so readers must resize.
    """
    if min(n_train, n_test_a, n_test_b) < 0 or min(width, height) < 32:
        raise ValueError("counts must be >= 0 and width/height >= 32")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for prefix, count in (("train", n_train), ("testA", n_test_a), ("testB", n_test_b)):
        for n in range(1, count + 1):
            # one generator per image: changing a count never changes the other images
            rng = np.random.default_rng([seed, _PREFIX_CODE[prefix], n])
            shape = (height, width) if n % 4 else (int(height * 0.85), int(width * 0.75))
            malignant = bool(rng.random() < 0.5)
            rgb, labels = render(rng, shape, malignant)
            Image.fromarray(rgb, "RGB").save(out / f"{prefix}_{n}.bmp")
            Image.fromarray(labels, "L").save(out / f"{prefix}_{n}_anno.bmp")
            grade = "malignant" if malignant else "benign"
            rows.append([f"{prefix}_{n}", str(1 + (n - 1) // 4), f" {grade}", f" {_SUBTYPE[grade]}"])
    with open(out / "Grade.csv", "w", newline="") as f:
        csv.writer(f).writerows([GRADE_HEADER, *rows])
    return out
