"""Fuzzing: arbitrary bytes and values give cnnlab's own error type or a valid result, never another exception."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnlab.config import recipe_from_dict
from cnnlab.data.formats import FORMATS
from cnnlab.errors import CnnlabError

FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.floats(allow_nan=True), st.text(max_size=8),
                    st.lists(st.integers(-3, 300), max_size=3))
keys = st.sampled_from(["name", "task", "data", "model", "loss", "optim", "train", "augment", "out", "bogus",
                        "epochs", "lr", "size", "params", "format", "batch_size", "label_fraction"])
configs = st.one_of(scalars, st.dictionaries(keys, scalars, max_size=4),
                    st.dictionaries(keys, st.dictionaries(keys, scalars, max_size=3), max_size=3))


@FUZZ
@given(raw=st.dictionaries(keys, configs, max_size=5))
def test_config_parser(raw):
    try:
        recipe_from_dict(raw)
    except CnnlabError:
        pass


@FUZZ
@given(overrides=st.lists(st.text(max_size=20), max_size=3))
def test_overrides(overrides):
    try:
        recipe_from_dict({}, overrides)
    except CnnlabError:
        pass


def _fuzz_file(tmp_root: Path, rel: str, payload: bytes, fmt: str, split: str, **options) -> None:
    work = Path(tempfile.mkdtemp(dir=tmp_root))
    try:
        root = Path(shutil.copytree(tmp_root / "base", work / "d"))
        (root / rel).write_bytes(payload)
        FORMATS[fmt].load(root, split, **options)
    except CnnlabError:
        pass
    finally:
        shutil.rmtree(work)


@pytest.fixture(scope="module")
def fuzz_roots(tmp_path_factory):
    """One tiny copy of each format whose files get replaced by random bytes."""
    from cnnlab.data.synthetic import SYNTHETIC, endovis

    base = tmp_path_factory.mktemp("fuzz")
    roots = {}
    for fmt, write in {"endovis": lambda o: endovis.write(o, n_train=2, n_val=1, n_test=1, n_color_train=1,
                                                          n_color_val=1, height=16, width=16),
                       "mnist": lambda o: SYNTHETIC["mnist"](o, n_train=20, n_test=10),
                       "voc": lambda o: SYNTHETIC["voc"](o, n_train=3, n_val=2, n_test=2, height=24, width=24),
                       "glas": lambda o: SYNTHETIC["glas"](o, n_train=3, n_test_a=2, n_test_b=2, width=48, height=40),
                       "cifar100": lambda o: SYNTHETIC["cifar100"](o, n_train=20, n_test=10),
                       "imagefolder": lambda o: SYNTHETIC["imagefolder"](o, n_train=10, n_test=5)}.items():
        d = base / fmt
        d.mkdir()
        write(d / "base")
        roots[fmt] = d
    return roots


payloads = st.one_of(st.binary(max_size=300), st.just(b""), st.binary(min_size=1, max_size=40).map(
    lambda b: b"\x89PNG\r\n\x1a\n" + b), st.binary(max_size=60).map(lambda b: b"\xff\xd8\xff\xe0" + b))


@FUZZ
@given(payload=payloads, case=st.sampled_from([
    ("endovis", "mapping.json", "train"), ("endovis", "segmentation/train/0/0_input.jpg", "train"),
    ("endovis", "segmentation/train/1/1_mask.png", "train"),
    ("endovis_colorization", "colorization/train_cor/0/0_input.jpg", "train_cor"),
    ("endovis_colorization", "colorization/train_cor/0/0_gray.jpg", "train_cor")]))
def test_endovis_readers(fuzz_roots, payload, case):
    fmt, which, split = case
    _fuzz_file(fuzz_roots["endovis"], which, payload, fmt, split)


def _first(root: Path, pattern: str) -> str:
    return str(next(iter(sorted((root / "base").rglob(pattern)))).relative_to(root / "base"))


@settings(FUZZ, max_examples=40)
@given(payload=payloads, data=st.data())
def test_other_readers(fuzz_roots, payload, data):
    fmt, pattern, split = data.draw(st.sampled_from([
        ("mnist", "*labels*", "train"), ("mnist", "*images*", "test"), ("voc", "*.png", "train"),
        ("voc", "train.txt", "train"), ("glas", "*.bmp", "train"), ("cifar100", "train", "train"),
        ("imagefolder", "*.png", "train")]))
    _fuzz_file(fuzz_roots[fmt], _first(fuzz_roots[fmt], pattern), payload, fmt, split)


@settings(FUZZ, max_examples=30)
@given(payload=payloads, which=st.sampled_from(["images", "masks"]))
def test_folders_reader(tmp_path_factory, payload, which):
    """Image/mask folders with one file replaced by arbitrary bytes."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("folders")
    for sub in ("images", "masks"):
        (root / sub).mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray((rng.random((16, 16)) > 0.5).astype(np.uint8) * 255).save(root / "masks" / f"{i}.png")
    (root / which / "0.png").write_bytes(payload)
    try:
        FORMATS["folders"].load(root, "train", images="images", masks="masks", split="random")
    except CnnlabError:
        pass
