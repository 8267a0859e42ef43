"""One preprocessing definition: how an image becomes the model's input, and how a prediction goes back to it.

The training readers (the folders reader's fit policies, the other formats' resize to data.size), evaluate (which
reads through the same readers), predict and export all use `Preprocess`, so that a model is never shown at
prediction time an image prepared differently from its training images. Policies (size = H x W of the input):

  resize, keep_aspect false   stretch to size                                          (every format's data.size)
  resize, keep_aspect true    scale to fit inside size keeping the aspect ratio, pad centred    (folders reader)
  pad                         native resolution, larger images scaled down to fit; pad centred  (folders reader)
  crop                        native resolution, smaller images scaled up to cover; centre crop (folders reader)

Resizing is bilinear with antialiasing on uint8 pixels, rounded back to uint8 (`resize_images`); padding is pixel
value 0 in images (before normalisation) and 255 (ignored) in masks. A prediction goes back by cutting the
padding off and resizing bilinearly to the image's own size; a crop policy leaves parts of an image unseen, so
whole images are predicted by tiling at the training scale instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cnnlab.data.formats.common import resize_images, resize_masks

FITS = ("resize", "pad", "crop")
PAD_VALUE = 0      # image padding, in uint8 pixels before normalisation
MASK_PAD = 255     # mask padding: ignored in loss and metrics
SIZED_BY_READER = ("folders", "glas")  # formats that pick a size themselves when data.size is unset


@dataclass(frozen=True)
class Placement:
    """Where one image lands in the model input: its own size, its size after scaling, and the offset of the
    scaled image's top-left corner in the input (negative where a crop cut rows or columns off)."""

    native: tuple[int, int]
    scaled: tuple[int, int]
    top: int
    left: int

    @property
    def whole(self) -> bool:
        """True when every pixel of the image reaches the model (nothing cropped away)."""
        return self.top >= 0 and self.left >= 0


