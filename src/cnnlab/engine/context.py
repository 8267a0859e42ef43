"""RunContext: what stays fixed for the whole of one run, passed as one object instead of ten arguments.

The run's task (cnnlab.tasks) is resolved once, from the recipe's task name, and carried here: everything inside
a run takes it from the context instead of looking it up again by name or by the kind of split it holds.

The training progress that changes every epoch (epoch, best score, history) is TrainState (engine/fit.py), kept
apart because it is what a checkpoint saves and a resume restores. The context is frozen: a step that replaces a
part (the normaliser read back from last.pt, the model prepared for DDP) makes a new one with
dataclasses.replace, so no function changes what another already holds.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cnnlab.config import Recipe
from cnnlab.data.loading import RunData
from cnnlab.engine.flips import tta_flips
from cnnlab.engine.runtime import Runtime
from cnnlab.engine.steps import Normalizer, Scorer, run_window
from cnnlab.engine.watch import RunWatch
from cnnlab.losses.core import Loss
from cnnlab.tasks import Task


@dataclass(frozen=True)
class RunContext:
    """One run's recipe, task, device settings, data, model, loss, optimizer, loss scaler, normaliser, folder and
    watch.

    core: the plain model (SyncBatchNorm layers under torchrun when asked); the training steps call its DDP and/or
    compiled wrapper, rebuilt by the loop when the trainable parameters change, so the wrapper is not kept here.
    scaler: the run's one fp16 GradScaler, None otherwise. run_dir and watch are None only where a benchmark drives
    train_one_epoch alone, outside any run.
    """

    recipe: Recipe
    task: Task
    rt: Runtime
    data: RunData
    core: nn.Module
    loss_fn: Loss
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    norm: Normalizer
    run_dir: Path | None = None
    watch: RunWatch | None = None

    def scorer(self, final: bool = False) -> Scorer:
        """The model as validation and test pass it over a split: the run's task, loss, evaluation batch size,
        (patch-trained runs) sliding window and, for the final scores of the best model (final), the test-time
        flips of train.tta; validation during training is one pass (cheap, and what picks the best epoch)."""
        r = self.recipe
        flips = tta_flips(r.augment, r.train.tta) if final else ()
        return Scorer(self.task, self.core, self.rt, self.norm, r.train.eval_batch_size, self.loss_fn, run_window(r),
                      flips)
