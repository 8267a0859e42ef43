"""The task objects (cnnlab.tasks): one per task, owning batches, metrics, predictions and figures, so that no
other part asks which kind of split it holds."""
from __future__ import annotations

import csv
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cnnlab.config import TASKS as RECIPE_TASKS
from cnnlab.config import AugmentConfig, asdict, load_recipe
from cnnlab.data.types import ClsData, ColorData, SegData
from cnnlab.engine.runtime import resolve_runtime
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.inference.predict import load_run, predict_paths
from cnnlab.models import build_model
from cnnlab.tasks import TASKS, task_for

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "cnnlab"
RT = resolve_runtime("cpu", "fp32", False)


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def seg_split(masks: torch.Tensor, ignore: int | None = None) -> SegData:
    n, h, w = masks.shape
    return SegData(torch.zeros(n, 3, h, w, dtype=torch.uint8), masks.to(torch.uint8), [str(i) for i in range(n)],
                   ["bg", "fg"], ignore)


def test_task_for_finds_each_task_by_name_and_each_task_fits_its_own_split_type_only() -> None:
    img = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    splits = {"segmentation": seg_split(torch.zeros(2, 4, 4)),
              "classification": ClsData(img, torch.tensor([0, 1]), ["a", "b"], ["x", "y"]),
              "colorization": ColorData(img, torch.zeros(2, 3, 4, 4, dtype=torch.uint8), ["a", "b"])}
    for name, split in splits.items():
        assert task_for(name) is TASKS[name]
        assert task_for(name).name == name
        assert [t for t in TASKS if TASKS[t].fits(split)] == [name]  # the check of a recipe's task against its data
    assert set(TASKS) == set(RECIPE_TASKS)  # the recipe check and the registry list the same tasks


def test_an_unknown_task_name_is_one_config_error_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match="unknown task 'segmentaton'") as e:
        task_for("segmentaton")
    assert "segmentation" in e.value.hint


def test_classification_tally_sums_loss_and_counts_over_batches_and_processes() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    labels = torch.tensor([0, 0, 0])
    split = ClsData(torch.zeros(3, 1, 2, 2), labels, list("abc"), ["p", "q"])
    tally = TASKS["classification"].tally(split, F.cross_entropy)
    tally.add(logits[:2], labels[:2])  # two batches: mean loss of each weighted by its size
    tally.add(logits[2:], labels[2:])
    per_sample = F.cross_entropy(logits, labels, reduction="none")
    metrics, cm = tally.result(lambda t: t)
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["loss"] == pytest.approx(float(per_sample.mean()))
    assert cm.mat.tolist() == [[2, 1], [0, 0]]
    # two processes holding the same shard: every count doubles, the split size does not
    doubled = TASKS["classification"].tally(split, F.cross_entropy)
    doubled.add(logits, labels)
    metrics2, cm2 = doubled.result(lambda t: 2 * t)
    assert metrics2["accuracy"] == pytest.approx(2 / 3)
    assert metrics2["loss"] == pytest.approx(2 * float(per_sample.mean()))
    assert cm2.mat.tolist() == [[4, 2], [0, 0]]


