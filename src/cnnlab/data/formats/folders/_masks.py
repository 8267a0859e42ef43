"""Mask encodings of users' folders: discovered over all masks at once, so every split maps values the same way.

Encodings: binary 0/255 or 0/1, grey levels (each distinct value a class, in value order; 255 beside labels under
64 is void, ignored), palette PNGs (the
palette indices present, in index order; 255 = void, ignored), RGB colour codes (a `colors` table, or the colours
found), lossy (JPEG) binary masks thresholded at 128 with the snapped pixels counted, and instance maps (objects
numbered 1..n in each mask: object vs background).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from cnnlab.data.formats.common import read_image
from cnnlab.data.formats.folders._fit import header
from cnnlab.data.parallel import ordered_map
from cnnlab.errors import ConfigError, DataError

IGNORE = 255            # mask value excluded from loss and metrics (outside the FOV, padding, palette void)
MAX_LEVELS = 32         # more distinct grey values than this are not a label map
SNAP_DISTANCE = 60.0    # a colour further than this from every table colour is noise only if it is rare ...
FAR_SHARE = 0.005       # ... under 0.5% of all mask pixels; otherwise it is a class missing from the table
LOSSY_EXTS = {".jpg", ".jpeg"}
GREY_TINT = 24          # channels this close everywhere: a grey mask tinted by compression; class colours differ more


@dataclass(frozen=True)
class Encoding:
    """How mask values become class indices, plus what discovery found."""

    kind: str                       # binary | instances | grey | palette | lossy_binary | rgb
    values: tuple                   # grey values, palette indices or (r, g, b) colours, in class order (instances:
    #                                 every value found; 0 is background, any other an object)
    class_names: tuple[str, ...]
    pixel_counts: tuple[int, ...]   # per class, inside the field of view where one is given
    snapped: int = 0                # pixels that were not exactly a label value (lossy masks)
    void: bool = False              # palette index 255 present: mapped to the ignore value
    table: bool = False             # colours from the user's table (rgb)
    value_counts: tuple = ()        # instances: pixels per value in values (data.options.classes may map them)
    void_values: tuple = ()         # data.options.void: mask values ignored like 255 (grey, index or (r, g, b))
    void_pixels: int = 0            # pixels holding one of them (inside the field of view)

    def own_encoding(self) -> dict:
        """How predicted masks are written to match these files ({kind, values}, as MaskEncoding reads it): the
        same grey values, palette indices or colours; thresholded and instance masks as 0/255."""
        if self.kind in ("lossy_binary", "instances"):
            return {"kind": "binary", "values": [0, 255]}
        if self.kind == "rgb":
            return {"kind": "rgb", "values": [list(c) for c in self.values]}
        kind = {"palette": "palette", "binary": "binary"}.get(self.kind, "grey_levels")
        return {"kind": kind, "values": [int(v) for v in self.values]}

    def describe(self) -> str:
        """One line for notes and `data check`."""
        if self.void_values:
            listed = ", ".join(str(list(v)) if isinstance(v, tuple) else str(v) for v in self.void_values)
            return self._describe() + f"; void (ignored in loss and metrics, data.options.void): {listed}"
        return self._describe()

    def _describe(self) -> str:
        if self.kind == "binary":
            return f"binary {self.values[0]}/{self.values[-1]}"
        if self.kind == "lossy_binary":
            return (f"binary with compression noise (lossy masks): thresholded at 128, {self.snapped} pixels were "
                    "not exactly 0 or 255 and were snapped")
        if self.kind == "instances":
            return (f"instance map (each mask numbers its objects 1..n, up to {self.values[-1]}): read as object vs "
                    "background; to keep each value as a class give data.options.classes: {name: value, ...}")
        if self.kind == "grey":
            void = "; 255 = void (ignored)" if self.void else ""
            return f"{len(self.values)} grey levels {list(self.values)}, one class each in value order{void}"
        if self.kind == "palette":
            void = "; index 255 = void (ignored)" if self.void else ""
            return f"palette PNG, class = palette index (indices {list(self.values)}){void}"
        src = "the colors table" if self.table else ("colours discovered (no data.options.colors table, so classes "
                                                     "are in colour order and unnamed)")
        snap = f"; {self.snapped} lossy pixels snapped to the nearest colour" if self.snapped else ""
        pairs = ", ".join(f"{n}={list(c)}" for n, c in zip(self.class_names, self.values))
        return f"RGB colour codes from {src}: {pairs}{snap}"


def read_mask(path: Path, as_rgb: bool) -> tuple[np.ndarray, str]:
    """(array, kind): kind 'palette' (indices), 'grey' (values) or 'rgb' (H x W x 3); 1-bit masks become 0/255."""
    if as_rgb:
        return read_image(path, "RGB"), "rgb"
    mode = header(path)[2]
    if mode == "P":
        return read_image(path), "palette"
    if mode == "1":
        return read_image(path, "L"), "grey"
    if mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
        arr = read_image(path, "RGB")
        if (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all():
            return arr[..., 0].copy(), "grey"  # a grey mask saved as RGB
        if path.suffix.lower() in LOSSY_EXTS:  # a grey JPEG mask tinted by compression (Kvasir) is grey
            wide = arr.astype(np.int16)
            if max(np.abs(wide[..., 0] - wide[..., 1]).max(), np.abs(wide[..., 1] - wide[..., 2]).max()) <= GREY_TINT:
                return wide.mean(axis=2).round().astype(np.uint8), "grey"
        return arr, "rgb"  # lossless colours stay colours, however close
    arr = read_image(path) if mode not in ("LA",) else read_image(path, "L")
    return (arr if arr.ndim == 2 else arr[..., 0]), "grey"


def read_fov(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Boolean inside-the-field-of-view map (non-zero = inside; 0/255 GIFs and lossy files both work)."""
    arr = read_image(path)
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    if arr.shape != shape:
        raise DataError(f"{path}: field of view is {arr.shape[1]}x{arr.shape[0]} but its image is "
                        f"{shape[1]}x{shape[0]}", "the FOV mask must match its image's size")
    return arr >= 128 if arr.max(initial=0) > 1 else arr > 0


