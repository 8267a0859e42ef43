"""Layer-list arithmetic (shapes, parameters, receptive fields, multiply-adds) for written CNN exercises."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from cnnlab.errors import CnnlabError, did_you_mean
from cnnlab.text import parse_size

LAYER_KINDS = ("conv", "maxpool", "avgpool", "fc")
IGNORED = ("relu", "flatten")  # ReLU sits between layers anyway; fc flattens by itself
OPTION_KEYS = {"s": "stride", "p": "padding", "d": "dilation"}
SYNTAX_HINT = ("write layers like conv(5x5,5) -> maxpool(3,s2) -> fc(10); "
               "options sN (stride), pN (padding), dN (dilation)")


@dataclass(frozen=True)
class LayerSpec:
    """One parsed layer, remembering how it was written for error messages."""

    kind: str
    text: str
    index: int
    kernel: tuple[int, int] = (1, 1)
    out: int = 0            # conv: number of filters; fc: number of units
    stride: int = 1
    padding: int = 0
    dilation: int = 1


@dataclass
class LayerRow:
    """What one layer does to the tensor, with the arithmetic written out."""

    index: int
    text: str
    filter: str
    output: tuple[int, ...]   # H x W x C, or (units,) after fc
    weights: int
    biases: int
    receptive_field: tuple[int, int]
    mult_adds: int
    work: list[str] = field(default_factory=list)

    @property
    def params(self) -> int:
        return self.weights + self.biases


@dataclass
class ShapeReport:
    """All rows plus totals."""

    input_shape: tuple[int, int, int]
    rows: list[LayerRow]

    def totals(self) -> dict[str, int]:
        return {k: sum(getattr(r, k) for r in self.rows) for k in ("weights", "biases", "params", "mult_adds")}


# ----------------------------------------------------------------------------- parsing

def parse_input(text: str) -> tuple[int, int, int]:
    """'256x256x3' -> (H, W, C)."""
    size = parse_size(text, 3)
    if size is None:
        raise CnnlabError(f"input '{text}' is not HxWxC", "write it like 256x256x3 (height x width x channels)")
    h, w, c = size
    return h, w, c


def _kernel(token: str, layer: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)(?:x(\d+))?", token.strip().lower())
    if not m or int(m.group(1)) < 1 or (m.group(2) and int(m.group(2)) < 1):
        raise CnnlabError(f"layer {layer}: '{token}' is not a kernel size", "write 5x5, 5x3 or 5")
    return int(m.group(1)), int(m.group(2) or m.group(1))


def _positive(token: str, layer: str, what: str) -> int:
    if not token.strip().isdigit() or int(token) < 1:
        raise CnnlabError(f"layer {layer}: '{token}' is not a positive {what}", SYNTAX_HINT)
    return int(token)


def _options(tokens: list[str], layer: str) -> dict[str, int]:
    """'s2', 'p1', 'd2' (or 's=2') -> stride/padding/dilation."""
    opts: dict[str, int] = {}
    for token in tokens:
        m = re.fullmatch(r"([a-z]+)=?(\d+)", token.strip().lower())
        if not m or m.group(1) not in OPTION_KEYS:
            raise CnnlabError(f"layer {layer}: option '{token.strip()}' not understood", SYNTAX_HINT)
        opts[OPTION_KEYS[m.group(1)]] = int(m.group(2))
    if opts.get("stride", 1) < 1 or opts.get("dilation", 1) < 1:
        raise CnnlabError(f"layer {layer}: stride and dilation must be >= 1", SYNTAX_HINT)
    return opts


def _parse_layer(token: str, index: int) -> LayerSpec:
    m = re.fullmatch(r"([A-Za-z_]+)\s*\((.*)\)", token)
    if not m:
        raise CnnlabError(f"layer {index} '{token}' is not name(arguments)", SYNTAX_HINT)
    kind, args = m.group(1).lower(), [a for a in m.group(2).split(",")]
    if kind not in LAYER_KINDS:
        raise CnnlabError(f"layer {index}: unknown layer '{m.group(1)}'", did_you_mean(kind, LAYER_KINDS))
    label = f"{index} '{token}'"
    if kind == "conv":
        if len(args) < 2:
            raise CnnlabError(f"layer {label}: conv needs a kernel and a filter count", "e.g. conv(3x3,64)")
        return LayerSpec(kind, token, index, _kernel(args[0], label), _positive(args[1], label, "filter count"),
                         **_options(args[2:], label))
    if kind == "fc":
        if len(args) != 1:
            raise CnnlabError(f"layer {label}: fc takes one number, the units", "e.g. fc(512)")
        return LayerSpec(kind, token, index, out=_positive(args[0], label, "unit count"))
    opts = _options(args[1:], label)
    kernel = _kernel(args[0], label)
    opts.setdefault("stride", kernel[0])  # torch's pooling default: stride = kernel
    if opts.get("dilation", 1) != 1 and kind == "avgpool":
        raise CnnlabError(f"layer {label}: avgpool has no dilation", SYNTAX_HINT)
    return LayerSpec(kind, token, index, kernel, **opts)


def parse_layers(text: str) -> list[LayerSpec]:
    """'conv(5x5,5) -> maxpool(3,s2) -> fc(10)' -> layer specs (relu/flatten tokens are skipped)."""
    layers = []
    for raw in text.split("->"):
        token = raw.strip()
        if not token:
            raise CnnlabError(f"empty layer in '{text}'", "put one layer between each pair of '->'")
        if token.lower() in IGNORED:
            continue
        layers.append(_parse_layer(token, len(layers) + 1))
    if not layers:
        raise CnnlabError(f"no layers in '{text}'", SYNTAX_HINT)
    return layers


# ----------------------------------------------------------------------------- arithmetic

def _side(n: int, k: int, layer: LayerSpec, axis: str) -> tuple[int, str]:
    """One output side by torch's formula, erroring with the layer's name when it is not positive."""
    s, p, d = layer.stride, layer.padding, layer.dilation
    out = (n + 2 * p - d * (k - 1) - 1) // s + 1
    if out < 1:
        raise CnnlabError(f"layer {layer.index} '{layer.text}': output {axis} is {out} (input {axis} {n}, "
                          f"kernel {k}, stride {s}, padding {p}, dilation {d})",
                          "the input is too small here: use a smaller kernel/stride or more padding")
    return out, f"{axis} floor(({n} + 2*{p} - {d}*({k}-1) - 1)/{s}) + 1 = {out}"


def _fmt(n: int) -> str:
    return f"{n:,}"


def analyze(layers: list[LayerSpec], input_shape: tuple[int, int, int]) -> ShapeReport:
    """Walk the layers, tracking shape, receptive field (r += (k_eff-1)*jump, jump *= stride) and counts."""
    h, w, c = input_shape
    flat: int | None = None
    rf, jump = [1, 1], [1, 1]
    rows = []
    for layer in layers:
        if layer.kind == "fc":
            n_in = flat if flat is not None else h * w * c
            work = [f"inputs {n_in:,} = " + (f"{h}*{w}*{c}" if flat is None else "previous units"),
                    f"weights {n_in:,}*{layer.out:,} = {n_in * layer.out:,}; biases {layer.out:,}",
                    f"mult-adds {n_in:,}*{layer.out:,} = {n_in * layer.out:,}"]
            if flat is None:  # the first fc sees the whole map: a kernel as big as the map
                work.append(f"receptive field {rf[0]} + ({h}-1)*{jump[0]} = {rf[0] + (h - 1) * jump[0]}"
                            + (f" (height), {rf[1]} + ({w}-1)*{jump[1]} = {rf[1] + (w - 1) * jump[1]} (width)"
                               if (h, rf[0], jump[0]) != (w, rf[1], jump[1]) else "")
                            + ": the whole map")
                rf = [rf[0] + (h - 1) * jump[0], rf[1] + (w - 1) * jump[1]]
            rows.append(LayerRow(layer.index, layer.text, f"{n_in:,} -> {layer.out:,}", (layer.out,),
                                 n_in * layer.out, layer.out, (rf[0], rf[1]), n_in * layer.out, work))
            flat = layer.out
            continue
        if flat is not None:
            raise CnnlabError(f"layer {layer.index} '{layer.text}' comes after fc, which has no spatial shape",
                              "put conv/pool layers before the fc layers")
        kh, kw = layer.kernel
        if layer.kind != "conv" and layer.padding > min(kh, kw) // 2:
            raise CnnlabError(f"layer {layer.index} '{layer.text}': padding {layer.padding} exceeds half the "
                              "kernel", "torch allows pooling padding up to kernel/2")
        oh, work_h = _side(h, kh, layer, "height")
        ow, work_w = _side(w, kw, layer, "width")
        sides = [work_h.replace("height", "height and width")] if (h, kh) == (w, kw) else [work_h, work_w]
        ekh, ekw = layer.dilation * (kh - 1) + 1, layer.dilation * (kw - 1) + 1
        rf_work = f"receptive field {rf[0]} + ({ekh}-1)*{jump[0]} = {rf[0] + (ekh - 1) * jump[0]}"
        if (ekh, rf[0], jump[0]) != (ekw, rf[1], jump[1]):  # the two axes differ: write both
            rf_work += f" (height), {rf[1]} + ({ekw}-1)*{jump[1]} = {rf[1] + (ekw - 1) * jump[1]} (width)"
        rf = [rf[0] + (ekh - 1) * jump[0], rf[1] + (ekw - 1) * jump[1]]
        jump = [jump[0] * layer.stride, jump[1] * layer.stride]
        if layer.kind == "conv":
            out_c, weights, biases = layer.out, kh * kw * c * layer.out, layer.out
            macs = oh * ow * out_c * kh * kw * c
            filt = f"{kh}x{kw}x{c} x{out_c}"
            counts = [f"weights {kh}*{kw}*{c}*{out_c} = {weights:,}; biases {biases:,}",
                      f"mult-adds {oh}*{ow}*{out_c} outputs * {kh}*{kw}*{c} each = {macs:,}"]
        else:
            out_c, weights, biases, macs = c, 0, 0, 0
            filt = f"{kh}x{kw} {layer.kind[:3]}, stride {layer.stride}"
            counts = ["no weights, no mult-adds"]
        rows.append(LayerRow(layer.index, layer.text, filt, (oh, ow, out_c), weights, biases, (rf[0], rf[1]),
                             macs, [*sides, *counts, rf_work]))
        h, w, c = oh, ow, out_c
    return ShapeReport(input_shape, rows)


def shapes(layers_text: str, input_text: str) -> ShapeReport:
    """Parse and analyze in one call (what `cnnlab shapes` runs)."""
    return analyze(parse_layers(layers_text), parse_input(input_text))


# ----------------------------------------------------------------------------- text

def text_table(headers: list[str], rows: list[list[str]], left: int = 2) -> list[str]:
    """A plain aligned table: the first `left` columns left-aligned, numbers right-aligned."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]

    def line(cells: list[str]) -> str:
        return "  ".join(str(v).ljust(wd) if i < left else str(v).rjust(wd)
                         for i, (v, wd) in enumerate(zip(cells, widths))).rstrip()

    return [line(headers), "  ".join("-" * wd for wd in widths)] + [line(r) for r in rows]