def test_segmentation_tally_gives_strict_dice_from_counts_and_the_soft_dice_per_batch() -> None:
    truth = torch.tensor([[[0, 1], [1, 1]]])
    pred = torch.tensor([[[0, 1], [0, 1]]])
    logits = F.one_hot(pred, 2).permute(0, 3, 1, 2).float() * 10
    split = seg_split(truth)
    tally = TASKS["segmentation"].tally(split, lambda out, y: torch.tensor(0.5))
    tally.add(logits, truth)
    metrics, _ = tally.result(lambda t: t)
    # class 0: tp 1, fp 1, fn 0 -> 2/3; class 1: tp 2, fp 0, fn 1 -> 4/5
    assert metrics["dice_mean"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert metrics["loss"] == pytest.approx(0.5)
    p = logits.softmax(1)
    g = F.one_hot(truth, 2).permute(0, 3, 1, 2).float()
    soft = ((2 * (p * g).sum((0, 2, 3)) + 1) / (p.sum((0, 2, 3)) + g.sum((0, 2, 3)) + 1)).mean()
    assert metrics["soft_dice_batch_mean"] == pytest.approx(float(soft))
    assert "per_class" not in metrics and "accuracy" not in metrics


def test_segmentation_batches_flip_each_mask_with_its_image() -> None:
    cols = torch.arange(4, dtype=torch.uint8).view(1, 1, 1, 4).expand(8, 3, 4, 4).contiguous()
    masks = torch.tensor([0, 0, 1, 1], dtype=torch.uint8).view(1, 1, 4).expand(8, 4, 4).contiguous()
    split = SegData(cols * 60, masks, [str(i) for i in range(8)], ["bg", "fg"])
    g = torch.Generator().manual_seed(0)
    x, y = TASKS["segmentation"].make_batch(split, torch.arange(8), RT, identity, AugmentConfig(hflip=True), g)
    flipped = x[:, 0, 0, 0] > x[:, 0, 0, -1]
    assert 0 < int(flipped.sum()) < 8  # both outcomes occur, so the check below sees both
    assert torch.equal(y[flipped], masks[flipped].flip(-1).long())
    assert torch.equal(y[~flipped], masks[~flipped].long())
    assert y.dtype == torch.long and x.dtype == torch.float32


@pytest.mark.parametrize(("aug", "ignore"), [(AugmentConfig(rotate=40), None), (AugmentConfig(rotate=40), 255),
                                             (AugmentConfig(elastic=3), None),
                                             (AugmentConfig(rotate=40, crop_scale=0.8, elastic=3), 255)])
def test_a_warped_mask_keeps_the_label_of_what_its_image_shows_or_ignore_outside(aug: AugmentConfig,
                                                                                 ignore: int | None) -> None:
    # the image's grey level is its label (blocks of 0 and 255), so after a rotation with reflected borders a pixel
    # whose bilinear grey is near 1 (near 0) has label 1 (0): its nearest source pixel weighs at least 1/4
    masks = torch.zeros(6, 32, 32, dtype=torch.uint8)
    masks[:, :, :10] = 1
    masks[:, 20:, :] = 1
    split = SegData((masks * 255)[:, None].expand(6, 3, 32, 32).contiguous(), masks, [str(i) for i in range(6)],
                    ["bg", "fg"], ignore)
    g = torch.Generator().manual_seed(0)
    x, y = TASKS["segmentation"].make_batch(split, torch.arange(6), RT, identity, aug, g)
    grey = x[:, 0]
    assert int((y != masks.long()).sum()) > 100  # the warp moved the masks
    inside = y != 255
    corners = ~inside if ignore is not None else torch.zeros_like(inside)
    if ignore is not None:  # the warp reached outside every image's corners: those pixels are ignored
        assert bool(corners[:, 0, 0].any())
    else:
        assert not bool((y == 255).any())
    sure1, sure0 = (grey > 0.9) & inside, (grey < 0.1) & inside
    assert int(sure1.sum()) > 1000 and int(sure0.sum()) > 1000
    assert bool((y[sure1] == 1).all()) and bool((y[sure0] == 0).all())


def test_elastic_shifts_are_the_drawn_control_point_displacements_in_pixels() -> None:
    # a ramp along x (grey = column / 64 on 65 columns): bilinear sampling of a ramp is exact, so a pixel's grey
    # after the warp says where it sampled; the centre pixel is the centre control point of the 3x3 grid, whose
    # displacement (x, in pixels) is the generator's draw times the sd
    from cnnlab.data.augment import augment_batch

    n, sd = 8, 5.0
    ramp = (torch.arange(65, dtype=torch.float32) / 64).view(1, 1, 1, 65).expand(n, 1, 65, 65).contiguous()
    x, _ = augment_batch(ramp, None, AugmentConfig(elastic=sd), torch.Generator().manual_seed(4))
    drawn = torch.randn(n, 2, 3, 3, generator=torch.Generator().manual_seed(4)) * sd
    torch.testing.assert_close(x[:, 0, 32, 32] * 64 - 32, drawn[:, 0, 1, 1], atol=1e-3, rtol=0)
    assert float(drawn[:, 0, 1, 1].abs().max()) > 2  # the pixels moved by whole pixels, not grid units


def test_classification_batches_keep_their_labels_under_augmentation() -> None:
    split = ClsData(torch.randint(0, 255, (6, 1, 4, 4), dtype=torch.uint8), torch.tensor([5, 4, 3, 2, 1, 0]),
                    list("abcdef"), [str(i) for i in range(6)])
    x, y = TASKS["classification"].make_batch(split, torch.tensor([4, 0]), RT, identity,
                                              AugmentConfig(hflip=True, vflip=True), torch.Generator().manual_seed(1))
    assert y.tolist() == [1, 5]
    assert x.shape == (2, 1, 4, 4)


def test_colorization_outputs_one_channel_per_target_channel_and_predict_refuses_it() -> None:
    grey = torch.zeros(1, 1, 4, 4, dtype=torch.uint8)
    for space, k in (("rgb", 3), ("lab", 2)):
        split = ColorData(grey, torch.zeros(1, k, 4, 4, dtype=torch.uint8), ["a"], space)
        assert TASKS["colorization"].num_outputs(split.class_names) == k
    with pytest.raises(CnnlabError, match="predict handles segmentation and classification runs, not 'colorization'"):
        task_for("colorization").require_inference("predict")
    task_for("segmentation").require_inference("predict")  # no error
    task_for("classification").require_inference("export")


def test_each_task_picks_the_best_epoch_by_its_own_number() -> None:
    assert task_for("segmentation").selection_score({"dice_mean": 0.4, "loss": 1.0}) == 0.4
    assert task_for("segmentation").selection_score({"dice_mean": None, "loss": 1.0}) == -float("inf")
    assert task_for("classification").selection_score({"accuracy": 0.9, "loss": 1.0}) == 0.9
    assert task_for("colorization").selection_score({"loss": 0.25}) == -0.25


def test_classification_predictions_are_probability_rows_in_one_csv(tmp_path: Path) -> None:
    task = task_for("classification")
    assert task.planned_outputs(tmp_path, ["a", "b"]) == [tmp_path / "probabilities.csv"]
    rows = [task.write_prediction(tmp_path, s, Path(f"{s}.png"), torch.zeros(3, 2, 2), torch.tensor(p), ["cat", "dog"],
                                  None) for s, p in (("a", [0.25, 0.75]), ("b", [0.875, 0.125]))]
    task.finish_predictions(tmp_path, rows, ["cat", "dog"])
    with open(tmp_path / "probabilities.csv") as f:
        read = list(csv.DictReader(f))
    assert [(r["image"], r["predicted"], float(r["cat"])) for r in read] == [("a.png", "dog", 0.25),
                                                                             ("b.png", "cat", 0.875)]


# a part telling the tasks apart: by the kind of split, by a task's name in any spelling of the lookup (a recipe's
# r.task, a summary's s["task"] or s.get("task"), a result's result["task"]), or by comparing anything to a task name
TASK_BRANCH = re.compile(
    r"isinstance\([^)]*(SegData|ClsData|ColorData)"
    r"|task [!=]="
    r"|\[[\"']task[\"']\] *[!=]="
    r"|\.get\([\"']task[\"'][^)]*\) *[!=]="
    r"|[!=]= *[\"'](segmentation|classification|colorization)[\"']"
    r"|[\"'](segmentation|classification|colorization)[\"'] *[!=]=")


def task_branches(src: Path) -> list[str]:
    """file:line of each line outside tasks/ and data/ (which defines the split types, below the tasks) that tells
    the tasks apart."""
    return [f"{p.relative_to(src)}:{i}" for p in sorted(src.rglob("*.py")) if p.parts[len(src.parts)] not in
            ("tasks", "data") for i, line in enumerate(p.read_text().splitlines(), 1) if TASK_BRANCH.search(line)]


def test_no_part_outside_tasks_asks_which_kind_of_split_or_task_it_holds() -> None:
    """Issue 19: per-task code lives in cnnlab.tasks; a new task then needs no change anywhere else."""
    assert task_branches(SRC) == []


def test_the_task_branch_check_catches_every_form_of_asking(tmp_path: Path) -> None:
    """Each way of asking which task or split a part holds, planted in a copy of the tree, is reported at its line
    (issue 32: `result["task"] == ...` in cli/infer.py had passed unseen); the same lines in tasks/ are allowed."""
    shutil.copytree(SRC, tmp_path / "cnnlab", ignore=shutil.ignore_patterns("__pycache__"))
    forms = ['if isinstance(split, SegData):', 'if r.task == "segmentation":', 'if task != name:',
             'if result["task"] == "classification":', "if s['task'] != 'colorization':",
             'if s.get("task") == "segmentation":', 'if s.get("task", "") != kind:', 'if kind == "classification":',
             'if "colorization" != kind:']
    for part in ("cli", "report", "tasks"):
        with open(tmp_path / "cnnlab" / part / "__init__.py", "a") as f:
            f.write("".join(f"\n{form}\n    pass\n" for form in forms))
    lines = {part: len((SRC / part / "__init__.py").read_text().splitlines()) for part in ("cli", "report")}
    planted = [f"{part}/__init__.py:{lines[part] + 2 + 3 * i}" for part in ("cli", "report") for i in range(len(forms))]
    assert [f for f in task_branches(tmp_path / "cnnlab") if f not in task_branches(SRC)] == planted


def test_a_colorization_run_loads_with_one_output_per_colour_channel(tmp_path: Path) -> None:
    """load_run used to build colorization models with as many outputs as input channels (1, not 3), so predict
    on such a run said the weights did not fit the model instead of naming the task it does not handle."""
    recipe = load_recipe(ROOT / "recipes" / "endovis" / "d_colorize.yaml",
                         ["model.params.width=4", "model.params.depth=2", "data.size=[16, 16]"])
    model = build_model(recipe.model.name, 1, 3, (16, 16), recipe.model.params)
    torch.save({"model": model.state_dict(), "recipe": asdict(recipe), "norm": {"mean": [0.5], "std": [0.25]},
                "class_names": ["R", "G", "B"], "in_channels": 1, "input_size": [16, 16]}, tmp_path / "best.pt")
    run = load_run(tmp_path, device="cpu", precision="fp32")
    assert run.model(torch.zeros(1, 1, 16, 16)).shape == (1, 3, 16, 16)
    with pytest.raises(CnnlabError, match="predict handles segmentation and classification runs, not 'colorization'"):
        predict_paths(run, [tmp_path], tmp_path / "out")


def test_end_of_run_passes_the_model_once_over_the_tested_split_and_keeps_its_label_maps(
        endovis_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The end of a run used to run the model twice over the tested split (evaluate for the metrics, then again for
    the label maps the figures and per-image scores use): the label maps are now taken from evaluate's own
    batches. Oracle: the samples the model sees while summary.json is written (test once, validation once) and
    torch's argmax over the same model's logits, batch for batch."""
    from cnnlab.config import recipe_from_dict
    from cnnlab.engine import run as run_mod
    from cnnlab.engine import summary as summary_mod
    from cnnlab.engine.steps import predict_logits
    from conftest import tiny_recipe

    seen: list[int] = []
    kept: dict[str, torch.Tensor] = {}
    real_summary, real_figures = summary_mod.write_summary, summary_mod.write_run_figures

    def counted(ctx, state, on_batch=None):
        hook = ctx.core.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
        try:
            out = real_summary(ctx, state, on_batch)
        finally:
            hook.remove()
        kept["expected"] = predict_logits(replace(ctx.scorer(), batch_size=3), ctx.data.test).argmax(1).to(torch.uint8)
        return out

    def figures(run_dir, r, task, split, history, pred=None, cm=None):
        kept["pred"] = pred
        return real_figures(run_dir, r, task, split, history, pred, cm)

    monkeypatch.setattr(run_mod, "write_summary", counted)
    monkeypatch.setattr(summary_mod, "write_run_figures", figures)
    recipe = recipe_from_dict(tiny_recipe(endovis_root, tmp_path / "runs", train={"eval_batch_size": 3}))
    run_dir = run_mod.train(recipe)
    assert seen == [3, 1, 3, 1]  # 4 test images in batches of 3, then 4 validation images; no second test pass
    assert kept["pred"].dtype == torch.uint8 and torch.equal(kept["pred"], kept["expected"])
    assert (run_dir / "figures" / "overlays.png").is_file()


def test_each_task_keeps_what_its_summary_and_figures_need_of_a_batch_of_logits() -> None:
    """Segmentation keeps uint8 label maps (torch's argmax), classification probabilities (softmax), colorization
    the colours of the samples its figure shows; a task keeps nothing of samples it does not report."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 5, 6, generator=g)
    seg = TASKS["segmentation"]
    assert seg.predicted_samples(seg_split(torch.zeros(10, 5, 6))) == 10
    assert torch.equal(seg.prediction_batch(logits), logits.argmax(1).to(torch.uint8))
    cls_split = ClsData(torch.zeros(7, 1, 4, 4, dtype=torch.uint8), torch.zeros(7, dtype=torch.long),
                        [str(i) for i in range(7)], ["a", "b", "c"])
    cls = TASKS["classification"]
    assert cls.predicted_samples(cls_split) == 7
    assert torch.allclose(cls.prediction_batch(logits[:, :, 0, 0]), F.softmax(logits[:, :, 0, 0], dim=1))
    color_split = ColorData(torch.zeros(9, 1, 4, 4, dtype=torch.uint8), torch.zeros(9, 3, 4, 4, dtype=torch.uint8),
                            [str(i) for i in range(9)])
    assert TASKS["colorization"].predicted_samples(color_split) == 4


def test_each_task_words_what_cnnlab_predict_wrote() -> None:
    """The lines `cnnlab predict` prints come from the run's task (cli/infer.py used to branch on the task's name):
    classification lists each image's class and probabilities, segmentation where its masks went and how they
    encode classes."""
    cls = {"class_names": ["cat", "dog"], "images": [{"image": "a.png", "predicted": "dog", "cat": 0.25, "dog": 0.75}]}
    assert TASKS["classification"].predict_lines(cls, "out/") == [
        "a.png: dog  (cat 0.250  dog 0.750)", "probabilities of 1 images in out/probabilities.csv"]
    seg = {"mask_encoding": {"kind": "index"}, "images": [{}, {}]}
    assert TASKS["segmentation"].predict_lines(seg, "out/") == [
        "wrote masks (index), overlays and class areas of 2 images to out/"]
    assert TASKS["segmentation"].predict_lines(seg, "out", overlays=False) == [
        "wrote masks (index), class areas of 2 images to out"]


def test_each_task_says_what_a_run_reached_and_how_its_numbers_are_computed() -> None:
    """A paper's results sentence and the conventions paragraphs come from the run's task (report/latex.py used to
    choose by which metric existed, metrics/names.py kept per-task tables keyed by name); a task whose own number
    is missing states the loss."""
    seg = {"metrics": {"dice_mean": 0.5, "dice_mean_foreground": 0.25, "iou_mean": 0.4, "pixel_accuracy": 0.9}}
    assert TASKS["segmentation"].reached(seg) == ("a strict mean Dice of", 0.5, [
        ("foreground", 0.25), ("mean IoU", 0.4), ("pixel accuracy", 0.9)])
    assert TASKS["classification"].reached({"metrics": {"accuracy": 0.75}, "train_accuracy": 1.0}) == (
        "an accuracy of", 0.75, [("training accuracy", 1.0)])
    for name in TASKS:
        assert TASKS[name].reached({"metrics": {"loss": 0.125, "dice_mean": None}}) == ("a loss of", 0.125, [])
        assert "`" in TASKS[name].conventions and "{" not in TASKS[name].conventions_text()  # every label filled in
    assert TASKS["segmentation"].study_metrics[0] == TASKS["segmentation"].headline  # a study's headline first
    assert TASKS["classification"].study_metrics == ("accuracy",) and TASKS["colorization"].study_metrics == ()


def test_a_run_looks_its_task_up_once_and_carries_it_in_its_context() -> None:
    """Issue 32: the engine looked the task up 12 times per run, by name and by split type; now engine/run.py looks
    it up once, by the recipe's name, into RunContext, and everything inside the run takes it from there (the
    recipe check, also in engine/, runs before any run)."""
    calls = {p.name: p.read_text().count("task_for(") for p in sorted((SRC / "engine").glob("*.py"))
             if p.name != "recipe_check.py"}
    assert {name: n for name, n in calls.items() if n} == {"run.py": 1}
    assert "task = task_for(r.task)" in (SRC / "engine" / "run.py").read_text()
