"""Test-time flips (engine/flips.py): the rule, the averaging, and one function for the end-of-run test,
`evaluate` and `predict`.

Oracles: softmax maps computed pass by pass with torch and averaged by hand; strict Dice counted by hand from the
hand-averaged maps of a trained run's best model; models built to commute with a flip."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from cnnlab.config import AugmentConfig, DataConfig, recipe_from_dict
from cnnlab.data.loading import load_split
from cnnlab.engine.flips import HORIZONTAL, flip_mean_logits, tta_flips
from cnnlab.engine.recipe_check import check_recipe
from cnnlab.engine.run import train
from cnnlab.engine.runtime import resolve_runtime
from cnnlab.errors import ConfigError
from cnnlab.inference.evaluate import evaluate_run
from cnnlab.inference.predict import class_probabilities, load_run, predict_paths
from conftest import tiny_recipe

FP32 = resolve_runtime("cpu", "fp32", False)


def test_tta_flips_are_the_ones_the_run_trained_with():
    assert tta_flips(AugmentConfig(hflip=True, vflip=True), False) == ()
    assert tta_flips(AugmentConfig(hflip=True), True) == ((-1,),)  # an upright scene: the mirror alone
    assert tta_flips(AugmentConfig(vflip=True), True) == ((-2,),)
    assert tta_flips(AugmentConfig(hflip=True, vflip=True), True) == ((-1,), (-2,), (-2, -1))
    assert tta_flips(AugmentConfig(), True) == ()  # taught no symmetry (digits): nothing to average


def test_flip_mean_logits_are_the_log_of_the_mean_softmax():
    torch.manual_seed(3)
    model = nn.Conv2d(3, 4, 3, padding=1).eval()
    x = torch.randn(2, 3, 8, 10)
    with torch.no_grad():
        out = flip_mean_logits(model, x, ((-2,),))
        by_hand = (model(x).softmax(1) + model(x.flip(-2)).flip(-2).softmax(1)) / 2
        torch.testing.assert_close(out.softmax(1), by_hand, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(out.exp().sum(1), torch.ones(2, 8, 10), atol=1e-5, rtol=0)
        torch.testing.assert_close(flip_mean_logits(model, x, ()), model(x))  # no flips: the model's own logits


def test_train_tta_needs_flips_and_class_scores(tmp_path):
    with pytest.raises(ConfigError, match="train.tta"):
        recipe_from_dict(tiny_recipe(tmp_path, tmp_path, train={"tta": True}))
    colour = recipe_from_dict(tiny_recipe(tmp_path, tmp_path, task="colorization", train={"tta": True},
                                          augment={"hflip": True}, loss={"name": "mse"}))
    with pytest.raises(ConfigError, match="train.tta.*colorization"):
        check_recipe(colour)
    assert recipe_from_dict(tiny_recipe(tmp_path, tmp_path, train={"tta": True}, augment={"vflip": True})).train.tta


def _strict_dice(pred: torch.Tensor, truth: torch.Tensor, k: int) -> float:
    """Strict mean Dice by hand: global counts, mean over the classes present in the ground truth."""
    scores = []
    for c in range(k):
        p, t = pred == c, truth == c
        if t.any():
            scores.append(2 * (p & t).sum().item() / (p.sum().item() + t.sum().item()))
    return sum(scores) / len(scores)


@pytest.fixture(scope="module")
def tta_run(endovis_root, tmp_path_factory):
    raw = tiny_recipe(endovis_root, tmp_path_factory.mktemp("runs"), augment={"hflip": True, "vflip": True},
                      train={"tta": True, "precision": "fp32", "channels_last": False})
    return train(recipe_from_dict(raw))


def test_the_end_of_run_test_evaluate_and_predict_average_the_same_four_passes(tta_run, endovis_root, tmp_path):
    run = load_run(tta_run, device="cpu")
    test = load_split(DataConfig(format="endovis", root=str(endovis_root)), "test")
    x = run.norm(test.images.float() / 255)
    with torch.no_grad():
        plain = run.model(x).softmax(1)
        four = sum(run.model(x.flip(d)).flip(d).softmax(1) for d in [(-1,), (-2,), (-2, -1)]) + plain
    k = len(run.class_names)
    by_hand = _strict_dice((four / 4).argmax(1), test.masks.long(), k)
    assert not torch.equal((four / 4).argmax(1), plain.argmax(1))  # the flips changed some pixels
    summary = json.loads((tta_run / "summary.json").read_text())
    assert summary["test_time_flips"] == ["horizontal", "vertical", "both"]
    assert any("train.tta" in n for n in summary["notes"])
    assert summary["metrics"]["dice_mean"] == pytest.approx(by_hand, abs=1e-6)
    again, _ = evaluate_run(tta_run, out=tmp_path / "e", device="cpu", progress=False)  # default: as the run
    assert again["tta_flips"] == ["horizontal", "vertical", "both"]
    assert again["metrics"]["dice_mean"] == pytest.approx(by_hand, abs=1e-6)
    one_pass, _ = evaluate_run(tta_run, out=tmp_path / "e1", device="cpu", progress=False, tta=False)
    assert one_pass["tta_flips"] == []
    assert one_pass["metrics"]["dice_mean"] == pytest.approx(_strict_dice(plain.argmax(1), test.masks.long(), k),
                                                             abs=1e-6)
    torch.testing.assert_close(class_probabilities(run.model, x, FP32, ((-1,), (-2,), (-2, -1))), four / 4,
                               atol=1e-5, rtol=1e-4)
    index = predict_paths(run, [endovis_root / "segmentation" / "test"], tmp_path / "p", progress=False)
    assert index["tta"] and index["tta_flips"] == ["horizontal", "vertical", "both"]  # predict follows the run
    from cnnlab.report.build import write_run_report

    write_run_report(tta_run)  # the report's opening line says how the scores were made
    assert "run, averaged over each image and its flips (horizontal, vertical, both);" in \
        (tta_run / "report.md").read_text()


def _symmetric_conv(cin: int, cout: int) -> nn.Conv2d:
    """A conv whose kernels are mirror-symmetric: it commutes with a horizontal flip."""
    conv = nn.Conv2d(cin, cout, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_((conv.weight + conv.weight.flip(-1)) / 2)
    return conv


def test_tta_equals_no_tta_for_a_flip_equivariant_model():
    torch.manual_seed(0)
    model = nn.Sequential(_symmetric_conv(3, 6), nn.ReLU(), _symmetric_conv(6, 3)).eval()
    half = torch.randn(2, 3, 16, 8)
    symmetric = torch.cat([half, half.flip(-1)], dim=-1)
    asymmetric = torch.randn(2, 3, 16, 16)
    for x in (symmetric, asymmetric):
        torch.testing.assert_close(class_probabilities(model, x, FP32, HORIZONTAL),
                                   class_probabilities(model, x, FP32), atol=1e-6, rtol=1e-5)


def test_tta_output_commutes_with_flipping_for_any_model():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 3, 3, padding=1)).eval()
    x = torch.randn(2, 3, 16, 16)
    tta = class_probabilities(model, x, FP32, HORIZONTAL)
    torch.testing.assert_close(class_probabilities(model, x.flip(-1), FP32, HORIZONTAL), tta.flip(-1), atol=1e-6,
                               rtol=1e-5)
    assert (tta - class_probabilities(model, x, FP32)).abs().max() > 1e-3  # TTA changed something
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4)).eval()
    tta_cls = class_probabilities(classifier, x, FP32, HORIZONTAL)
    torch.testing.assert_close(class_probabilities(classifier, x.flip(-1), FP32, HORIZONTAL), tta_cls)


def test_four_flip_tta_is_the_mean_of_the_four_passes_flipped_back():
    """Oracle: the four softmax maps computed one by one with torch and averaged by hand; the result commutes with
    both flips (a model taught both symmetries answers a mirrored image with the mirrored answer)."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 3, 3, padding=1)).eval()
    x = torch.randn(2, 3, 16, 12)
    flips = tta_flips(AugmentConfig(hflip=True, vflip=True), True)
    with torch.no_grad():
        by_hand = sum(model(x.flip(d) if d else x).softmax(1).flip(d) if d else model(x).softmax(1)
                      for d in [(), (-1,), (-2,), (-2, -1)]) / 4
    four = class_probabilities(model, x, FP32, flips)
    torch.testing.assert_close(four, by_hand, atol=1e-6, rtol=1e-5)
    for d in ((-1,), (-2,)):
        torch.testing.assert_close(class_probabilities(model, x.flip(d), FP32, flips), four.flip(d), atol=1e-6,
                                   rtol=1e-5)
    assert (four - class_probabilities(model, x, FP32, HORIZONTAL)).abs().max() > 1e-3  # not the horizontal pair