def _shape(t: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in t)


def render_shapes(report: ShapeReport, work: bool = True) -> str:
    """The table, the totals, and each layer's arithmetic."""
    head = ["#", "layer", "filter", "output", "weights", "biases", "params", "recept. field", "mult-adds"]
    body = [["0", "input", "", _shape(report.input_shape), "", "", "", "1x1", ""]]
    body += [[str(r.index), r.text, r.filter, _shape(r.output), _fmt(r.weights), _fmt(r.biases), _fmt(r.params),
              _shape(r.receptive_field), _fmt(r.mult_adds)] for r in report.rows]
    t = report.totals()
    body.append(["", "total", "", "", _fmt(t["weights"]), _fmt(t["biases"]), _fmt(t["params"]), "",
                 _fmt(t["mult_adds"])])
    lines = [f"Input {_shape(report.input_shape)} (height x width x channels); ReLU between layers "
             "(no parameters). Output side = floor((n + 2p - d(k-1) - 1)/s) + 1.", ""]
    lines += text_table(head, body, left=4)
    if work:
        lines += ["", "Working:"]
        for r in report.rows:
            lines += [f"  {r.index}. {r.text}"] + [f"     {w}" for w in r.work]
    return "\n".join(lines) + "\n"


def report_dict(report: ShapeReport) -> dict:
    """JSON-able rows and totals."""
    return {"input": list(report.input_shape),
            "layers": [{"index": r.index, "layer": r.text, "filter": r.filter, "output": list(r.output),
                        "weights": r.weights, "biases": r.biases, "params": r.params,
                        "receptive_field": list(r.receptive_field), "mult_adds": r.mult_adds} for r in report.rows],
            "totals": report.totals()}

