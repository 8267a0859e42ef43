"""Per-layer table (output shape, parameters, multiply-adds) read from a real module with forward hooks."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.exercises.shapes import text_table


@dataclass
class SummaryRow:
    """One call of one leaf module."""

    name: str                  # dotted path in the model, as in named_modules()
    kind: str                  # class name
    filter: str                # conv: out x in/groups x kh x kw; linear: in -> out
    output: tuple[int, ...]    # per-sample output shape (no batch dimension)
    weights: int
    biases: int
    mult_adds: int

    @property
    def params(self) -> int:
        return self.weights + self.biases


def _counts(params: list[tuple[str, nn.Parameter]], counted: set[int]) -> tuple[int, int]:
    """(weights, biases) not counted before (tied weights count once, as in parameters()); 'bias' names are biases."""
    params = [(n, p) for n, p in params if id(p) not in counted]
    counted.update(id(p) for _, p in params)
    biases = sum(p.numel() for n, p in params if n.rsplit(".", 1)[-1] == "bias")
    return sum(p.numel() for _, p in params) - biases, biases


def mult_adds(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """Multiply-adds per sample of conv and linear layers (bias additions not counted, as in torch's counter)."""
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        # every input value is multiplied into a kernel-sized patch of each output channel in its group
        per_in = module.out_channels // module.groups * math.prod(module.kernel_size)
        return inp[0].numel() * per_in
    if isinstance(module, nn.modules.conv._ConvNd):
        per_out = module.in_channels // module.groups * math.prod(module.kernel_size)
        return out[0].numel() * per_out
    if isinstance(module, nn.Linear):
        return out[0].numel() * module.in_features
    return 0


def _filter(module: nn.Module) -> str:
    if isinstance(module, nn.modules.conv._ConvNd):
        return "x".join(str(s) for s in module.weight.shape)
    if isinstance(module, nn.Linear):
        return f"{module.in_features} -> {module.out_features}"
    return ""


def _first_tensor(x: object) -> torch.Tensor | None:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (list, tuple)):
        return next((t for t in map(_first_tensor, x) if t is not None), None)
    if isinstance(x, dict):
        return next((t for t in map(_first_tensor, x.values()) if t is not None), None)
    return None


def summarize(module: nn.Module, input_shape: tuple[int, int, int]) -> list[SummaryRow]:
    """Run one C x H x W sample (eval mode, no grad) and record every leaf module's call."""
    leaves = {name: m for name, m in module.named_modules() if not list(m.children())}
    rows: list[SummaryRow] = []
    seen: set[str] = set()
    counted: set[int] = set()
    current = ["(model)"]

    def pre_hook(name: str):
        return lambda m, args: current.__setitem__(0, name)

    def hook(name: str):
        def record(m: nn.Module, args: tuple, output: object) -> None:
            inp, out = _first_tensor(args), _first_tensor(output)
            first_call = name not in seen
            seen.add(name)
            weights, biases = _counts(list(m.named_parameters(recurse=False)), counted)
            macs = mult_adds(m, inp, out) if inp is not None and out is not None else 0
            shape = tuple(out.shape[1:]) if out is not None else ()
            label = name if first_call else f"{name} (again)"  # shared modules: parameters counted once
            rows.append(SummaryRow(label, type(m).__name__, _filter(m), shape, weights, biases, macs))
        return record

    handles = []
    for name, m in leaves.items():
        handles.append(m.register_forward_pre_hook(pre_hook(name)))
        handles.append(m.register_forward_hook(hook(name)))
    param = next(module.parameters(), None)
    x = torch.randn((1, *input_shape), generator=torch.Generator().manual_seed(0))
    if param is not None:
        x = x.to(param.device, param.dtype if param.is_floating_point() else x.dtype)
    was_training = module.training
    module.eval()  # batch statistics of one sample would fail or mislead
    try:
        with torch.no_grad():
            module(x)
    except (RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CnnlabError(f"the model fails on input {'x'.join(map(str, input_shape))} near layer '{current[0]}': "
                          f"{first}", "try a larger --input, or the channel count the model was built for") from None
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()
    rows += _unhooked_params(module, leaves, seen, counted)
    return rows


def _unhooked_params(module: nn.Module, leaves: dict[str, nn.Module], seen: set[str],
                     counted: set[int]) -> list[SummaryRow]:
    """Parameters outside the called leaves (non-leaf own parameters, unused layers) so totals match numel()."""
    rows = []
    for name, m in module.named_modules():
        if name in seen:
            continue
        weights, biases = _counts(list(m.named_parameters(recurse=False)), counted)
        if weights or biases:
            note = "(not called)" if name in leaves else "(own parameters)"
            rows.append(SummaryRow(f"{name or '(model)'} {note}", type(m).__name__, _filter(m), (), weights, biases, 0))
    return rows


def _fmt(n: int) -> str:
    return f"{n:,}"


def render_summary(rows: list[SummaryRow], title: str = "") -> str:
    """The per-layer table and totals as text."""
    head = ["#", "layer", "type", "filter", "output", "weights", "biases", "params", "mult-adds"]
    body = [[str(i), r.name, r.kind, r.filter, "x".join(map(str, r.output)) or "-", _fmt(r.weights),
             _fmt(r.biases), _fmt(r.params), _fmt(r.mult_adds)] for i, r in enumerate(rows, start=1)]
    t = summary_totals(rows)
    body.append(["", "total", "", "", "", _fmt(t["weights"]), _fmt(t["biases"]), _fmt(t["params"]),
                 _fmt(t["mult_adds"])])
    lines = [title] if title else []
    lines += text_table(head, body, left=5)
    lines += ["", "Output shapes are per sample (C x H x W). Mult-adds count conv and linear layers only "
              "(not pooling, normalisation, activations or functional ops like interpolation)."]
    return "\n".join(lines) + "\n"


def summary_totals(rows: list[SummaryRow]) -> dict[str, int]:
    """Sums over the rows: parameters match sum(p.numel()) of the model."""
    return {k: sum(getattr(r, k) for r in rows) for k in ("weights", "biases", "params", "mult_adds")}


def summary_dict(rows: list[SummaryRow]) -> dict:
    """JSON-able rows and totals."""
    return {"layers": [{"name": r.name, "type": r.kind, "filter": r.filter, "output": list(r.output),
                        "weights": r.weights, "biases": r.biases, "params": r.params, "mult_adds": r.mult_adds}
                       for r in rows],
            "totals": summary_totals(rows)}
