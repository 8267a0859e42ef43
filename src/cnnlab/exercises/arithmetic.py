"""Convolution worked by hand (numpy, every product written out) so students can check their written answers."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from cnnlab.errors import CnnlabError

MAX_STEPS = 25  # cells per map whose sums are written out; larger maps show the first few only


# ----------------------------------------------------------------------------- parsing

def parse_matrix(text: str, what: str = "matrix") -> np.ndarray:
    """'1 2 3; 4 5 6' (rows split by ';' or newlines, values by spaces or commas) -> 2-D float array."""
    rows = [r for r in re.split(r"[;\n]", text.strip()) if r.strip()]
    if not rows:
        raise CnnlabError(f"{what}: no values", "write rows like '1 2 3; 4 5 6'")
    values: list[list[float]] = []
    for row in rows:
        cells = [c for c in re.split(r"[\s,]+", row.strip().strip("[]")) if c]
        try:
            values.append([float(c) for c in cells])
        except ValueError:
            bad = next(c for c in cells if not _is_number(c))
            raise CnnlabError(f"{what}: '{bad}' is not a number", "write rows like '1 2 3; 4 5 6'") from None
        if len(values[-1]) != len(values[0]):
            raise CnnlabError(f"{what}: row {len(values)} has {len(values[-1])} values, row 1 has {len(values[0])}",
                              "every row needs the same number of values")
    return np.array(values, dtype=np.float64)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def as_matrix(value: object, what: str) -> np.ndarray:
    """A matrix from text or from nested lists (as read from JSON/YAML)."""
    if isinstance(value, str):
        return parse_matrix(value, what)
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise CnnlabError(f"{what}: not a rectangular list of numbers", "every row needs the same length") from None
    if arr.ndim != 2 or arr.size == 0:
        raise CnnlabError(f"{what}: expected a 2-D matrix, got {arr.ndim}-D", "give rows like [[1, 2], [3, 4]]")
    return arr


def as_stack(values: object, what: str) -> np.ndarray:
    """C x H x W from a list of per-channel matrices, all the same size."""
    if isinstance(values, (str, np.ndarray)) or not isinstance(values, (list, tuple)):
        values = [values]
    if not values:
        raise CnnlabError(f"{what}: none given", f"give one {what} per channel")
    mats = [as_matrix(v, f"{what} {i + 1}") for i, v in enumerate(values)]
    for i, m in enumerate(mats[1:], start=2):
        if m.shape != mats[0].shape:
            raise CnnlabError(f"{what} {i} is {_size(m.shape)} but {what} 1 is {_size(mats[0].shape)}",
                              f"every {what} channel needs the same size")
    return np.stack(mats)


# ----------------------------------------------------------------------------- numbers as text

def num(x: float) -> str:
    """Numbers as a student writes them: 3 not 3.0, -inf for pooling pads, at most 4 decimals."""
    if math.isinf(x):
        return "-inf" if x < 0 else "inf"
    if math.isnan(x):
        return "*"
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.4f}".rstrip("0")


def _term(x: float) -> str:
    return f"({num(x)})" if x < 0 else num(x)


def _size(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def matrix_lines(m: np.ndarray) -> list[str]:
    """Right-aligned columns, one string per row."""
    cells = [[num(v) for v in row] for row in m]
    width = max(len(c) for row in cells for c in row)
    return [" ".join(c.rjust(width) for c in row) for row in cells]


def side_by_side(blocks: list[tuple[str, np.ndarray]], indent: str = "  ") -> list[str]:
    """Several titled matrices next to each other, as on paper."""
    cols = [[title] + matrix_lines(m) for title, m in blocks]
    widths = [max(len(s) for s in c) for c in cols]
    height = max(len(c) for c in cols)
    return [indent + "    ".join((c[i] if i < len(c) else "").ljust(w) for c, w in zip(cols, widths)).rstrip()
            for i in range(height)]


# ----------------------------------------------------------------------------- convolution

@dataclass
class ChannelWork:
    """One input channel filtered by its filter slice."""

    padded: np.ndarray
    kernel: np.ndarray     # as applied: rotated if flip
    output: np.ndarray
    steps: list[str]


@dataclass
class ConvWork:
    """Per-channel maps, their sum, and the arithmetic behind each cell."""

    inputs: np.ndarray
    filters: np.ndarray
    bias: float
    padding: int
    stride: int
    dilation: int
    flip: bool
    size_steps: list[str]
    channels: list[ChannelWork]
    combined: np.ndarray
    combined_steps: list[str]


def output_size(n: int, k: int, padding: int, stride: int, dilation: int) -> int:
    """floor((n + 2p - d(k-1) - 1) / s) + 1, the formula torch documents for Conv2d and MaxPool2d."""
    return (n + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def _size_step(axis: str, n: int, k: int, p: int, s: int, d: int) -> str:
    out = output_size(n, k, p, s, d)
    return (f"{axis}: floor(({n} + 2*{p} - {d}*({k}-1) - 1) / {s}) + 1 = "
            f"floor({n + 2 * p - d * (k - 1) - 1}/{s}) + 1 = {out}")


def _check_hyper(padding: int, stride: int, dilation: int) -> None:
    if padding < 0 or stride < 1 or dilation < 1:
        raise CnnlabError(f"padding {padding}, stride {stride}, dilation {dilation} are not valid",
                          "padding >= 0, stride >= 1, dilation >= 1")


def dilate(kernel: np.ndarray, dilation: int) -> np.ndarray:
    """The filter with dilation-1 zeros between taps: what a dilated filter covers on the input."""
    kh, kw = kernel.shape
    out = np.zeros((dilation * (kh - 1) + 1, dilation * (kw - 1) + 1))
    out[::dilation, ::dilation] = kernel
    return out


def _filter_map(x: np.ndarray, k: np.ndarray, stride: int, dilation: int, label: str) -> tuple[np.ndarray, list[str]]:
    """Slide k over x (cross-correlation, as torch does), writing out each cell's sum of products."""
    eh, ew = dilation * (k.shape[0] - 1) + 1, dilation * (k.shape[1] - 1) + 1
    oh, ow = (x.shape[0] - eh) // stride + 1, (x.shape[1] - ew) // stride + 1
    out = np.zeros((oh, ow))
    steps = []
    for i in range(oh):
        for j in range(ow):
            r, c = i * stride, j * stride
            window = x[r:r + eh:dilation, c:c + ew:dilation]
            out[i, j] = float((window * k).sum())
            if len(steps) < MAX_STEPS:
                terms = " + ".join(f"{_term(a)}*{_term(b)}" for a, b in zip(window.ravel(), k.ravel()))
                steps.append(f"{label}({i},{j}) = {terms} = {num(out[i, j])}"
                             f"   [rows {r}-{r + eh - 1}, cols {c}-{c + ew - 1}]")
    if oh * ow > MAX_STEPS:
        steps.append(f"... the other {oh * ow - MAX_STEPS} cells the same way")
    return out, steps


