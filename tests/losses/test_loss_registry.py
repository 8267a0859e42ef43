"""A sweep over every loss in the LOSSES registry, built through build_loss as the engine builds it: a finite value
and a finite, non-zero gradient on random logits and targets of the loss's kind, and ignore_index honoured by every
loss that takes label masks (pixels marked ignore change neither the value nor the gradient at other pixels, and
get exactly zero gradient themselves); the loss that does not take one (mse) refuses it.

Parametrised by registry name, so a newly registered loss is swept without touching this file: it is taken to be
a label loss (logits N x C x H x W, class-index masks) unless KIND says otherwise. VARIANTS adds params that switch
on other code paths (class weights, the Lovász and OHEM terms of dice_ce), and a test requires every param that
LOSSES lists to appear in some variant, so a new param is swept too.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cnnlab.config import load_recipe
from cnnlab.data.types import SegData
from cnnlab.engine.recipe_check import check_names
from cnnlab.errors import ConfigError
from cnnlab.losses.core import LOSSES, build_loss
from cnnlab.tasks import TASKS

C, IGNORE = 4, 255
KIND = {"mse": "colour"}  # default: "labels"
NOT_FOR_CLASSIFICATION = {"dice": "soft Dice sums over pixel dimensions (N x C x H x W only)",
                          "dice_ce": "its Dice term, as dice"}
VARIANTS: dict[str, list[dict]] = {  # beside {} for every loss
    "dice": [{"smooth": 0.5, "include_background": False}],
    "cross_entropy": [{"label_smoothing": 0.1}],
    "dice_ce": [{"ce_weight": 0.5, "lovasz_weight": 0.5}, {"ohem_keep": 0.5, "scheme": "median"},
                {"scheme": "inverse", "max_weight": 5.0, "absent_weight": 2.0, "smooth": 0.5,
                 "include_background": False}],
    "weighted_ce": [{"scheme": "enet_log"}, {"scheme": "median", "ohem_keep": 0.5, "lovasz_weight": 1.0},
                    {"scheme": "inverse", "max_weight": 3.0, "absent_weight": 0.5}],
    "ohem_ce": [{"keep": 0.5, "scheme": "inverse", "max_weight": 4.0, "absent_weight": 1.0}],
}


def cases(kind: str) -> list:
    """(name, params) of every registered loss of a kind: its defaults, then its VARIANTS."""
    return [pytest.param(name, params, id=f"{name}-{i}") for name in sorted(LOSSES) if KIND.get(name, "labels") == kind
            for i, params in enumerate([{}, *VARIANTS.get(name, [])])]


def masks(shape: tuple[int, ...], seed: int, ignore_share: float = 0.0) -> torch.Tensor:
    """uint8 class indices (every class present) with about ignore_share of them set to IGNORE."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, C, shape, generator=g, dtype=torch.uint8)
    t.view(-1)[:C] = torch.arange(C, dtype=torch.uint8)
    t[torch.rand(shape, generator=g) < ignore_share] = IGNORE
    return t


def train_split(target: torch.Tensor, ignore_index: int | None) -> SegData:
    """The training split a weighted loss takes its class weights from (as engine/run.py passes data.train)."""
    n = target.shape[0]
    return SegData(torch.zeros(n, 3, *target.shape[1:], dtype=torch.uint8), target, [f"s{i}" for i in range(n)],
                   [f"c{i}" for i in range(C)], ignore_index)


