"""`cnnlab evaluate --native`: scores at the images' own size (DRIVE/ISBI protocol) on a folders data set with a
field of view, checked against an independent count (masks read with PIL, logits upsampled with F.interpolate),
and the one-line refusals (mixed sizes, classification runs)."""
from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch.nn.functional as F
from PIL import Image

from cnnlab.cli import main
from cnnlab.config import recipe_from_dict
from cnnlab.data.loading import load_split
from cnnlab.engine.run import train
from cnnlab.engine.steps import predict_logits
from cnnlab.errors import ConfigError, DataError
from cnnlab.inference.evaluate import evaluate_run
from cnnlab.inference.predict import load_run

H, W = 20, 22          # native size: not the trained one, and not a multiple of it
TRAINED = [16, 16]


def _write_split(root: Path, split: str, n: int, seed: int) -> None:
    """Images with 1-pixel-wide vertical 'vessels' (dark lines), binary 0/255 masks, a FOV cutting off a corner."""
    rng = np.random.default_rng(seed)
    for d in ("images", "masks", "fov"):
        (root / split / d).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        mask = np.zeros((H, W), np.uint8)
        for c in rng.choice(np.arange(1, W - 1), size=4, replace=False):
            mask[2:H - 2, c] = 255
        img = rng.integers(150, 220, (H, W, 3), dtype=np.uint8)
        img[mask > 0] = 30
        fov = np.full((H, W), 255, np.uint8)
        fov[:5, :6] = 0
        Image.fromarray(img).save(root / split / "images" / f"im{i}.png")
        Image.fromarray(mask).save(root / split / "masks" / f"im{i}_mask.png")
        Image.fromarray(fov).save(root / split / "fov" / f"im{i}_mask.png")


@pytest.fixture(scope="module")
def vessel_run(tmp_path_factory) -> tuple[Path, Path]:
    """A one-epoch binary run on a tiny folders set (train/test folders with a fov folder), trained at 16x16."""
    base = tmp_path_factory.mktemp("native")
    root = base / "vessels"
    _write_split(root, "train", 4, 0)
    _write_split(root, "test", 3, 1)
    raw = {"name": "v", "out": str(base / "runs"),
           "data": {"format": "folders", "root": str(root), "train": "train", "val": "test", "test": "test",
                    "size": TRAINED, "cache": False, "options": {"fov": "fov", "split": "folders"}},
           "model": {"name": "unet", "params": {"width": 8, "depth": 1}}, "loss": {"name": "dice_ce"},
           "optim": {"lr": 0.02}, "augment": {"hflip": False, "vflip": False},
           "train": {"epochs": 20, "batch_size": 4, "progress": False, "threads": 1}}
    return train(recipe_from_dict(raw)), root


def cm_of(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """2 x 2 counts, truth x prediction."""
    cm = np.zeros((2, 2), np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def _oracle_counts(run_dir: Path, root: Path) -> tuple[np.ndarray, list[float]]:
    """Confusion matrix (truth x prediction) and per-image vessel Dice at native size, computed independently of
    evaluate: trained-size logits upsampled bilinearly, argmax, against the PNG masks inside the PNG FOVs."""
    run = load_run(run_dir, "cpu")
    data = load_split(run.recipe.data, "test")  # the model's inputs: the training preprocessing
    logits = predict_logits(run.scorer(8), data)
    up = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False).argmax(1).numpy()
    cm, per_image = np.zeros((2, 2), np.int64), []
    for i, name in enumerate(data.names):
        truth = (np.array(Image.open(root / "test" / "masks" / f"{Path(name).stem}_mask.png")) > 0).astype(int)
        inside = np.array(Image.open(root / "test" / "fov" / f"{Path(name).stem}_mask.png")) > 0
        t, p = truth[inside], up[i][inside]
        cm += cm_of(t, p)
        tp, fp, fn = cm_of(t, p)[1, 1], cm_of(t, p)[0, 1], cm_of(t, p)[1, 0]
        per_image.append(1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn))
    return cm, per_image


def test_native_scores_equal_an_independent_count(vessel_run, tmp_path):
    run_dir, root = vessel_run
    result, path = evaluate_run(run_dir, out=tmp_path, device="cpu", progress=False, native=True)
    cm, per_image = _oracle_counts(run_dir, root)
    dice = [2 * cm[k, k] / (cm[k, :].sum() + cm[:, k].sum()) for k in (0, 1)]
    fg = result["class_names"][1]
    assert result["resolution"] == f"native {H}x{W}"
    assert result["per_class"][fg]["dice"] == pytest.approx(dice[1], abs=1e-12)
    assert result["per_class"]["background"]["dice"] == pytest.approx(dice[0], abs=1e-12)
    assert result["metrics"]["dice_mean"] == pytest.approx(np.mean(dice), abs=1e-12)
    assert result["metrics"]["pixel_accuracy"] == pytest.approx(np.trace(cm) / cm.sum(), abs=1e-12)
    assert result["foreground"]["dice_per_image_mean"] == pytest.approx(np.mean(per_image), abs=1e-12)
    assert "native size" in result["foreground"]["conventions"]["per_image"]
    # the trained-size scores are kept beside, and are those of a plain evaluate
    plain, _ = evaluate_run(run_dir, out=tmp_path, device="cpu", progress=False)
    assert plain["resolution"] == f"trained {TRAINED[0]}x{TRAINED[1]}"
    assert result["metrics_trained_size"] == plain["metrics"]
    assert cm[1, 1] > 0 and cm[0, 1] > 0  # the model finds vessels and misses some: a non-trivial count
    assert result["per_class"][fg]["dice"] != plain["per_class"][fg]["dice"]  # not the trained-size score
    assert '"resolution": "native 20x22"' in path.read_text()


