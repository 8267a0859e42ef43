"""`cnnlab conv`, `cnnlab shapes`, `cnnlab summary`: written-exercise arithmetic, checked against torch."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from cnnlab.errors import CnnlabError, did_you_mean
from cnnlab.exercises import arithmetic as ar
from cnnlab.text import parse_size


@dataclass
class Problem:
    """One written exercise: maps and/or filters, and which parts to answer."""

    inputs: np.ndarray | None = None     # C x H x W
    filters: np.ndarray | None = None    # C x kh x kw, one slice per input channel
    bias: float = 0.0
    padding: int = 0
    stride: int = 1
    dilation: int = 1
    flip: bool = False
    pool: int | None = None              # max-pooling kernel; pools the conv output, or the inputs if no filters
    pool_stride: int | None = None
    pool_padding: int = 0
    patch: bool = False                  # also find the maximally activating bounded input patch
    bounds: tuple[float, float] = (-1.0, 1.0)
    check: bool = True                   # compare every answer with torch


@dataclass
class Solution:
    """The worked parts of a Problem and their torch checks."""

    conv: ar.ConvWork | None = None
    pool: ar.PoolWork | None = None
    patch: ar.PatchWork | None = None
    checks: dict[str, tuple[str, float]] = field(default_factory=dict)


def solve(p: Problem) -> Solution:
    """Work every part the problem asks for, then (optionally) check each against torch."""
    if p.inputs is None and p.filters is None:
        raise CnnlabError("nothing to compute: no input maps and no filters", "give --input and/or --filter")
    if p.patch and p.filters is None:
        raise CnnlabError("the maximally activating patch needs filters", "give --filter")
    if p.inputs is None and p.pool:
        raise CnnlabError("max pooling needs input maps", "give --input")
    if p.inputs is not None and p.filters is None and not p.pool:
        raise CnnlabError("input maps but nothing to do with them", "give --filter and/or --pool")
    sol = Solution()
    if p.inputs is not None and p.filters is not None:
        sol.conv = ar.convolve(p.inputs, p.filters, p.bias, p.padding, p.stride, p.dilation, p.flip)
    if p.pool:
        maps, source = (sol.conv.combined[None], "output") if sol.conv else (p.inputs, "input")
        sol.pool = ar.max_pool(maps, p.pool, p.pool_stride, p.pool_padding, source)
    if p.patch:
        sol.patch = ar.max_patch(p.filters, p.bias, p.bounds[0], p.bounds[1], p.dilation, p.flip)
    if p.check:
        if sol.conv:
            sol.checks["conv"] = ar.torch_check_conv(sol.conv)
        if sol.pool:
            sol.checks["pool"] = ar.torch_check_pool(sol.pool)
        if sol.patch:
            sol.checks["patch"] = ar.torch_check_patch(sol.patch)
    return sol


def render_solution(sol: Solution) -> str:
    """All parts as one worked answer, lettered (a), (b), ... like a hand-in."""
    parts = []
    if sol.conv:
        parts.append(ar.render_conv(sol.conv, sol.checks.get("conv")))
    if sol.pool:
        parts.append(ar.render_pool(sol.pool, sol.checks.get("pool"))[1:])
    if sol.patch:
        parts.append(ar.render_patch(sol.patch, sol.checks.get("patch"))[1:])
    lettered = []
    for letter, lines in zip("abcdef", parts):
        lettered += ([""] if lettered else []) + [f"({letter}) {lines[0]}"] + lines[1:]
    return "\n".join(lettered) + "\n"


def _jsonable(m: np.ndarray) -> list:
    """Nested lists; NaN (does not matter) and -inf (pool pad) become null since JSON has neither."""
    return [_jsonable(r) for r in m] if m.ndim > 1 else [None if not np.isfinite(v) else float(v) for v in m]


def solution_dict(sol: Solution) -> dict:
    """The solution as plain JSON-able data."""
    out: dict = {}
    if sol.conv:
        w = sol.conv
        out["conv"] = {"padding": w.padding, "stride": w.stride, "dilation": w.dilation, "flip": w.flip,
                       "bias": w.bias, "output_size": list(w.combined.shape),
                       "channels": [{"input": _jsonable(c.padded), "filter": _jsonable(c.kernel),
                                     "output": _jsonable(c.output), "steps": c.steps} for c in w.channels],
                       "combined": _jsonable(w.combined), "combined_steps": w.combined_steps}
    if sol.pool:
        w = sol.pool
        out["pool"] = {"source": w.source, "kernel": w.kernel, "stride": w.stride, "padding": w.padding,
                       "outputs": _jsonable(w.outputs), "steps": w.steps}
    if sol.patch:
        w = sol.patch
        out["patch"] = {"bounds": [w.low, w.high], "dilation": w.dilation, "bias": w.bias,
                        "patch": _jsonable(w.patch), "max_response": w.value, "steps": w.value_steps}
    out["torch_check"] = {k: {"layer": d, "max_abs_difference": diff} for k, (d, diff) in sol.checks.items()}
    return out


# ----------------------------------------------------------------------------- problems from files and flags

PROBLEM_KEYS = ("inputs", "filters", "bias", "padding", "stride", "dilation", "flip", "pool", "pool_stride",
                "pool_padding", "patch", "bounds")


def read_problem_file(path: str | Path) -> dict:
    """A problem mapping from .json or .yaml/.yml, refusing unknown keys."""
    p = Path(path)
    if not p.is_file():
        raise CnnlabError(f"problem file not found: {p}", "check the path")
    try:
        raw = json.loads(p.read_text()) if p.suffix.lower() == ".json" else yaml.safe_load(p.read_text())
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise CnnlabError(f"{p}: not valid {'JSON' if p.suffix.lower() == '.json' else 'YAML'} "
                          f"({type(e).__name__})", "fix the syntax") from None
    if not isinstance(raw, dict):
        raise CnnlabError(f"{p}: expected a mapping with keys like inputs, filters, padding",
                          f"valid keys: {', '.join(PROBLEM_KEYS)}")
    if isinstance(raw.get("pool"), dict):  # pool: {kernel: 2, stride: 2, padding: 0}
        pool = dict(raw.pop("pool"))
        raw.update({"pool": pool.pop("kernel", None), "pool_stride": pool.pop("stride", None),
                    "pool_padding": pool.pop("padding", 0)})
        if pool:
            raise CnnlabError(f"{p}: unknown pool key '{next(iter(pool))}'", "valid: kernel, stride, padding")
    for key in raw:
        if key not in PROBLEM_KEYS:
            raise CnnlabError(f"{p}: unknown key '{key}'", did_you_mean(str(key), PROBLEM_KEYS))
    return raw


def _integer(raw: dict, key: str, default: int | None) -> int | None:
    value = raw.get(key, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise CnnlabError(f"'{key}' must be a whole number, got {value!r}")
    return value


def problem_from_mapping(raw: dict, check: bool = True) -> Problem:
    """Problem from a mapping of PROBLEM_KEYS (matrices as '1 2; 3 4' text or nested lists)."""
    inputs = ar.as_stack(raw["inputs"], "input") if raw.get("inputs") is not None else None
    filters = ar.as_stack(raw["filters"], "filter") if raw.get("filters") is not None else None
    bounds = raw.get("bounds", (-1.0, 1.0))
    try:
        low, high = (float(b) for b in bounds)
        bias = float(raw.get("bias", 0.0))
    except (TypeError, ValueError):
        raise CnnlabError(f"bias {raw.get('bias')!r} / bounds {bounds!r} are not numbers",
                          "bias is one number, bounds two (low high)") from None
    return Problem(inputs, filters, bias, _integer(raw, "padding", 0), _integer(raw, "stride", 1),
                   _integer(raw, "dilation", 1), bool(raw.get("flip", False)), _integer(raw, "pool", None),
                   _integer(raw, "pool_stride", None), _integer(raw, "pool_padding", 0), bool(raw.get("patch", False)),
                   (low, high), check)


def parse_chw(text: str) -> tuple[int, int, int]:
    """'3x64x64' -> (C, H, W)."""
    size = parse_size(text, 3)
    if size is None:
        raise CnnlabError(f"--input '{text}' is not CxHxW", "write it like 3x64x64 (channels x height x width)")
    c, h, w = size
    return c, h, w


def parse_params(items: list[str]) -> dict:
    """['depth=3', 'bilinear=true'] -> {'depth': 3, 'bilinear': True} (values read as YAML scalars)."""
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CnnlabError(f"--param '{item}' is not key=value", "e.g. --param base_channels=16")
        try:
            params[key.strip()] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            params[key.strip()] = value
    return params


def summarize_model(model: str, input_text: str | None, classes: int, params: dict) -> tuple[str, list]:
    """Build a model by name (or from a recipe file's model section) and summarize it with hooks."""
    from cnnlab.exercises.inspect_model import summarize

    if model.endswith((".yaml", ".yml")) or Path(model).is_file():
        from cnnlab.config import load_recipe

        recipe = load_recipe(model)
        name, params = recipe.model.name, {**recipe.model.params, **params}
        if input_text is None and recipe.data.size:
            input_text = f"3x{recipe.data.size[0]}x{recipe.data.size[1]}"
    else:
        name = model
    if input_text is None:
        raise CnnlabError(f"no input shape for '{model}'", "give --input CxHxW, e.g. --input 3x64x64")
    c, h, w = parse_chw(input_text)
    try:
        from cnnlab.models import build_model
    except ImportError:
        raise CnnlabError("the model registry (cnnlab.models.build_model) is not available in this install",
                          "reinstall cnnlab") from None
    module = build_model(name, c, classes, (h, w), params)
    title = f"{name} on input {c}x{h}x{w}, {classes} classes" + (f", params {params}" if params else "")
    return title, summarize(module, (c, h, w))


# ----------------------------------------------------------------------------- argparse

def _run_conv(args) -> int:
    raw = read_problem_file(args.file) if args.file else {}
    flags = {"inputs": args.input, "filters": args.filter, "bias": args.bias, "padding": args.padding,
             "stride": args.stride, "dilation": args.dilation, "pool": args.pool, "pool_stride": args.pool_stride,
             "pool_padding": args.pool_padding, "bounds": args.bounds}
    raw.update({k: v for k, v in flags.items() if v is not None})  # flags override the file
    raw.update({k: True for k in ("flip", "patch") if getattr(args, k)})
    solution = solve(problem_from_mapping(raw, check=not args.no_check))
    print(json.dumps(solution_dict(solution), indent=2) if args.json else render_solution(solution), end="\n"
          if args.json else "")
    return 0


def _run_shapes(args) -> int:
    from cnnlab.exercises.shapes import render_shapes, report_dict, shapes

    report = shapes(args.layers, args.input)
    print(json.dumps(report_dict(report), indent=2) if args.json else render_shapes(report, not args.no_work),
          end="\n" if args.json else "")
    return 0


def _run_summary(args) -> int:
    from cnnlab.exercises.inspect_model import render_summary, summary_dict

    title, rows = summarize_model(args.model, args.input, args.classes, parse_params(args.param))
    print(json.dumps({"model": title, **summary_dict(rows)}, indent=2) if args.json else render_summary(rows, title),
          end="\n" if args.json else "")
    return 0


def register(sub) -> None:
    """Add `conv`, `shapes` and `summary` to the main CLI's subparsers (handlers in `func`)."""
    p = sub.add_parser("conv", help="convolution / max pooling / best input patch by hand, checked with torch",
                       description="Matrices are rows split by ';' and values by spaces, e.g. --input '1 2; 3 4'. "
                                   "Give one --input per channel and one --filter per channel (the filter slice "
                                   "for that channel). A value starting with '-' needs --input='-1 2; 3 4'.")
    p.add_argument("--input", action="append", help="one input map (repeat per channel)")
    p.add_argument("--filter", action="append", help="the filter slice for one channel (repeat per channel)")
    p.add_argument("--file", help="JSON/YAML with inputs, filters, padding, stride, dilation, pool, patch, bounds")
    p.add_argument("--bias", type=float)
    p.add_argument("--padding", type=int, help="zeros around each input (default 0)")
    p.add_argument("--stride", type=int, help="default 1")
    p.add_argument("--dilation", type=int, help="gap between filter taps, 1 = ordinary (default 1)")
    p.add_argument("--flip", action="store_true", help="true convolution: rotate the filter 180 degrees first")
    p.add_argument("--pool", type=int, metavar="K", help="max pooling kernel (pools the conv output, or the inputs)")
    p.add_argument("--pool-stride", type=int, help="default: the kernel")
    p.add_argument("--pool-padding", type=int)
    p.add_argument("--patch", action="store_true", help="maximally activating input patch for the filter")
    p.add_argument("--bounds", type=float, nargs=2, metavar=("LOW", "HIGH"), help="input bounds (default -1 1)")
    p.add_argument("--no-check", action="store_true", help="skip the comparison with torch")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run_conv)

    p = sub.add_parser("shapes", help="shapes, parameters, receptive field, mult-adds of a layer list",
                       description="e.g. cnnlab shapes 'conv(5x5,5) -> maxpool(3,s2) -> fc(10)' --input 256x256x3")
    p.add_argument("layers", help="layers joined by '->': conv(KxK,N[,sS,pP,dD]), maxpool(K[,sS,pP]), "
                                  "avgpool(K[,sS,pP]), fc(N)")
    p.add_argument("--input", required=True, help="H x W x C, e.g. 256x256x3")
    p.add_argument("--no-work", action="store_true", help="table only, without the per-layer working")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run_shapes)

    p = sub.add_parser("summary", help="per-layer shapes, parameters and mult-adds of a cnnlab model")
    p.add_argument("model", help="a model name or a recipe .yaml")
    p.add_argument("--input", help="C x H x W, e.g. 3x64x64 (a recipe with data.size gives 3xHxW)")
    p.add_argument("--classes", type=int, default=2, help="number of classes (default 2)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="model builder argument")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run_summary)