def logits(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (2 * torch.randn(shape, generator=g)).requires_grad_()


def value_and_grad(loss_fn, out: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = out.detach().clone().requires_grad_()
    value = loss_fn(out, target)
    value.backward()
    return value.detach(), out.grad


def test_the_tables_name_registered_losses_and_every_param_is_swept():
    for table in (KIND, NOT_FOR_CLASSIFICATION, VARIANTS):
        assert set(table) <= set(LOSSES), set(table) - set(LOSSES)
    for name, params in LOSSES.items():
        swept = {k for v in VARIANTS.get(name, []) for k in v}
        assert params <= swept, f"loss '{name}': params {sorted(params - swept)} are in no VARIANTS entry"


@pytest.mark.parametrize(("name", "params"), cases("labels"))
def test_label_losses_give_a_finite_value_and_gradient_on_segmentation_logits(name: str, params: dict):
    target = masks((2, 6, 7), seed=0)
    loss_fn = build_loss(name, params, None, train_split(target, None))
    value, grad = value_and_grad(loss_fn, logits((2, C, 6, 7), seed=1), target)
    assert value.shape == () and torch.isfinite(value) and value > 0
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize(("name", "params"), [c for c in cases("labels") if c.values[0] not in NOT_FOR_CLASSIFICATION])
def test_label_losses_give_a_finite_value_and_gradient_on_classification_logits(name: str, params: dict):
    """N x C logits and N labels (classification's batches); the class weights from stored weights, as
    classification data has no masks to count."""
    target = masks((16,), seed=0)
    loss_fn = build_loss(name, params, None, weights=torch.tensor([1.0, 2.0, 0.5, 3.0]))
    value, grad = value_and_grad(loss_fn, logits((16, C), seed=1), target)
    assert value.shape == () and torch.isfinite(value) and value > 0
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize(("name", "params"), cases("labels"))
def test_ignored_pixels_change_neither_the_value_nor_any_gradient(name: str, params: dict):
    """Logits at ignored pixels replaced by others (large, random): the value and the gradient at counted pixels
    are identical bit for bit, and the gradient at ignored pixels is exactly zero, with either logits."""
    target = masks((2, 6, 7), seed=0, ignore_share=0.3)
    ignored = (target == IGNORE)[:, None].expand(-1, C, -1, -1)
    assert 0 < ignored.float().mean() < 0.6
    loss_fn = build_loss(name, params, IGNORE, train_split(target, IGNORE))
    out = logits((2, C, 6, 7), seed=1)
    other = torch.where(ignored, 50 * torch.randn(out.shape, generator=torch.Generator().manual_seed(3)), out)
    value, grad = value_and_grad(loss_fn, out, target)
    value_other, grad_other = value_and_grad(loss_fn, other, target)
    assert torch.isfinite(value) and torch.equal(value, value_other)
    assert torch.equal(grad[~ignored], grad_other[~ignored]) and grad[~ignored].abs().sum() > 0
    assert torch.equal(grad[ignored], torch.zeros_like(grad[ignored]))
    assert torch.equal(grad_other[ignored], torch.zeros_like(grad_other[ignored]))


@pytest.mark.parametrize(("name", "params"), cases("labels"))
def test_ignored_pixels_count_as_if_they_were_not_there(name: str, params: dict):
    """Every registered label loss pools the pixels of a batch: the same loss on only the counted pixels (laid
    out as one 1 x K image) gives the same value and the same gradients, up to float32 summation order."""
    target = masks((2, 6, 7), seed=0, ignore_share=0.3)
    counted = target != IGNORE
    loss_fn = build_loss(name, params, IGNORE, train_split(target, IGNORE))
    out = logits((2, C, 6, 7), seed=1)
    value, grad = value_and_grad(loss_fn, out, target)
    kept = out.detach().movedim(1, -1)[counted].T[None, :, None, :]  # 1 x C x 1 x K
    value_kept, grad_kept = value_and_grad(loss_fn, kept, target[counted][None, None, :])
    torch.testing.assert_close(value_kept, value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_kept[0, :, 0].T, grad.movedim(1, -1)[counted], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(("name", "params"), cases("labels"))
def test_a_batch_with_every_pixel_ignored_gives_zero_and_no_gradient(name: str, params: dict):
    """A patch or batch that falls wholly on void (large ignore regions, padded images) is nothing to learn from:
    0 with a zero gradient, never NaN (the engine stops a run whose loss is not finite)."""
    target = torch.full((2, 6, 7), IGNORE, dtype=torch.uint8)
    loss_fn = build_loss(name, params, IGNORE, train_split(masks((2, 6, 7), seed=0), IGNORE))
    value, grad = value_and_grad(loss_fn, logits((2, C, 6, 7), seed=1), target)
    assert torch.equal(value, torch.zeros(())), value
    assert torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize(("name", "params"), cases("colour"))
def test_colour_losses_give_a_finite_value_and_gradient_and_refuse_an_ignore_index(name: str, params: dict):
    """Colorization: two predicted colour channels against float targets. Colour targets have no ignored pixels,
    so an ignore_index is refused at build time rather than silently dropped."""
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 2, 6, 7, generator=g)
    value, grad = value_and_grad(build_loss(name, params), logits((2, 2, 6, 7), seed=1), target)
    assert value.shape == () and torch.isfinite(value) and value > 0
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with pytest.raises(ConfigError, match=f"loss '{name}'.*ignore_index"):
        build_loss(name, params, IGNORE)


SHIPPED = {"segmentation": "recipes/endovis/a_baseline.yaml", "classification": "recipes/mnist/b_course_cnn.yaml",
           "colorization": "recipes/endovis/d_colorize.yaml"}
OUTPUTS = {  # (model output, target) of each task's batches, as the engine feeds its loss
    "segmentation": lambda: (logits((2, C, 6, 7), 1), masks((2, 6, 7), 0)),
    "classification": lambda: (logits((16, C), 1), masks((16,), 0)),
    "colorization": lambda: (logits((2, 2, 6, 7), 1), logits((2, 2, 6, 7), 2).detach().sigmoid()),
}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_the_recipe_check_takes_the_losses_a_task_fits_and_refuses_the_rest_in_one_line(task: str):
    """Each loss a task lists runs on that task's outputs (finite value and gradient); every other registered loss
    is refused by the recipe check with the valid names and a working --set, before any data are read. Before, a
    classification recipe with loss dice passed the check and failed at its first step with an IndexError."""
    assert set(TASKS[task].losses) <= set(LOSSES) and TASKS[task].losses
    root = Path(__file__).resolve().parents[2]
    r = load_recipe(root / SHIPPED[task])
    assert r.task == task
    for name in sorted(LOSSES):
        with_loss = replace(r, loss=replace(r.loss, name=name, params={}))
        if name in TASKS[task].losses:
            check_names(with_loss)
            out, target = OUTPUTS[task]()
            value, grad = value_and_grad(build_loss(name, {}, weights=torch.ones(C)), out, target)
            assert torch.isfinite(value) and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
        else:
            with pytest.raises(ConfigError) as e:
                check_names(with_loss)
            assert f"loss.name '{name}' does not fit a {task} run; valid: " in e.value.message
            fit = TASKS[task].losses[0]
            assert e.value.hint == f"set loss.name: {fit} in the recipe, or add --set loss.name={fit} to the command"
    if task == "classification":
        assert not {"dice", "dice_ce"} & set(TASKS[task].losses)