def convolve(inputs: np.ndarray, filters: np.ndarray, bias: float = 0.0, padding: int = 0, stride: int = 1,
             dilation: int = 1, flip: bool = False) -> ConvWork:
    """Filter each input channel with its filter slice, then add the maps and the bias (one output channel)."""
    _check_hyper(padding, stride, dilation)
    if inputs.shape[0] != filters.shape[0]:
        raise CnnlabError(f"{inputs.shape[0]} input channels but {filters.shape[0]} filter channels",
                          "give one filter (slice) per input channel")
    _, h, w = inputs.shape
    kh, kw = filters.shape[1:]
    oh, ow = output_size(h, kh, padding, stride, dilation), output_size(w, kw, padding, stride, dilation)
    if oh < 1 or ow < 1:
        raise CnnlabError(f"a {_size((kh, kw))} filter (dilation {dilation}) does not fit a "
                          f"{_size((h, w))} input with padding {padding}", "use a smaller filter or more padding")
    size_steps = [_size_step("height", h, kh, padding, stride, dilation),
                  _size_step("width", w, kw, padding, stride, dilation)]
    channels = []
    for c in range(inputs.shape[0]):
        padded = np.pad(inputs[c], padding)
        kernel = filters[c][::-1, ::-1].copy() if flip else filters[c]
        out, steps = _filter_map(padded, kernel, stride, dilation, f"map{c + 1}")
        channels.append(ChannelWork(padded, kernel, out, steps))
    combined = sum(ch.output for ch in channels) + bias
    combined_steps = []
    for i, j in np.ndindex(oh, ow):
        if len(combined_steps) == MAX_STEPS:
            combined_steps.append(f"... the other {oh * ow - MAX_STEPS} cells the same way")
            break
        parts = " + ".join(_term(ch.output[i, j]) for ch in channels)
        combined_steps.append(f"out({i},{j}) = {parts} + {_term(bias)} = {num(combined[i, j])}")
    return ConvWork(inputs, filters, bias, padding, stride, dilation, flip, size_steps, channels, combined,
                    combined_steps)