def _pack(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 -> one int per colour, for counting and lookup."""
    return (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]


def _unpack(c: int) -> tuple[int, int, int]:
    return (int(c) >> 16) & 255, (int(c) >> 8) & 255, int(c) & 255


def _count(arr: np.ndarray, kind: str, inside: np.ndarray | None) -> tuple[dict, dict]:
    """Value -> pixel count, over all pixels and inside the FOV."""
    flat = _pack(arr) if kind == "rgb" else arr
    vals, counts = np.unique(flat, return_counts=True)
    total = dict(zip(vals.tolist(), counts.tolist()))
    if inside is None:
        return total, total
    vals, counts = np.unique(flat[inside], return_counts=True)
    return total, dict(zip(vals.tolist(), counts.tolist()))


def _add(acc: dict, part: dict) -> None:
    for k, v in part.items():
        acc[k] = acc.get(k, 0) + v


def _default_names(n: int) -> tuple[str, ...]:
    """Two classes: background and class_1 (0 is the background of a binary mask). More: class_0, class_1, ...,
    since value 0 of a multi-class mask is not always background (CamVid's 0 is Sky; Cityscapes' trainId 0 is road):
    a names file (_names) or data.options.classes says which it is."""
    if n <= 2:
        return ("background",) + tuple(f"class_{i}" for i in range(1, n))
    return tuple(f"class_{i}" for i in range(n))


def _numbered_objects(per_mask: list[frozenset]) -> bool:
    """An instance map (GlaS, nuclei sets): each mask numbers its objects 1..n, and n differs between masks and
    reaches 5. Semantic label maps hold the same classes, or subsets that are not always 1..n; nested labels
    (a tumour's core inside its oedema: 0, 0-1, 0-2) rarely reach 5 classes."""
    counts = []
    for vals in per_mask:
        objects = sorted(v for v in vals if v != 0)
        if objects != list(range(1, len(objects) + 1)):
            return False
        counts.append(len(objects))
    return bool(counts) and max(counts) >= 5 and len(set(counts)) > 1


def _grey_encoding(total: dict, inside: dict, lossy: bool, first_mask: Path,
                   per_mask: list[frozenset]) -> Encoding:
    """Binary, instance map, grey levels or lossy binary from the value histograms of the masks."""
    vals = sorted(total)
    # 0/255 plus small deviations on both sides (near-white values 240-254 among them) is compression noise, not
    # classes. Small values alone are a label map: 0, 1, 2, ... (255 beside them: void, below) is how most tools
    # save one, and thresholding it at 128 would make every class background.
    clustered = all(v <= 15 or v >= 240 for v in vals) and any(240 <= v < 255 for v in vals)
    if set(vals) <= {0, 1} or set(vals) <= {0, 255}:
        values = (0, 1) if set(vals) <= {0, 1} else (0, 255)
        return Encoding("binary", values, _default_names(2), tuple(inside.get(v, 0) for v in values))
    if not lossy and _numbered_objects(per_mask):
        objects = sum(c for v, c in inside.items() if v != 0)
        return Encoding("instances", tuple(vals), ("background", "object"), (inside.get(0, 0), objects),
                        value_counts=tuple(inside.get(v, 0) for v in vals))
    labels = [v for v in vals if v != IGNORE]
    if (IGNORE in total and len(labels) >= 2 and labels[-1] < 64 and not lossy
            and sum(total[v] for v in labels if v) > total[IGNORE]):
        # 0..K-1 with 255 (VOC-Aug's grey masks, Cityscapes trainIds): 255 is void, ignored as in palette masks;
        # unless it outweighs every class but background (then it is the foreground of a 0/255 mask)
        return Encoding("grey", tuple(labels), _default_names(len(labels)), tuple(inside.get(v, 0) for v in labels),
                        void=True)
    if len(vals) <= MAX_LEVELS and not lossy and not (clustered and len(vals) > 2):
        return Encoding("grey", tuple(vals), _default_names(len(vals)), tuple(inside.get(v, 0) for v in vals))
    n = sum(total.values())
    extreme = sum(c for v, c in total.items() if v < 64 or v >= 192)
    if extreme < 0.95 * n:
        raise DataError(f"{first_mask.parent}: masks hold {len(vals)} distinct grey values and "
                        f"{100 * (1 - extreme / n):.0f}% of pixels are mid-grey: not a label map",
                        "masks must store one value per class (save them as PNG, not JPEG)")
    if vals[-1] < 128 and lossy:  # 0/1 (or 0..K-1) masks saved as JPEG: noise of +-1 is another class
        raise DataError(f"{first_mask.parent}: JPEG masks hold {len(vals)} distinct values ({vals[0]} to {vals[-1]}): "
                        "small label values do not survive JPEG compression", "save the masks as PNG")
    if vals[-1] < 128:  # a binary mask's foreground is near 255; many small values are objects, not noise
        raise DataError(f"{first_mask.parent}: masks hold {len(vals)} distinct values ({vals[0]} to {vals[-1]}): "
                        f"more classes than {MAX_LEVELS}, or an instance map (one value per object)",
                        "save semantic masks: one value per class (0 background, 1, 2, ... or 255 for objects)")
    snapped = sum(c for v, c in total.items() if v not in (0, 255))
    counts = (sum(c for v, c in inside.items() if v < 128), sum(c for v, c in inside.items() if v >= 128))
    return Encoding("lossy_binary", (0, 255), _default_names(2), counts, snapped)


def _palette_encoding(total: dict, inside: dict) -> Encoding:
    """Indices present in index order; 255 is VOC's void unless it is the only foreground (a 0/255 binary)."""
    vals = sorted(v for v in total if v != IGNORE)
    void = IGNORE in total and len(vals) > 1
    if IGNORE in total and not void:
        vals.append(IGNORE)
    return Encoding("palette", tuple(vals), _default_names(len(vals)), tuple(inside.get(v, 0) for v in vals),
                    void=void)


def _rgb_encoding(total: dict, inside: dict, colors: dict | None, first_mask: Path) -> Encoding:
    """Colour -> class from the table (lossy colours snapped to the nearest), or the colours found."""
    if colors is None:
        if len(total) > MAX_LEVELS:
            raise DataError(f"{first_mask.parent}: masks hold {len(total)} distinct colours (a photo, or lossy "
                            "JPEG colour masks)", "give data.options.colors: {name: [r, g, b], ...} to map them")
        keys = sorted(total)  # black (0, 0, 0) first: background in most tools
        return Encoding("rgb", tuple(_unpack(k) for k in keys), _default_names(len(keys)),
                        tuple(inside.get(k, 0) for k in keys))
    table = np.array([c for c in colors.values()], dtype=np.float64)
    counts, snapped, far = [0] * len(colors), 0, {}
    for key, n in total.items():
        dist = np.linalg.norm(table - np.array(_unpack(key)), axis=1).min()
        snapped += n if dist > 0 else 0
        if dist > SNAP_DISTANCE:
            far[key] = n
    # lossy edges scatter many rare in-between colours; a class missing from the table is one common colour
    worst = max(far, key=far.get, default=None)
    if worst is not None and far[worst] >= FAR_SHARE * sum(total.values()):
        raise DataError(f"{first_mask.parent}: colour {list(_unpack(worst))} ({far[worst]} pixels) is not in "
                        "data.options.colors", f"add it to the table (known: {', '.join(colors)})")
    for key, n in inside.items():
        counts[int(np.linalg.norm(table - np.array(_unpack(key)), axis=1).argmin())] += n
    return Encoding("rgb", tuple(tuple(c) for c in colors.values()), tuple(colors), tuple(counts), snapped,
                    table=True)


def _histogram(mask: Path, fov_s: str, as_rgb: bool) -> tuple[str, dict, dict]:
    """One mask's kind and value counts (all pixels, inside its FOV); runs in a decode thread."""
    arr, kind = read_mask(mask, as_rgb=as_rgb)
    fov = read_fov(Path(fov_s), arr.shape[:2]) if fov_s else None
    return (kind, *_count(arr, kind, fov))


def _drop_void(total: dict, inside: dict, void: tuple) -> int:
    """Remove the void values (data.options.void) from the histograms keyed (kind, value); returns their pixels
    inside the field of view. A grey level or palette index is void in grey and palette masks, a colour in RGB."""
    keys = {("rgb", (v[0] << 16) | (v[1] << 8) | v[2]) if isinstance(v, tuple) else (k, v)
            for v in void for k in ("grey", "palette")}
    for k in keys & set(total):
        total.pop(k)
    return sum(inside.pop(k) for k in keys & set(inside))


@lru_cache(maxsize=16)
def _discover_cached(files: tuple, colors_items: tuple | None, void: tuple = ()) -> Encoding:
    """Read every mask once (and its FOV) and decide the encoding; cached on paths, mtimes and the colour table."""
    colors = {k: list(v) for k, v in colors_items} if colors_items is not None else None
    total: dict = {}
    inside: dict = {}
    kinds: set[str] = set()
    per_mask: list[frozenset] = []
    for kind, t, i in ordered_map(lambda f: _histogram(Path(f[0]), f[2], colors is not None), files):
        kinds.add(kind)
        per_mask.append(frozenset(t))
        _add(total, {(kind, k): v for k, v in t.items()})
        _add(inside, {(kind, k): v for k, v in i.items()})
    lossy = any(Path(f[0]).suffix.lower() in LOSSY_EXTS for f in files)
    if "rgb" in kinds and len(kinds) > 1:  # some masks in colour, some grey/palette: compare them all as colours
        return _discover_cached(files, colors_items if colors_items is not None else (), void)
    void_pixels = _drop_void(total, inside, void)
    if void:
        plain = {v for v in void if not isinstance(v, tuple)}
        per_mask = [m - plain for m in per_mask]
    if not total and files:
        raise DataError(f"{Path(files[0][0]).parent}: every mask pixel is void (data.options.void)",
                        "check the void values against the masks' values (cnnlab data check folders)")
    first = Path(files[0][0])
    strip = lambda d: {k[1]: v for k, v in d.items()}  # noqa: E731 - kinds are uniform from here on
    if kinds == {"rgb"}:
        enc = _rgb_encoding(strip(total), strip(inside), colors or None, first)
    elif kinds == {"palette"}:
        enc = _palette_encoding(strip(total), strip(inside))
    else:
        enc = _grey_encoding(strip(total), strip(inside), lossy, first, per_mask)
    if not void:
        return enc
    return replace(enc, void_values=void, void_pixels=void_pixels)


def discover(masks: list[Path], fovs: list[Path | None], colors: dict | None, void: tuple = ()) -> Encoding:
    """The encoding of a whole data set's masks (every split), from their values; void values (data.options.void)
    are left out of the classes and read as the ignore value."""
    files = tuple((str(m), m.stat().st_mtime_ns, str(f) if f else "", f.stat().st_mtime_ns if f else 0)
                  for m, f in zip(masks, fovs))
    items = tuple((k, tuple(v)) for k, v in colors.items()) if colors is not None else None
    return _discover_cached(files, items, tuple(void))


def check_void(raw) -> tuple:
    """Validate data.options.void: a value or a list of grey levels / palette indices (0..254) and [r, g, b]
    colours; returned as ints and (r, g, b) tuples."""
    if raw is None:
        return ()
    items = list(raw) if isinstance(raw, (list, tuple)) else [raw]  # a colour alone is written [[r, g, b]]
    out = []
    for v in items:
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255:
            out.append(v)
        elif (isinstance(v, (list, tuple)) and len(v) == 3
              and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 255 for x in v)):
            out.append(tuple(v))
        else:
            raise ConfigError(f"data.options.void: {v!r} is neither a mask value 0..255 nor an [r, g, b] colour",
                              "e.g. void: [11] (grey level or palette index) or void: [[0, 0, 0]] (colour)")
    return tuple(dict.fromkeys(out))


def check_colors(colors) -> dict[str, list[int]] | None:
    """Validate data.options.colors: {name: [r, g, b]}."""
    if colors is None:
        return None
    if not isinstance(colors, dict) or not colors:
        raise ConfigError(f"data.options.colors must be a mapping name -> [r, g, b], got {colors!r}")
    for name, c in colors.items():
        if not (isinstance(c, (list, tuple)) and len(c) == 3 and all(isinstance(x, int) and 0 <= x <= 255
                                                                     for x in c)):
            raise ConfigError(f"data.options.colors.{name} must be [r, g, b] with 0..255 integers, got {c!r}")
    if len({tuple(c) for c in colors.values()}) != len(colors):
        raise ConfigError("data.options.colors: two classes share one colour", "each class needs its own colour")
    return {str(k): list(v) for k, v in colors.items()}


def with_classes(enc: Encoding, classes: list | dict) -> Encoding:
    """Apply data.options.classes: names in class order (a list), or {name: mask value} fixing values and order."""
    if isinstance(classes, list):
        if len(classes) != len(enc.class_names):
            extra = enc.values[len(classes):] if enc.kind in ("grey", "palette") else ()
            void = (f", or mark the unnamed value(s) void (ignored in loss and metrics): cnnlab new ... --void "
                    f"{','.join(map(str, extra))} (data.options.void: {list(extra)})" if extra else "")
            raise ConfigError(f"data.options.classes names {len(classes)} classes but the masks hold "
                              f"{len(enc.class_names)} ({enc.describe()})", f"give one name per class, in order{void}")
        return replace(enc, class_names=tuple(map(str, classes)))
    if enc.kind in ("rgb", "lossy_binary"):
        raise ConfigError("data.options.classes as {name: value} needs grey or palette masks",
                          "for colour masks use data.options.colors: {name: [r, g, b]}")
    values = list(classes.values())
    if not all(isinstance(v, int) and 0 <= v <= 255 for v in values) or len(set(values)) != len(values):
        raise ConfigError(f"data.options.classes values must be distinct mask values 0..255, got {values}")
    counts = dict(zip(enc.values, enc.value_counts if enc.kind == "instances" else enc.pixel_counts))
    stray = [v for v in counts if v not in values]
    if stray:
        raise ConfigError(f"masks hold value(s) {stray} that data.options.classes does not name",
                          f"add them (found {list(enc.values)}), or mark them void (ignored in loss and metrics): "
                          f"cnnlab new ... --void {','.join(map(str, stray))} (data.options.void: {stray})")
    return replace(enc, kind=enc.kind if enc.kind not in ("binary", "instances") else "grey", values=tuple(values),
                   class_names=tuple(map(str, classes)), pixel_counts=tuple(counts.get(v, 0) for v in values),
                   table=False, value_counts=())


def to_classes(path: Path, enc: Encoding) -> tuple[np.ndarray, int]:
    """One mask as class indices (H x W uint8; palette void and data.options.void -> 255) and its number of
    snapped pixels."""
    arr, _ = read_mask(path, as_rgb=enc.kind == "rgb")
    classes, snapped = _classes_of(arr, enc)
    if enc.void_values:
        colours = [(r << 16) | (g << 8) | b for r, g, b in (v for v in enc.void_values if isinstance(v, tuple))]
        plain = [v for v in enc.void_values if not isinstance(v, tuple)]
        void = np.isin(_pack(arr), colours) if arr.ndim == 3 else np.isin(arr, plain)
        classes = np.where(void, np.uint8(IGNORE), classes).astype(np.uint8)
    return classes, snapped


def _classes_of(arr: np.ndarray, enc: Encoding) -> tuple[np.ndarray, int]:
    """to_classes before data.options.void is applied."""
    if enc.kind == "rgb":
        packed = _pack(arr)
        keys = np.array([(r << 16) | (g << 8) | b for r, g, b in enc.values], dtype=np.int64)
        vals, inverse = np.unique(packed, return_inverse=True)
        table = np.array(enc.values, dtype=np.float64)
        rgb = np.stack([(vals >> 16) & 255, (vals >> 8) & 255, vals & 255], axis=1).astype(np.float64)
        nearest = np.linalg.norm(rgb[:, None] - table[None], axis=2).argmin(axis=1)
        exact = np.isin(vals, keys)
        snapped = int(np.bincount(inverse.ravel(), minlength=len(vals))[~exact].sum())
        return nearest.astype(np.uint8)[inverse.reshape(packed.shape)], snapped
    if enc.kind == "lossy_binary":
        return (arr >= 128).astype(np.uint8), int(np.count_nonzero((arr != 0) & (arr != 255)))
    if enc.kind == "instances":
        return (arr != 0).astype(np.uint8), 0
    lut = np.full(256, IGNORE, dtype=np.uint8)  # values outside the encoding (palette void) are ignored
    for cls, v in enumerate(enc.values):
        lut[v] = cls
    return lut[arr], 0
