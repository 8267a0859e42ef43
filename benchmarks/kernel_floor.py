"""The kernel floor: how fast a train step could be if everything but the heavy kernels cost nothing.

The same network with BatchNorm and ReLU replaced by identities, a loss that is the mean of the logits, one
resident batch (no data loading) and cnnlab's precision and layout. What is left is convolutions, pooling, skip
joins and the optimizer step. Its images/s, over the plain loop's, bounds any ratio cnnlab can reach with these
kernels: the gap between the floor and cnnlab is all cnnlab could still win outside the kernels.

It is a side of train_speed.py and mnist_speed.py; alone it times the course U-Net's floor against the native
matmul peaks of this machine (the bound a CPU of this kind puts on any train step):

    .venv/bin/python benchmarks/kernel_floor.py --size 256 320 --batch 8 --rounds 3 --steps 2
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import time

import torch
from torch import nn

from common import sync

STRIPPED = (nn.BatchNorm2d, nn.ReLU)


def strip_layers(model: nn.Module, kinds: tuple[type, ...] = STRIPPED) -> nn.Module:
    """A copy of model with every module of the given kinds replaced by nn.Identity."""
    model = copy.deepcopy(model)

    def walk(m: nn.Module) -> None:
        for name, child in m.named_children():
            if isinstance(child, kinds):
                setattr(m, name, nn.Identity())
            else:
                walk(child)

    walk(model)
    return model


@dataclasses.dataclass
class FloorSide:
    """Convolutions, pools, joins and Adam on one resident batch; the loss is the logits' mean."""

    model: nn.Module
    x: torch.Tensor
    rt: object  # cnnlab.engine.runtime.Runtime
    opt: torch.optim.Optimizer

    def run(self, steps: int) -> dict:
        """One repetition of `steps` optimizer steps (no data time by construction)."""
        from cnnlab.engine.runtime import reuse_freed_memory

        reuse_freed_memory(self.rt.device.type == "cpu")
        self.model.train()
        t0 = time.perf_counter()
        for _ in range(steps):
            with self.rt.autocast():
                out = self.model(self.x)
            loss = out.float().mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        sync(self.rt.device)
        return {"seconds": time.perf_counter() - t0, "images": steps * len(self.x), "data_seconds": 0.0}


def floor_side(model: nn.Module, batch_shape: tuple[int, ...], device: str, lr: float = 1e-3) -> FloorSide:
    """The floor for model at this batch shape, in cnnlab's default precision and layout on device."""
    from cnnlab.engine.runtime import resolve_runtime

    rt = resolve_runtime(device, "auto", True)
    m = strip_layers(model).to(rt.device, memory_format=torch.channels_last)
    x = rt.to_input(torch.randn(batch_shape, device=rt.device))
    fused = rt.device.type in ("cpu", "cuda")
    return FloorSide(m, x, rt, torch.optim.Adam(m.parameters(), lr=lr, fused=fused))


def main(argv: list[str] | None = None) -> dict:
    """The course U-Net's floor alone: images/s, GFLOP/s and % of each native matmul peak, per round."""
    import common
    from cnnlab.models import build_model

    p = argparse.ArgumentParser(description="kernel floor of the course U-Net on this machine")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=[256, 320])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--device", default="auto")
    args = common.parse_common(p, argv)
    torch.manual_seed(0)
    model = build_model("unet", 3, 8, tuple(args.size), {"width": args.width, "depth": 4})
    side = floor_side(model, (args.batch, 3, *args.size), args.device)
    x = torch.randn(2, 3, *args.size)
    flops = common.train_step_flops(strip_layers(model), x, None, lambda out, _: out.float().mean()) / 2
    result = common.compare_sides({"floor": side.run}, args.rounds, args.steps, 1, side.rt.device, flops)
    common.print_comparison(result, "floor", None, f"kernel floor: U-Net (width {args.width}) without BatchNorm/"
                            f"ReLU/loss/data, {args.size[0]}x{args.size[1]}, batch {args.batch}, {side.rt.precision}"
                            f", channels_last")
    result.update(size=args.size, batch=args.batch, width=args.width, precision=side.rt.precision)
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()  # run as a script, its own folder is on sys.path: common imports as in the other scripts