def test_the_export_says_how_to_average_the_flips_and_following_it_gives_predicts_masks(tta_run, endovis_root,
                                                                                        tmp_path):
    import warnings

    import numpy as np
    from PIL import Image

    from cnnlab.inference.export import export_run, preprocess_path

    path = export_run(tta_run, "torchscript", tmp_path / "m.pt")
    spec = json.loads(preprocess_path(path).read_text())
    assert spec["test_time_flips"]["flips"] == ["horizontal", "vertical", "both"]
    image_path = endovis_root / "segmentation/test/2/2_input.jpg"
    predict_paths(load_run(tta_run, device="cpu"), [image_path], tmp_path / "pred", progress=False)
    pixels = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.float32) / 255
    x = torch.from_numpy(((pixels - np.array(spec["mean"], dtype=np.float32))
                          / np.array(spec["std"], dtype=np.float32)).transpose(2, 0, 1).copy())[None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torch.jit.load(str(path))
        dims = {"horizontal": (-1,), "vertical": (-2,), "both": (-2, -1)}
        probs = model(x).softmax(1) + sum(model(x.flip(dims[f])).flip(dims[f]).softmax(1)
                                          for f in spec["test_time_flips"]["flips"])
    mask = np.array(spec["mask_encoding"]["values"])[probs.argmax(1)[0].numpy()]
    written = np.asarray(Image.open(tmp_path / "pred" / "2_input_mask.png"))
    one_pass = np.array(spec["mask_encoding"]["values"])[model(x).argmax(1)[0].detach().numpy()]
    assert (mask == written).mean() > 0.99 and (one_pass != written).any()  # the flips, not one pass