# ----------------------------------------------------------------------------- max pooling

@dataclass
class PoolWork:
    """Max pooling of each map with the window each maximum came from."""

    source: str
    maps: np.ndarray
    kernel: int
    stride: int
    padding: int
    outputs: np.ndarray
    steps: list[list[str]] = field(default_factory=list)


def max_pool(maps: np.ndarray, kernel: int, stride: int | None = None, padding: int = 0,
             source: str = "input") -> PoolWork:
    """Max over each kernel x kernel window; pads are -inf (as torch's MaxPool2d) so they never win."""
    stride = kernel if stride is None else stride  # torch's default: non-overlapping windows
    _check_hyper(padding, stride, 1)
    if kernel < 1 or padding > kernel // 2:
        raise CnnlabError(f"pooling kernel {kernel} with padding {padding} is not valid",
                          "kernel >= 1 and padding <= kernel/2 (as torch requires)")
    _, h, w = maps.shape
    oh, ow = output_size(h, kernel, padding, stride, 1), output_size(w, kernel, padding, stride, 1)
    if oh < 1 or ow < 1:
        raise CnnlabError(f"pooling kernel {kernel} does not fit a {_size((h, w))} map", "use a smaller kernel")
    outputs = np.zeros((maps.shape[0], oh, ow))
    all_steps = []
    for c in range(maps.shape[0]):
        padded = np.pad(maps[c], padding, constant_values=-np.inf)
        steps = []
        for i, j in np.ndindex(oh, ow):
            r, q = i * stride, j * stride
            window = padded[r:r + kernel, q:q + kernel]
            outputs[c, i, j] = window.max()
            wr, wc = np.unravel_index(int(window.argmax()), window.shape)
            if len(steps) < MAX_STEPS:
                steps.append(f"pool{c + 1}({i},{j}) = max({', '.join(num(v) for v in window.ravel())}) = "
                             f"{num(outputs[c, i, j])}   [at row {r + wr - padding}, col {q + wc - padding}]")
        if oh * ow > MAX_STEPS:
            steps.append(f"... the other {oh * ow - MAX_STEPS} cells the same way")
        all_steps.append(steps)
    return PoolWork(source, maps, kernel, stride, padding, outputs, all_steps)


# ----------------------------------------------------------------------------- maximally activating patch

@dataclass
class PatchWork:
    """The bounded input that makes the filter respond most; NaN marks cells that do not matter."""

    taps: np.ndarray       # C x kh x kw filter as applied (rotated if flip)
    kernel: np.ndarray     # the taps with dilation zeros: same size as the patch
    dilation: int
    bias: float
    low: float
    high: float
    patch: np.ndarray
    value: float
    value_steps: list[str]


