"""Issue 18, items 2, 3, 4 and 9: predict tiles at the training scale, one preprocessing definition for training,
predict and export (letterbox included), 16-bit images scaled the same in every reader, and images over Pillow's
decompression-bomb limit refused in one line naming the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import nn

from cnnlab.cli import main
from cnnlab.config import recipe_from_dict
from cnnlab.data.formats import endovis, folders, glas, imagefolder, voc
from cnnlab.data.formats.common import header, read_image
from cnnlab.data.formats.preprocess import Placement, Preprocess
from cnnlab.engine.runtime import resolve_runtime
from cnnlab.engine.steps import Normalizer
from cnnlab.errors import DataError
from cnnlab.inference.export import preprocess_spec
from cnnlab.inference.predict import MaskEncoding, TrainedRun, load_run, predict_paths

FP32 = resolve_runtime("cpu", "fp32", False)
ALL = {"fractions": {"train": 1.0}}


def _grey(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG")  # format by content: a PNG may be named .jpg or .bmp
    return path


def _gradient16(h: int, w: int) -> np.ndarray:
    """A 16-bit ramp up to 40950: Pillow's 8-bit convert clips all but the first pixels to 255."""
    return (np.arange(h * w).reshape(h, w) * 40950 // (h * w - 1)).astype(np.uint16)


def _scaled(a: np.ndarray) -> np.ndarray:
    """The shared 16-bit rule by hand: round(255 * pixel / the image's maximum)."""
    return np.round(255 * a.astype(np.float64) / a.max()).astype(np.uint8)


class Recorder(nn.Module):
    """Wraps a model and keeps every input it is called with (what the model saw)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.inner(x)


class Laplacian(nn.Module):
    """Class 1 where |3x3 Laplacian| of channel 0 exceeds 0.2: a detector of fine texture, so its answer depends on
    the pixel size it is shown, like any trained CNN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3)
        edge = F.conv2d(x[:, :1], k, padding=1).abs() - 0.2
        return torch.cat([torch.zeros_like(edge), edge], 1)