@dataclass(frozen=True)
class Preprocess:
    """The resize policy, input size and normalisation a run was trained with (see the module docstring).

    native_scale: training saw images at their own resolution (no data.size and a reader that does not resize),
    so tiles of a sliding window need no rescaling."""

    size: tuple[int, int]
    fit: str = "resize"
    keep_aspect: bool = False
    native_scale: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @classmethod
    def for_data(cls, fmt: str, data_size: list[int] | None, options: dict, input_size: tuple[int, int],
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> Preprocess:
        """The policy of a recipe's data section (format, data.size, reader options) at the trained input size."""
        size = (int(input_size[0]), int(input_size[1]))
        if fmt == "folders":
            return cls(size, str(options.get("fit", "resize")), bool(options.get("keep_aspect", False)), False,
                       mean, std)
        return cls(size, "resize", False, data_size is None and fmt not in SIZED_BY_READER, mean, std)

    @property
    def stretches(self) -> bool:
        return self.fit == "resize" and not self.keep_aspect

    def place(self, h: int, w: int) -> Placement:
        """Where an h x w image lands in the input under the policy."""
        th, tw = self.size
        if self.stretches:
            return Placement((h, w), (th, tw), 0, 0)
        if self.fit == "crop":
            s = max(th / h, tw / w) if (h < th or w < tw) else 1.0  # cover the size, then centre-crop
        elif self.fit == "resize":
            s = min(th / h, tw / w)                                  # fit inside, then pad
        else:
            s = min(th / h, tw / w, 1.0)                             # only larger images are scaled (down)
        nh, nw = (max(1, round(h * s)), max(1, round(w * s))) if s != 1.0 else (h, w)
        if self.fit == "crop":
            return Placement((h, w), (nh, nw), -((nh - th) // 2), -((nw - tw) // 2))
        return Placement((h, w), (nh, nw), (th - nh) // 2, (tw - nw) // 2)

    def training_scale(self, h: int, w: int) -> tuple[int, int]:
        """The size an h x w image had when the model saw it (before padding or cropping): the pixel size that
        sliding-window tiles must have."""
        return (h, w) if self.native_scale else self.place(h, w).scaled

    def apply(self, img: torch.Tensor, mask: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor | None, Placement]:
        """C x H x W uint8 image (and H x W mask) -> exactly size by the policy; images bilinear, masks nearest."""
        h, w = img.shape[-2:]
        pl = self.place(h, w)
        if pl.scaled != (h, w):
            img = resize_images(img[None], pl.scaled)[0]
            mask = resize_masks(mask[None], pl.scaled)[0] if mask is not None else None
        if self.stretches:
            return img, mask, pl
        (th, tw), (nh, nw) = self.size, pl.scaled
        if pl.top < 0 or pl.left < 0:  # crop (a policy never both crops and pads)
            rows, cols = slice(-pl.top, -pl.top + th), slice(-pl.left, -pl.left + tw)
            img = img[:, rows, cols].contiguous()
            return img, (mask[rows, cols].contiguous() if mask is not None else None), pl
        pad = (pl.left, tw - nw - pl.left, pl.top, th - nh - pl.top)
        img = F.pad(img, pad, value=PAD_VALUE)
        return img, (F.pad(mask, pad, value=MASK_PAD) if mask is not None else None), pl

    def restore(self, probs: torch.Tensor, pl: Placement) -> torch.Tensor:
        """K x H x W probabilities of the model input -> K x h x w of the image: padding cut off, resized back."""
        if not pl.whole:
            raise ValueError("a cropped input does not cover its image; tile at the training scale instead")
        nh, nw = pl.scaled
        inner = probs[:, pl.top: pl.top + nh, pl.left: pl.left + nw]
        if tuple(inner.shape[-2:]) != pl.native:
            inner = F.interpolate(inner[None].float(), size=pl.native, mode="bilinear", align_corners=False)[0]
        return inner

    def words(self) -> str:
        """The policy in one phrase (notes of predict and evaluate)."""
        where = f"{self.size[0]}x{self.size[1]} (HxW)"
        if self.native_scale:
            return f"native resolution in training (inputs of {where}; other sizes are resized to it)"
        if self.stretches:
            return f"resized to {where}, aspect ratio not kept"
        if self.fit == "resize":
            return f"scaled to fit {where} keeping the aspect ratio, padded with 0 (letterbox)"
        if self.fit == "pad":
            return f"native resolution padded with 0 to {where} (larger images first scaled down to fit)"
        return f"native resolution, centre-cropped to {where} (smaller images first scaled up to cover)"

    def describe(self) -> dict:
        """Every field an application needs to prepare an image exactly as training did (export's JSON)."""
        steps = {
            "stretch": "resize to height x width (aspect ratio not kept)",
            "letterbox": "s = min(height / h, width / w); resize to round(h * s) x round(w * s); pad centred to "
                         "height x width with pad_value (top = (height - h') // 2, left = (width - w') // 2)",
            "pad": "s = min(height / h, width / w, 1); resize to round(h * s) x round(w * s) if s < 1; pad centred "
                   "to height x width with pad_value (top = (height - h') // 2, left = (width - w') // 2)",
            "crop": "s = max(height / h, width / w) if h < height or w < width, else 1; resize to round(h * s) x "
                    "round(w * s) if s > 1; centre-crop height x width (top = (h' - height) // 2, left = "
                    "(w' - width) // 2); whole images: tile at that scale with height x width windows",
        }
        policy = "stretch" if self.stretches else "letterbox" if self.fit == "resize" else self.fit
        back = ("argmax of the tiles' blended probabilities at the scaled size, resized to h x w" if policy == "crop"
                else "cut the padding off the output (the h' x w' region at top, left), resize it to h x w "
                "(bilinear) before the argmax" if policy in ("letterbox", "pad") else
                "resize the output to h x w (bilinear) before the argmax")
        return {"policy": policy, "fit": self.fit, "keep_aspect": self.keep_aspect,
                "size": list(self.size), "native_scale": self.native_scale,
                "steps": steps[policy], "pad_value": PAD_VALUE if policy in ("letterbox", "pad") else None,
                "interpolation": "bilinear with antialiasing on 0..255 pixels, rounded to integers (torch "
                                 "interpolate, align_corners=False, antialias=True)",
                "normalize": "(pixel / 255 - mean[c]) / std[c] after resizing and padding",
                "mean": list(self.mean) if self.mean is not None else None,
                "std": list(self.std) if self.std is not None else None,
                "output_to_image": back}
