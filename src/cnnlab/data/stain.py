"""H&E stain unmixing (colour deconvolution) to a two-channel uint8 image with a fixed, documented scaling.

The maths is Ruifrok & Johnston's colour deconvolution exactly as scikit-image's `skimage.color.rgb2hed`
computes it (same stain matrix, same 1e-6 floor and log normalisation; tests/data/test_glas.py checks equality),
written here in numpy so that reading data needs no scikit-image at run time.

Fixed scaling (the same for every image, so intensities are comparable across images and splits):
    H channel: concentration 0 .. H_MAX -> 0 .. 255
    E channel: concentration 0 .. E_MAX -> 0 .. 255
in rgb2hed units. Values above the maximum saturate at 255. The maxima cover real H&E sections: dark nuclei
reach H ~ 0.2-0.27 and deeply eosin-stained stroma E ~ 0.06-0.09 while typical pink stroma is E ~ 0.02-0.04;
per-image percentile scaling was rejected because it would erase stain-intensity differences between images.
"""
from __future__ import annotations

import numpy as np
import torch

# Stain OD vectors (rows: haematoxylin, eosin, DAB) from Ruifrok & Johnston (2001), as in skimage.color.rgb_from_hed.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29],
                         [0.07, 0.99, 0.11],
                         [0.27, 0.57, 0.78]])
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
OD_FLOOR = 1e-6                      # intensities are floored here before the log (avoids log(0))
LOG_ADJUST = float(np.log(OD_FLOOR))  # normalises optical densities so a floored pixel has OD 1
H_MAX = 0.30
E_MAX = 0.12
STAIN_MAX = np.array([H_MAX, E_MAX])


def hed_concentrations(rgb_uint8: np.ndarray) -> np.ndarray:
    """H, E, DAB concentrations (float64, H x W x 3), identical to skimage.color.rgb2hed on uint8 input."""
    _check_rgb(rgb_uint8)
    rgb = np.maximum(rgb_uint8.astype(np.float64) / 255.0, OD_FLOOR)
    stains = (np.log(rgb) / LOG_ADJUST) @ HED_FROM_RGB
    return np.maximum(stains, 0.0)


def unmix_he(rgb_uint8: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 RGB -> H x W x 2 uint8 (haematoxylin, eosin) with the fixed scaling above."""
    he = hed_concentrations(rgb_uint8)[..., :2]
    scaled = np.clip(he / STAIN_MAX * 255.0, 0.0, 255.0)
    return np.rint(scaled).astype(np.uint8)


def unmix_he_batch(images: torch.Tensor) -> torch.Tensor:
    """N x 3 x H x W uint8 tensor -> N x 2 x H x W uint8 tensor (the same transform on a batch)."""
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
        raise ValueError(f"expected N x 3 x H x W uint8 images, got {tuple(images.shape)} {images.dtype}")
    arr = images.permute(0, 2, 3, 1).cpu().numpy()
    out = np.stack([unmix_he(a) for a in arr]) if len(arr) else np.zeros((0, *arr.shape[1:3], 2), np.uint8)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def he_to_rgb(he_uint8: np.ndarray) -> np.ndarray:
    """Two-channel H, E uint8 image -> RGB uint8 as the two stains alone would colour it (for figures)."""
    if he_uint8.ndim != 3 or he_uint8.shape[-1] != 2:
        raise ValueError(f"expected an H x W x 2 stain image, got shape {he_uint8.shape}")
    conc = he_uint8.astype(np.float64) / 255.0 * STAIN_MAX
    return stains_to_rgb(conc[..., 0], conc[..., 1])


def stains_to_rgb(h: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Concentration maps (rgb2hed units, float) -> RGB uint8 by the Beer-Lambert law (synthetic slides)."""
    od = -LOG_ADJUST * (np.stack([h, e], axis=-1) @ RGB_FROM_HED[:2])
    rgb = np.clip(np.exp(-od), 0.0, 1.0)
    return np.rint(rgb * 255.0).astype(np.uint8)


def _check_rgb(arr: np.ndarray) -> None:
    """Refuse anything but an H x W x 3 uint8 array (a float image would be silently mis-scaled)."""
    if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] != 3:
        shape = getattr(arr, "shape", None)
        dtype = getattr(arr, "dtype", type(arr).__name__)
        raise ValueError(f"expected an H x W x 3 uint8 RGB array, got shape {shape} dtype {dtype}")
