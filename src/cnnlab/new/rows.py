"""The training half of `cnnlab new`'s recipe (model, loss, optimizer, loop, augmentation), each with its reason.

Two sets of values. The pretrained network's: EfficientNet-Lite0 from the packaged ImageNet weights with the light
FCN decoder (width 32), trained as course recipe (f) (`recipes/endovis/f_imagenet_unet.yaml`: Dice + CE, AdamW
2e-3 with cosine decay and 2 warm-up epochs, the encoder frozen for 2 epochs, flips and colour jitter). The FCN
decoder rather than (f)'s U-Net decoder because it measured better at equal epochs on the course data: strict
mean Dice 0.905 against 0.742-0.752 (docs/results.md). The from-scratch U-Net's: the earlier `new` defaults
(Adam 1e-3, soft Dice unless a class is rare).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from cnnlab.new.budget import MIN_BATCH, MIN_EPOCHS, MIN_STEPS, ModelChoice, SizeChoice
from cnnlab.new.imbalance import dominant, multi_class_loss

RARE_SHARE = 0.05            # a class under 5% of pixels gets cross-entropy beside Dice (U-Net from scratch)
PATIENCE = 10                # early-stopping epochs (at least; a third of a longer run)
UNET_EPOCH_S = 25.0          # U-Net from scratch: the epoch seconds its width aims under (rule of thumb)
PRETRAINED_MODEL = "fcn_efficientnet_lite0"   # objects (the course data, photographs): the light FCN decoder
PRETRAINED_PARAMS = {"weights": "imagenet", "imagenet_norm": True, "decoder_width": 32}
THIN_MODEL = "unet_efficientnet_lite0"         # thin structures (vessels, membranes): the U-Net decoder's skips
THIN_PARAMS = {"weights": "imagenet", "imagenet_norm": True, "decoder_widths": [128, 64, 32, 16]}
FULL_RESOLUTION_WIDTH = 16   # the fifth (stride-1) block's width, for the finest structures (new/structure.py)


def pretrained_model(unet_decoder: bool, full_resolution: bool = False) -> tuple[str, dict]:
    """model.name and model.params of the pretrained network (new/structure.py says which decoder, whether with a
    block at full resolution, and why)."""
    if not unet_decoder:
        return PRETRAINED_MODEL, dict(PRETRAINED_PARAMS)
    widths = THIN_PARAMS["decoder_widths"] + ([FULL_RESOLUTION_WIDTH] if full_resolution else [])
    return THIN_MODEL, {**THIN_PARAMS, "decoder_widths": widths}


@dataclass(frozen=True)
class Plan:
    """How many images train and validate each epoch, the batch, and which network (pretrained or not)."""

    n_train: int
    n_val: int
    batch: int
    model: ModelChoice
    depth: int               # U-Net halvings (from scratch); the pretrained encoder always has 5


def y(value) -> str:
    """A YAML scalar or flow collection (JSON is valid YAML and quotes paths safely)."""
    return json.dumps(value, ensure_ascii=False)


def lines(rows: list[tuple[str, str]]) -> str:
    """'key: value' lines with their comments aligned; a row with a comment and no key is a comment line of its own
    (aligned with the others)."""
    keyed = [len(t) for t, c in rows if c and t]
    width = max(keyed) + 2 if keyed else 0
    return "\n".join(f"{t:<{width}}# {c}" if c and t else f"{' ' * width}# {c}" if c else t for t, c in rows)


def _model_rows(plan: Plan, params: dict) -> list[tuple[str, str]]:
    if plan.model.pretrained:
        name, _ = pretrained_model(plan.model.unet_decoder)
        why = ("ImageNet-pretrained encoder + U-Net decoder with skips from strides 2-16 (why: the Decoder line "
               "above; fcn_efficientnet_lite0 for objects, not thin structures)" if plan.model.unet_decoder else
               "ImageNet-pretrained encoder + light FCN decoder (why: the Decoder line above); "
               "unet_efficientnet_lite0 has a U-Net decoder, for thin structures")
        widths = ("decoder_width 32 as measured" if not plan.model.unet_decoder else "decoder_widths as recipe (f)"
                  + (" plus a fifth block at full resolution, the image as its skip (why: the Decoder line)"
                     if plan.model.full_resolution else ""))
        return [("model:", ""), (f"  name: {name}", why),
                (f"  params: {y(params)}", "weights: the packaged ImageNet file; imagenet_norm: the model scales "
                 f"[0, 1] inputs to the [-1, 1] the weights expect; {widths}"),
                ("  freeze_encoder_epochs: 2", "the new decoder settles before the pretrained features move")]
    return [("model:", ""), ("  name: unet", f"the course U-Net ({plan.model.why})"),
            (f"  params: {y(params)}", f"depth {plan.depth}: input sides a multiple of {2 ** plan.depth}; width "
             f"{params['width']}: the widest of 32/16/8 expected to keep an epoch of {plan.n_train} images near "
             f"{UNET_EPOCH_S:.0f} s on 2 CPU cores")]


def _loss_rows(multi: tuple[dict, str] | None, loss: str, why: str) -> list[tuple[str, str]]:
    """The loss rows: a binary set's loss and reason, or a multi-class set's Dice + CE with class weights."""
    if multi is None:
        return [("loss:", ""), (f"  name: {loss}", why), ("  params: {}", "")]
    return [("loss:", ""), ("  name: dice_ce", multi[1]), (f"  params: {y(multi[0])}", "")]


def _loss_optim_rows(plan: Plan, class_names: list[str], shares: list[float]) -> list[tuple[str, str]]:
    rare = [n for n, f in zip(class_names, shares) if f < RARE_SHARE]
    multi = multi_class_loss(class_names, shares)  # 3+ classes: the measured rule of new/imbalance.py
    if plan.model.pretrained:
        why = ("Dice plus cross-entropy: CE gives every class a gradient from the first step, Dice weighs small "
               "classes" + (f" ({', '.join(rare)} under {RARE_SHARE:.0%} of pixels)" if rare else "")
               + dominant(class_names, shares))
        return _loss_rows(multi, "dice_ce", why) + [("", ""), ("optim:", ""),
                ("  name: adamw", "AdamW 2e-3, cosine, 2 warm-up epochs: recipe (f), measured on real data"),
                ("  lr: 0.002", ""), ("  weight_decay: 0.0001", ""),
                ("  schedule: cosine", "decays to 0 over the epochs"),
                ("  warmup_epochs: 2", "the rate ramps up while the encoder is frozen")]
    loss = "dice_ce" if rare else "dice"
    why = (f"{', '.join(rare)} under {RARE_SHARE:.0%} of pixels: Dice plus cross-entropy" if rare
           else f"every class covers at least {RARE_SHARE:.0%} of pixels: soft Dice") + dominant(class_names, shares)
    return _loss_rows(multi, loss, why) + [("", ""), ("optim:", ""),
            ("  name: adam", ""), ("  lr: 0.001", "Adam's usual start"),
            ("  schedule: cosine", "decays to 0 over the epochs")]


TTA_WHY = ("auto: at the end the run scores validation in one pass and averaged over the flips it trains with, "
           "and the test, evaluate and predict keep the flips only where they won there by more than 0.001 (true: "
           "always): they gained +0.003 to +0.0045 on DRIVE, lost on every ISBI run (-0.0004 to -0.005), ranged "
           "from -0.0135 to +0.017 on the course frames; validation's choice was the better at the test on all 9 "
           "runs with a test split")


def train_rows(plan: Plan, params: dict, size: list[int], class_names: list[str], shares: list[float],
               channels: int, choice: SizeChoice | None, cpu: bool) -> list[tuple[str, str]]:
    """Model, loss, optimizer, loop and augmentation rows (choice None: the draft that is timed)."""
    square = size[0] == size[1]
    if choice:
        rule = (f"as many as fit the {choice.budget_s / 60:g}-minute budget" if choice.fits else
                f"the floor of {choice.estimate.epochs}; over the budget")
        steps = choice.estimate.steps
        time_why = (f"{choice.estimate.total_line()} on this machine ({rule}); {choice.estimate.epochs * steps} "
                    f"optimizer steps ({steps} per epoch; at least {MIN_STEPS}, see the batch); early stopping may "
                    f"end sooner")
        epochs = choice.estimate.epochs
    else:
        time_why, epochs = "draft, being timed", MIN_EPOCHS
    patience = max(PATIENCE, epochs // 3)
    rows = _model_rows(plan, params) + [("", "")] + _loss_optim_rows(plan, class_names, shares)
    rows += [("", ""), ("train:", ""), (f"  epochs: {epochs}", time_why),
             (f"  batch_size: {plan.batch}", "recipe (f)'s batch" if plan.batch == 8 else
              f"small data: more steps per epoch (halved down to {MIN_BATCH} while {MIN_EPOCHS} epochs are under "
              f"{MIN_STEPS} steps; on DRIVE batch 2 beat 4 by 0.025 vessel Dice)"),
             (f"  patience: {patience}", f"stop when validation Dice has not improved for {patience} epochs "
              f"({PATIENCE}, or a third of the run when longer: the cosine schedule's late epochs settle it)"),
             ("  tta: auto", TTA_WHY)]
    if plan.model.pretrained and cpu:
        rows.append(("  precision: fp32", "on CPU bf16 autocast was 18% slower than fp32 for this depthwise-conv "
                     "encoder (measured)"))
    rows += [("", ""), ("augment:", ""),
             ("  hflip: true", "flips: microscopy and medical images have no canonical side; set false for scenes "
              "with an up"),
             ("  vflip: true", ""), (f"  rot90: {y(square)}", "square input: quarter turns too" if square
                                     else "input is not square: no quarter turns")]
    if plan.model.pretrained and channels == 3:
        rows += [("  brightness: 0.2", "colour jitter (image only), as recipe (f): lighting varies between photos"),
                 ("  contrast: 0.2", ""), ("  saturation: 0.2", "")]
    return rows