def max_patch(filters: np.ndarray, bias: float = 0.0, low: float = -1.0, high: float = 1.0,
              dilation: int = 1, flip: bool = False) -> PatchWork:
    """The response b + sum(w*x) is linear in each x, so each x sits at the bound its weight's sign points to."""
    if not low < high:
        raise CnnlabError(f"input bounds [{num(low)}, {num(high)}] are empty", "give low < high, e.g. -1 1")
    _check_hyper(0, 1, dilation)
    taps = filters[:, ::-1, ::-1] if flip else filters
    kernel = np.stack([dilate(k, dilation) for k in taps])
    tap_mask = np.stack([dilate(np.ones_like(k), dilation) for k in taps]) > 0
    patch = np.where(kernel > 0, high, np.where(kernel < 0, low, np.nan))
    patch[~tap_mask] = np.nan  # between dilated taps: never multiplied
    best = np.maximum(kernel * low, kernel * high)
    value = float(best.sum()) + bias
    steps = []
    for c in range(kernel.shape[0]):
        terms = [f"{_term(w)}*{_term(x)}" for w, x in zip(kernel[c].ravel(), patch[c].ravel()) if not np.isnan(x)]
        steps.append(f"channel {c + 1}: {' + '.join(terms) or '0'} = {num(float(best[c].sum()))}")
    sums = " + ".join(_term(float(b.sum())) for b in best)
    steps.append(f"total = {sums} + {_term(bias)} (bias) = {num(value)}")
    return PatchWork(np.ascontiguousarray(taps), kernel, dilation, bias, low, high, patch, value, steps)


# ----------------------------------------------------------------------------- check against torch

def torch_check_conv(work: ConvWork) -> tuple[str, float]:
    """Run torch.nn.Conv2d with the same weights: (description, max |difference|) with the by-hand map."""
    import torch

    c, kh, kw = work.filters.shape
    kernel = work.filters[:, ::-1, ::-1].copy() if work.flip else work.filters
    conv = torch.nn.Conv2d(c, 1, (kh, kw), stride=work.stride, padding=work.padding, dilation=work.dilation,
                           dtype=torch.float64)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel))[None])
        conv.bias.fill_(work.bias)
        out = conv(torch.from_numpy(work.inputs)[None])[0, 0].numpy()
    desc = (f"torch.nn.Conv2d({c}, 1, kernel_size=({kh}, {kw}), stride={work.stride}, padding={work.padding}, "
            f"dilation={work.dilation}) with the same weights")
    return desc, float(np.abs(out - work.combined).max())


def torch_check_pool(work: PoolWork) -> tuple[str, float]:
    """Run torch.nn.MaxPool2d on the same maps: (description, max |difference|)."""
    import torch

    pool = torch.nn.MaxPool2d(work.kernel, stride=work.stride, padding=work.padding)
    out = pool(torch.from_numpy(work.maps)[None])[0].numpy()
    desc = f"torch.nn.MaxPool2d({work.kernel}, stride={work.stride}, padding={work.padding}) on the same maps"
    return desc, float(np.abs(out - work.outputs).max())


def torch_check_patch(work: PatchWork, seed: int = 0) -> tuple[str, float]:
    """Fill the don't-care cells with random in-bounds values, run Conv2d: (description, |response - claimed max|)."""
    import torch

    rng = np.random.default_rng(seed)
    filled = np.where(np.isnan(work.patch), rng.uniform(work.low, work.high, work.patch.shape), work.patch)
    c, kh, kw = work.taps.shape
    conv = torch.nn.Conv2d(c, 1, (kh, kw), dilation=work.dilation, dtype=torch.float64)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(work.taps)[None])
        conv.bias.fill_(work.bias)
        out = float(conv(torch.from_numpy(filled)[None])[0, 0, 0, 0])
    desc = (f"torch.nn.Conv2d({c}, 1, kernel_size=({kh}, {kw}), dilation={work.dilation}) with the same weights, "
            "on the patch with random in-bounds values in the * cells,")
    return desc, abs(out - work.value)


# ----------------------------------------------------------------------------- the worked answer as text

def _check_line(check: tuple[str, float]) -> str:
    desc, diff = check
    verdict = "agrees" if diff < 1e-9 else "DISAGREES"
    return f"Check: {desc} {verdict} (largest difference {diff:.3g})."