class Threshold(nn.Module):
    """Class 1 where channel 0 is above 0.5: pixel by pixel, no context."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x[:, :1]), x[:, :1] - 0.5], 1)


def _hand_run(model: nn.Module, size: tuple[int, int], channels: int = 1, **options) -> TrainedRun:
    """A TrainedRun of a hand-built model whose recipe says the folders reader trained it with these options."""
    recipe = recipe_from_dict({"name": "hand", "task": "segmentation",
                               "data": {"format": "folders", "root": "unused", "size": list(size),
                                        "options": options}})
    return TrainedRun(model.eval(), FP32, Normalizer((0.0,) * channels, (1.0,) * channels), ["bg", "fg"],
                      channels, size, "segmentation", MaskEncoding("binary", [0, 255]), recipe)


def _mask(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


# ------------------------------------------------------------------ a real run trained with keep_aspect
@pytest.fixture(scope="module")
def letterbox_run(tmp_path_factory) -> Path:
    """1 epoch of a tiny U-Net on 8 grey 24x40 images, letterboxed into 16x16 (keep_aspect: true)."""
    from cnnlab.engine.run import train

    root = tmp_path_factory.mktemp("lb")
    rng = np.random.default_rng(0)
    for i in range(8):
        _grey(root / "images" / f"s{i}.png", rng.integers(0, 256, (24, 40), dtype=np.uint8))
        m = np.zeros((24, 40), np.uint8)
        m[:, :20] = 255
        _grey(root / "masks" / f"s{i}.png", m)
    raw = {"name": "lb", "task": "segmentation", "out": str(root / "runs"),
           "data": {"format": "folders", "root": str(root), "size": [16, 16], "val": "val",
                    "options": {"fit": "resize", "keep_aspect": True, "split": "random"}},
           "model": {"name": "unet", "params": {"width": 4, "depth": 2}}, "loss": {"name": "dice"},
           "train": {"epochs": 1, "batch_size": 4, "eval_batch_size": 4, "progress": False}}
    return train(recipe_from_dict(raw))


def _input_seen(run, image: Path, out: Path) -> torch.Tensor:
    """The (normalised) tensor predict gives the model for one image file."""
    run.model = Recorder(run.model)
    predict_paths(run, [image], out)
    assert len(run.model.seen) == 1
    return run.model.seen[0][0].contiguous()


def _reader_tensor(run, image: Path, tmp: Path) -> torch.Tensor:
    """The tensor the training reader (folders, the run's own options) makes of the same file, normalised."""
    d = tmp / "reader"
    _grey(d / "images" / image.name, np.asarray(Image.open(image)))
    h, w = header(image)[:2]
    _grey(d / "masks" / image.name, np.zeros((h, w), np.uint8))
    r = run.recipe.data
    data = folders.load(d, "train", size=r.size, **{**r.options, "split": "random", **ALL})
    return run.norm(data.images[:1].float().div_(255))[0]


def test_predict_letterboxes_a_non_square_image_exactly_as_the_training_reader(letterbox_run, tmp_path):
    run = load_run(letterbox_run, device="cpu", precision="fp32")
    image = _grey(tmp_path / "wide.png", np.random.default_rng(3).integers(0, 256, (30, 52), dtype=np.uint8))
    seen = _input_seen(run, image, tmp_path / "pred")
    expected = _reader_tensor(run, image, tmp_path)
    assert torch.equal(seen, expected)
    # letterbox by hand: 30x52 -> s = 16/52 -> 9x16, rows 3..11 hold the image, the rest is padding (pixel 0)
    pad = run.norm(torch.zeros(1, 1, 1, 1))[0, 0, 0, 0]
    assert torch.all(seen[:, :3] == pad) and torch.all(seen[:, 12:] == pad) and not torch.all(seen[:, 3:12] == pad)
    assert _mask(tmp_path / "pred" / "wide_mask.png").shape == (30, 52)  # back at the image's own size


def test_preprocess_json_describes_the_letterbox_and_reproduces_the_training_tensor(letterbox_run, tmp_path):
    run = load_run(letterbox_run, device="cpu", precision="fp32")
    spec = preprocess_spec(run, "torchscript", {})
    prep = spec["preprocess"]
    assert (prep["policy"], prep["fit"], prep["keep_aspect"], prep["size"], prep["pad_value"]) == \
        ("letterbox", "resize", True, [16, 16], 0)
    assert "stretch" not in spec["resize"] and "pad" in spec["resize"]
    assert prep["mean"] == spec["mean"] == list(run.norm.mean) and prep["std"] == list(run.norm.std)
    # an application following only the JSON gets the training reader's tensor
    pixels = np.random.default_rng(4).integers(0, 256, (30, 52), dtype=np.uint8)
    image = _grey(tmp_path / "app.png", pixels)
    (H, W), (h, w) = prep["size"], pixels.shape
    s = min(H / h, W / w)
    nh, nw = round(h * s), round(w * s)
    x = F.interpolate(torch.from_numpy(pixels).float()[None, None], size=(nh, nw), mode="bilinear",
                      antialias=True, align_corners=False).round().clamp(0, 255)
    top, left = (H - nh) // 2, (W - nw) // 2
    x = F.pad(x, (left, W - nw - left, top, H - nh - top), value=prep["pad_value"])
    x = (x / 255 - torch.tensor(prep["mean"]).view(1, -1, 1, 1)) / torch.tensor(prep["std"]).view(1, -1, 1, 1)
    assert torch.allclose(x[0], _reader_tensor(run, image, tmp_path), atol=1e-6)


def test_restore_cuts_the_padding_off_and_resizes_back():
    prep = Preprocess((16, 16), "resize", True)
    pl = prep.place(30, 52)
    assert pl == Placement((30, 52), (9, 16), 3, 0)
    canvas = torch.zeros(2, 16, 16)
    canvas[1, 3:12] = 1.0  # the image region says class 1, the padding class 0
    back = prep.restore(canvas, pl)
    assert back.shape == (2, 30, 52)
    assert torch.allclose(back[1], torch.ones(30, 52)) and torch.all(back[0] == 0.0)


@pytest.mark.parametrize("fit,shape", [("pad", (10, 12)), ("crop", (32, 48))])
def test_pad_and_crop_runs_predict_at_native_resolution(tmp_path, fit, shape):
    """pad and crop train at native resolution: a pixel-wise model must give exactly its pixel-wise answer (the
    stretch to 16x16 and back that predict did before blurs it)."""
    run = _hand_run(Threshold(), (16, 16), fit=fit)
    pixels = np.random.default_rng(5).integers(0, 256, shape, dtype=np.uint8)
    predict_paths(run, [_grey(tmp_path / "x.png", pixels)], tmp_path / "p")
    np.testing.assert_array_equal(_mask(tmp_path / "p" / "x_mask.png"), np.where(pixels / 255 > 0.5, 255, 0))


# ------------------------------------------------------------------ item 2: --window at the training scale
def test_window_tiles_at_the_training_pixel_size_not_native(tmp_path):
    """Trained on images resized to 16x16; a 32x32 image (2x that scale) with --window 16x16 must be scaled to
    16x16 first: the same mask as without --window, and the model is never shown native-resolution tiles."""
    rng = np.random.default_rng(6)
    pixels = np.kron(rng.integers(0, 2, (16, 16)) * 255, np.ones((2, 2))).astype(np.uint8)  # 2x2-pixel texture
    image = _grey(tmp_path / "big.png", pixels)
    plain, windowed = Recorder(Laplacian()), Recorder(Laplacian())
    predict_paths(_hand_run(plain, (16, 16)), [image], tmp_path / "plain")
    result = predict_paths(_hand_run(windowed, (16, 16)), [image], tmp_path / "win", window=(16, 16))
    np.testing.assert_array_equal(_mask(tmp_path / "win" / "big_mask.png"), _mask(tmp_path / "plain" / "big_mask.png"))
    assert [tuple(x.shape) for x in windowed.seen] == [(1, 1, 16, 16)]
    assert torch.equal(windowed.seen[0], plain.seen[0])
    assert any("scaled as in training" in n for n in result["notes"])


def test_window_on_a_letterbox_run_approximates_the_plain_prediction(tmp_path):
    """keep_aspect: the scaled image is padded by the window at the bottom, not centred: the masks agree where
    the tile border does not reach (a pixel-wise model: everywhere)."""
    pixels = np.random.default_rng(7).integers(0, 256, (40, 64), dtype=np.uint8)
    image = _grey(tmp_path / "w.png", pixels)
    predict_paths(_hand_run(Threshold(), (16, 16), keep_aspect=True), [image], tmp_path / "plain")
    windowed = Recorder(Threshold())
    predict_paths(_hand_run(windowed, (16, 16), keep_aspect=True), [image], tmp_path / "win", window=(8, 8))
    # scaled to 10x16, then 8x8 tiles at stride 6: rows 0, 2; columns 0, 6, 8
    assert all(x.shape[-2:] == (8, 8) for x in windowed.seen) and sum(len(x) for x in windowed.seen) == 6
    agree = (_mask(tmp_path / "win" / "w_mask.png") == _mask(tmp_path / "plain" / "w_mask.png")).mean()
    assert agree > 0.99


# ------------------------------------------------------------------ item 4: 16-bit images
def _endovis16(root: Path, a: np.ndarray) -> torch.Tensor:
    from cnnlab.data.synthetic import endovis as synth

    synth.write(root, n_train=1, n_val=0, n_test=0, n_color_train=0, n_color_val=0, height=a.shape[0],
                width=a.shape[1])
    _grey(root / "segmentation/train/0/0_input.jpg", a)
    return endovis.load(root, "train").images[0]


def _glas16(root: Path, a: np.ndarray) -> torch.Tensor:
    from cnnlab.data.synthetic import glas as synth

    synth.write(root, n_train=1, n_test_a=0, n_test_b=0, height=a.shape[0], width=a.shape[1])
    _grey(root / "train_1.bmp", a)
    return glas.load(root, "train", size=list(a.shape)).images[0]


def _voc16(root: Path, a: np.ndarray) -> torch.Tensor:
    from cnnlab.data.synthetic import voc as synth

    synth.write(root, n_train=1, n_val=1, n_test=1, height=a.shape[0], width=a.shape[0])  # square: no rotation
    vdir = root / "VOCdevkit" / "VOC2012"
    name = (vdir / "ImageSets/Segmentation/train.txt").read_text().split()[0]
    _grey(vdir / "JPEGImages" / f"{name}.jpg", a)
    return voc.load(root, "train").images[0]


def _imagefolder16(root: Path, a: np.ndarray) -> torch.Tensor:
    _grey(root / "train" / "0" / "a.png", a)
    _grey(root / "train" / "1" / "b.png", np.zeros(a.shape, np.uint8))
    return imagefolder.load(root, "train").images[0]


def _folders16(root: Path, a: np.ndarray) -> torch.Tensor:
    _grey(root / "images" / "a.png", a)
    _grey(root / "masks" / "a.png", np.zeros(a.shape, np.uint8))
    return folders.load(root, "train", size=list(a.shape), split="random", **ALL).images[0]


@pytest.mark.parametrize("reader", [_endovis16, _glas16, _voc16, _imagefolder16, _folders16])
def test_a_16bit_png_is_scaled_by_its_maximum_in_every_reader(tmp_path, reader):
    a = _gradient16(32, 32)
    img = _grey(tmp_path / "probe.png", a)
    assert Image.open(img).mode == "I;16"  # a real 16-bit PNG
    got = reader(tmp_path / "data", a)
    for c in range(got.shape[0]):  # grey repeated to RGB where the reader makes colour
        np.testing.assert_array_equal(got[c].numpy(), _scaled(a))


def test_predict_reads_a_16bit_png_as_the_training_reader_does(tmp_path):
    a = _gradient16(16, 16)
    image = _grey(tmp_path / "deep.png", a)
    seen = Recorder(Threshold())
    predict_paths(_hand_run(seen, (16, 16)), [image], tmp_path / "p")
    np.testing.assert_array_equal((seen.seen[0][0, 0] * 255).round().numpy().astype(np.uint8), _scaled(a))
    assert torch.equal(seen.seen[0][0], _folders16(tmp_path / "f", a).float() / 255)
    fg = _mask(tmp_path / "p" / "deep_mask.png") == 255
    assert 0.4 < fg.mean() < 0.6  # half the ramp is above 0.5, not all of it (saturated white)


# ------------------------------------------------------------------ item 9: decompression bombs
def _bomb_set(root: Path) -> Path:
    """Grey 16x16 image/mask pairs and one 50x50 image: 2,500 pixels, over twice the lowered limit of 1,000, where
    Pillow raises DecompressionBombError (as a 20000x20000 file does at the default limit)."""
    for i in range(5):
        _grey(root / "images" / f"s{i}.png", np.full((16, 16), 40 * i, np.uint8))
        _grey(root / "masks" / f"s{i}.png", np.where(np.arange(256).reshape(16, 16) % 2, 255, 0).astype(np.uint8))
    _grey(root / "images" / "huge.png", np.zeros((50, 50), np.uint8))
    _grey(root / "masks" / "huge.png", np.zeros((50, 50), np.uint8))
    return root


@pytest.mark.parametrize("side", [40, 50])  # Pillow's warning (over the limit) and its error (over twice it)
def test_header_and_decode_name_the_file_its_pixels_and_the_limit(tmp_path, monkeypatch, side):
    path = _grey(tmp_path / "big.png", np.zeros((side, side), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    for read in (header, read_image):
        with pytest.raises(DataError) as e:
            read(path)
        line = e.value.line()
        assert str(path) in line and f"{side * side:,} pixels" in line and "1,000" in line and "\n" not in line
    monkeypatch.setenv("CNNLAB_MAX_IMAGE_PIXELS", str(side * side))  # the way on the hint names
    assert header(path)[:2] == (side, side)


def _one_error_line(capsys, path: Path) -> str:
    """One line on stderr naming the big image (or its mask, read first by mask discovery)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and "2,500 pixels" in err and "1,000" in err
    assert f"{path.parent.parent}/images/huge.png:" in err or f"{path.parent.parent}/masks/huge.png:" in err
    return err


def test_train_new_and_predict_refuse_a_bomb_in_one_line(tmp_path, monkeypatch, capsys, letterbox_run):
    root = _bomb_set(tmp_path / "data")
    huge = root / "images" / "huge.png"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "bomb", "task": "segmentation", "out": str(tmp_path / "runs"),
        "data": {"format": "folders", "root": str(root), "size": [16, 16], "val": "val",
                 "options": {"split": "random"}},
        "model": {"name": "unet", "params": {"width": 4, "depth": 2}},
        "train": {"epochs": 1, "progress": False}}))
    capsys.readouterr()
    assert main(["train", str(recipe)]) == 2
    _one_error_line(capsys, huge)
    assert not any((tmp_path / "runs").glob("*/best.pt"))
    assert main(["new", "--images", str(root / "images"), "--masks", str(root / "masks"),
                 "--out", str(tmp_path / "n.yaml")]) == 2
    _one_error_line(capsys, huge)
    assert main(["predict", str(letterbox_run), str(huge), "--out", str(tmp_path / "p"), "--device", "cpu"]) == 2
    _one_error_line(capsys, huge)


def test_data_check_lists_the_bomb_as_a_problem_naming_the_file(tmp_path, monkeypatch, capsys):
    root = _bomb_set(tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    rc = main(["data", "check", "folders", "--images", str(root / "images"), "--masks", str(root / "masks")])
    out = capsys.readouterr()
    assert rc == 2 and "Traceback" not in out.err
    problems = [line for line in out.out.splitlines() if "huge.png" in line]
    assert len(problems) == 1 and "2,500 pixels" in problems[0] and "1,000" in problems[0]