def test_cli_native_says_the_resolution(vessel_run, tmp_path, capsys):
    run_dir, _ = vessel_run
    assert main(["evaluate", str(run_dir), "--native", "--device", "cpu", "--out", str(tmp_path)]) == 0
    assert f"scored at native {H}x{W} HxW" in capsys.readouterr().out


def test_mixed_sizes_are_refused_with_a_working_predict_hint(vessel_run, tmp_path, capsys):
    run_dir, root = vessel_run
    other = tmp_path / "other"
    shutil.copytree(root, other)
    for d in ("images", "masks", "fov"):  # one test image (and its masks) 4 rows taller
        f = next((other / "test" / d).glob("im2*"))
        Image.fromarray(np.pad(np.array(Image.open(f)), [(0, 4)] + [(0, 0)] * (np.array(Image.open(f)).ndim - 1),
                               mode="edge")).save(f)
    with pytest.raises(DataError, match=f"{H}x{W} \\(2\\), {H + 4}x{W} \\(1\\)"):
        evaluate_run(run_dir, data_root=other, device="cpu", progress=False, native=True, out=tmp_path)
    assert main(["evaluate", str(run_dir), "--data", str(other), "--native", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "one image size" in err
    command = err[err.index("cnnlab predict"):err.index(" writes masks")]
    argv = shlex.split(command.replace("DIR", shlex.quote(str(tmp_path / "masks"))))
    assert argv[3] == str(other / "test" / "images")
    assert main(argv[1:] + ["--no-overlays"]) == 0  # the hint's command works
    sizes = sorted(Image.open(p).size for p in (tmp_path / "masks").glob("*_mask.png"))
    assert sizes == [(W, H), (W, H), (W, H + 4)]  # masks at each image's own size


def test_classification_runs_are_refused(tmp_path):
    raw = {"name": "d", "task": "classification", "out": str(tmp_path),
           "data": {"format": "digits", "root": ".", "val": "test"},
           "model": {"name": "mlp", "params": {"hidden": [8]}},
           "loss": {"name": "cross_entropy"}, "train": {"epochs": 1, "batch_size": 256, "progress": False,
                                                        "max_steps_per_epoch": 1}}
    run_dir = train(recipe_from_dict(raw))
    with pytest.raises(ConfigError, match="--native applies to segmentation runs; this is a classification run"):
        evaluate_run(run_dir, device="cpu", progress=False, native=True)


def test_letterboxed_training_is_refused_with_the_predict_hint(vessel_run, tmp_path):
    """Training that kept the aspect ratio padded the images: the trained-size output is not a resize of them."""
    _, root = vessel_run
    raw = {"name": "lb", "out": str(tmp_path / "runs"),
           "data": {"format": "folders", "root": str(root), "train": "train", "val": "test", "test": "test",
                    "size": TRAINED, "cache": False,
                    "options": {"fov": "fov", "split": "folders", "keep_aspect": True}},
           "model": {"name": "unet", "params": {"width": 4, "depth": 1}}, "loss": {"name": "dice_ce"},
           "train": {"epochs": 1, "batch_size": 4, "progress": False, "threads": 1}}
    run_dir = train(recipe_from_dict(raw))
    with pytest.raises(DataError, match="--native: training placed the images") as e:
        evaluate_run(run_dir, device="cpu", progress=False, native=True, out=tmp_path)
    assert e.value.hint.startswith(f"cnnlab predict {run_dir} {root / 'test' / 'images'} --out DIR")


def test_other_formats_are_refused_with_the_predict_hint(tmp_path, endovis_root):
    from conftest import tiny_recipe

    run_dir = train(recipe_from_dict(tiny_recipe(endovis_root, tmp_path / "runs", train={"epochs": 1,
                                                                                          "threads": 1})))
    with pytest.raises(ConfigError, match="--native reads the images' own sizes from folders data sets, not "
                                          "'endovis'") as e:
        evaluate_run(run_dir, device="cpu", progress=False, native=True, out=tmp_path)
    assert e.value.hint.startswith(f"cnnlab predict {run_dir} ")
