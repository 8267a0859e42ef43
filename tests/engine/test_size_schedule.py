"""train.size_schedule (issue 22, time to quality): the first epochs train at a smaller size, the rest, validation and
test at data.size; resizing keeps labels whole, resume stays exact, bad schedules fail with one line."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from cnnlab.config import recipe_from_dict
from cnnlab.engine.fit import scheduled_size
from cnnlab.errors import ConfigError
from cnnlab.tasks import TASKS as TASKS_BY_NAME


def _recipe(schedule, epochs: int = 8, size=(128, 160)):
    return recipe_from_dict({"data": {"size": list(size) if size else None},
                             "train": {"epochs": epochs, "size_schedule": schedule}})


def test_scheduled_size_by_hand():
    r = _recipe([[0.5, 3], [0.75, 2]])
    # 128x160 x 0.5 = 64x80; x 0.75 = 96x120 -> 120/16 = 7.5 rounds to 8 -> 128 (multiples of 16)
    assert [scheduled_size(r, e) for e in range(8)] == [(64, 80)] * 3 + [(96, 128)] * 2 + [None] * 3
    assert scheduled_size(_recipe([[0.1, 1]]), 0) == (32, 32)   # never below 32 a side
    assert scheduled_size(_recipe([]), 0) is None


@pytest.mark.parametrize("schedule, epochs, size", [
    ([[0.5, 8]], 8, (128, 160)),        # no full-size epoch left
    ([[1.0, 2]], 8, (128, 160)),        # scale must be below 1
    ([[0.5, 1.5]], 8, (128, 160)),      # whole epochs
    ([[0.5]], 8, (128, 160)),           # [scale, epochs] pairs
    ([[0.5, 2]], 8, None),              # needs data.size
])
def test_bad_schedules_name_the_key(schedule, epochs, size):
    with pytest.raises(ConfigError, match="train.size_schedule"):
        _recipe(schedule, epochs, size)


def test_masks_shrink_by_nearest_label_and_images_by_area():
    seg = TASKS_BY_NAME["segmentation"]
    y = torch.tensor([[0, 0, 2, 2], [0, 0, 2, 2], [255, 255, 1, 1], [255, 255, 1, 1]])[None]
    x = torch.zeros(1, 3, 4, 4)
    x[:, :, :, 2:] = 1.0                                  # left half black, right half white
    x = x.contiguous(memory_format=torch.channels_last)
    xs, ys = seg.shrink_batch(x, y, (2, 2))
    assert ys.tolist() == [[[0, 2], [255, 1]]] and ys.dtype == y.dtype   # whole labels, ignore kept
    assert torch.allclose(xs, torch.tensor([[0.0, 1.0], [0.0, 1.0]]).expand(1, 3, 2, 2))
    assert xs.is_contiguous(memory_format=torch.channels_last)
    cls = TASKS_BY_NAME["classification"]
    labels = torch.tensor([3])
    assert cls.shrink_batch(x, labels, (2, 2))[1] is labels
    color = TASKS_BY_NAME["colorization"]
    _, t = color.shrink_batch(x[:, :1], x[:, 1:], (2, 2))
    assert t.shape == (1, 2, 2, 2) and torch.allclose(t[0, 0], torch.tensor([[0.0, 1.0], [0.0, 1.0]]))


def _train_recording_sizes(monkeypatch, raw: dict, interrupt_at: int = 0):
    """Train, recording the input size the model sees in each training epoch (epoch numbers from 1)."""
    import cnnlab.engine.run as run_mod
    from cnnlab.engine.fit import train_one_epoch as real

    seen: dict = {}

    def recording(ctx, model, epoch, bar=None):
        if interrupt_at and epoch + 1 == interrupt_at:
            raise KeyboardInterrupt
        def record(module, args) -> None:
            seen.setdefault(epoch + 1, tuple(args[0].shape[-2:]))

        hook = model.register_forward_pre_hook(record)
        try:
            return real(ctx, model, epoch, bar)
        finally:
            hook.remove()

    monkeypatch.setattr(run_mod, "train_one_epoch", recording)
    return run_mod, seen


def _metrics(run_dir: Path) -> list[dict]:
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    return [{k: v for k, v in row.items() if "seconds" not in k and "per_s" not in k} for row in rows]


def test_early_epochs_train_small_and_resume_is_exact(tmp_path: Path, endovis_root: Path, monkeypatch):
    from conftest import tiny_recipe

    raw = tiny_recipe(endovis_root, tmp_path / "runs", train={"epochs": 3, "size_schedule": [[0.5, 2]],
                                                             "threads": 1},
                      data={"size": [64, 96]})
    run_mod, seen = _train_recording_sizes(monkeypatch, raw)
    whole = run_mod.train(recipe_from_dict(raw))
    assert seen == {1: (32, 48), 2: (32, 48), 3: (64, 96)}
    log = (whole / "train.log").read_text()
    assert "img/s at 32x48" in log and log.count(" at 32x48") == 2

    raw["name"] = "resumed"
    run_mod, seen = _train_recording_sizes(monkeypatch, raw, interrupt_at=2)
    with pytest.raises(run_mod.Interrupted):
        run_mod.train(recipe_from_dict(raw))
    [partial] = (tmp_path / "runs").glob("resumed-*")
    run_mod, seen = _train_recording_sizes(monkeypatch, raw)
    run_mod.resume(partial)
    assert seen == {2: (32, 48), 3: (64, 96)}
    assert _metrics(partial) == _metrics(whole)