def render_conv(work: ConvWork, check: tuple[str, float] | None = None) -> list[str]:
    """Sizes, each filtered input with its sums, then the combined map."""
    c, h, w = work.inputs.shape
    kh, kw = work.filters.shape[1:]
    kind = "true convolution: filter rotated 180 degrees" if work.flip else "no filter flip, as in CNNs and torch"
    lines = [f"Convolution of {c} input map(s) of {h}x{w} with a {c}-channel {kh}x{kw} filter ({kind})",
             f"padding {work.padding}, stride {work.stride}, dilation {work.dilation}, bias {num(work.bias)}",
             "", "Output size = floor((n + 2*padding - dilation*(k-1) - 1) / stride) + 1:"]
    lines += ["  " + s for s in work.size_steps]
    for i, ch in enumerate(work.channels):
        lines += ["", f"Channel {i + 1}: input {i + 1} filtered by filter slice {i + 1}"]
        blocks = [("input (padded)" if work.padding else "input", ch.padded),
                  ("filter (rotated)" if work.flip else "filter", ch.kernel)]
        if work.dilation > 1:
            blocks.append((f"filter dilated by {work.dilation}", dilate(ch.kernel, work.dilation)))
        lines += side_by_side(blocks) + [""]
        lines += ["  " + s for s in ch.steps] + [""]
        lines += side_by_side([(f"filtered input {i + 1}", ch.output)])
    lines += ["", f"Combined map = {' + '.join(f'map{i + 1}' for i in range(c))} + bias:"]
    lines += ["  " + s for s in work.combined_steps] + [""]
    lines += side_by_side([(f"output ({_size(work.combined.shape)})", work.combined)])
    i, j = np.unravel_index(int(work.combined.argmax()), work.combined.shape)
    r, q = i * work.stride, j * work.stride
    eh, ew = work.dilation * (kh - 1) + 1, work.dilation * (kw - 1) + 1
    where = "padded input" if work.padding else "input"
    lines += ["", f"Largest response {num(work.combined[i, j])} at ({i},{j}), from {where} rows {r}-{r + eh - 1}, "
                  f"cols {q}-{q + ew - 1}."]
    return lines + ([_check_line(check)] if check else [])


def render_pool(work: PoolWork, check: tuple[str, float] | None = None) -> list[str]:
    """Each window's maximum, then the pooled maps."""
    lines = [f"Max pooling of the {work.source}: kernel {work.kernel}, stride {work.stride}, padding {work.padding}"
             + (" (pads are -inf, so they never win)" if work.padding else "")]
    _, h, w = work.maps.shape
    lines += ["  " + _size_step(axis, n, work.kernel, work.padding, work.stride, 1)
              for axis, n in (("height", h), ("width", w))]
    for c, steps in enumerate(work.steps):
        lines += ["", *side_by_side([(f"{work.source} map {c + 1}", work.maps[c])]), ""]
        lines += ["  " + s for s in steps] + [""]
        lines += side_by_side([(f"pooled map {c + 1}", work.outputs[c])])
    return [""] + lines + ([_check_line(check)] if check else [])


def render_patch(work: PatchWork, check: tuple[str, float] | None = None) -> list[str]:
    """The argument, the patch with '*' for cells that do not matter, and the maximum response."""
    lo, hi = num(work.low), num(work.high)
    gaps = " or between dilated taps" if work.dilation > 1 else ""
    lines = ["", f"Maximally activating input patch, inputs bounded to [{lo}, {hi}]",
             "The response b + sum(w*x) is linear in every x, so each x goes to the bound its weight favours:",
             f"x = {hi} where w > 0, x = {lo} where w < 0. Where w = 0{gaps}, x is multiplied by nothing,",
             "so it does not matter (marked *)."]
    for c in range(work.patch.shape[0]):
        lines += ["", *side_by_side([(f"filter {c + 1}", work.kernel[c]), (f"patch {c + 1}", work.patch[c])])]
    best = f"max(w*{_term(work.low)}, w*{_term(work.high)})"
    lines += ["", f"Maximum response = sum over weighted cells of {best} + bias:"]
    lines += ["  " + s for s in work.value_steps]
    return lines + ([_check_line(check)] if check else [])
