"""Classification readers on synthetic files written in each real format: content, layouts, splits, bad input."""
from __future__ import annotations

import gzip
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data.formats import cifar, digits, fashion_mnist, imagefolder, mnist
from cnnlab.data.synthetic import classification as syn
from cnnlab.errors import ConfigError, DataError

SHARED_MNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist_test"


def _raw_idx(path: Path) -> np.ndarray:
    """Independent IDX parse (numpy, no torchvision): header says dims, then the bytes."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


@pytest.fixture(scope="module")
def idx_root(tmp_path_factory) -> Path:
    return syn.write_idx(tmp_path_factory.mktemp("idx"), seed=1, n_train=60, n_test=30)


# ---------------------------------------------------------------- MNIST / Fashion-MNIST IDX

def test_mnist_reads_exactly_the_idx_content(idx_root):
    data = mnist.load(idx_root, "train")
    assert data.images.dtype == torch.uint8 and data.images.shape == (60, 1, 28, 28)
    assert np.array_equal(data.images[:, 0].numpy(), _raw_idx(idx_root / "train-images-idx3-ubyte.gz"))
    assert np.array_equal(data.labels.numpy(), _raw_idx(idx_root / "train-labels-idx1-ubyte.gz"))
    assert data.labels.dtype == torch.int64 and data.class_names == [str(i) for i in range(10)]
    assert mnist.list_splits(idx_root) == ["train", "test"]
    assert len(mnist.load(idx_root, "test")) == 30


def test_mnist_torchvision_layout_and_plain_files_give_the_same_data(tmp_path, idx_root):
    root = syn.write_idx(tmp_path, seed=1, n_train=60, n_test=30, gz=False, layout="torchvision")
    assert (root / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()
    a, b = mnist.load(idx_root, "test"), mnist.load(root, "test")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_synthetic_writer_is_deterministic_and_seed_dependent(tmp_path):
    a = syn.write_idx(tmp_path / "a", seed=3, n_train=20, n_test=10)
    b = syn.write_idx(tmp_path / "b", seed=3, n_train=20, n_test=10)
    c = syn.write_idx(tmp_path / "c", seed=4, n_train=20, n_test=10)
    name = "train-images-idx3-ubyte.gz"
    assert (a / name).read_bytes() == (b / name).read_bytes() != (c / name).read_bytes()


def test_fashion_mnist_uses_clothing_names(idx_root):
    data = fashion_mnist.load(idx_root, "test")
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"
    assert torch.equal(data.labels, mnist.load(idx_root, "test").labels)


def test_resplit_is_seeded_disjoint_and_sized(idx_root):
    spec = {"from": "train", "seed": 5, "train": 40, "test": 15}
    tr, te = mnist.load(idx_root, "train", resplit=spec), mnist.load(idx_root, "test", resplit=spec)
    assert (len(tr), len(te)) == (40, 15)
    assert not set(tr.names) & set(te.names)
    assert set(tr.names) | set(te.names) <= set(mnist.load(idx_root, "train").names)
    again = mnist.load(idx_root, "train", resplit=spec)
    other = mnist.load(idx_root, "train", resplit={**spec, "seed": 6})
    assert again.names == tr.names and other.names != tr.names
    full = mnist.load(idx_root, "train")
    i = full.names.index(tr.names[0])  # samples keep their image and label
    assert torch.equal(full.images[i], tr.images[0]) and full.labels[i] == tr.labels[0]
    assert mnist.list_splits(idx_root, resplit=spec) == ["train", "test"]
    with pytest.raises(DataError, match="asks for 70"):
        mnist.load(idx_root, "train", resplit={"from": "train", "train": 50, "test": 20})


def test_mnist_resize_on_load(idx_root):
    assert mnist.load(idx_root, "test", size=[32, 32]).images.shape == (30, 1, 32, 32)


def test_mnist_wrong_root_says_what_was_expected(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="no MNIST IDX files found.*t10k-images-idx3-ubyte"):
        mnist.load(tmp_path, "train")
    with pytest.raises(DataError, match="folder not found"):
        mnist.load(tmp_path / "missing", "train")


@pytest.mark.parametrize("how", ["truncated_gz", "truncated_plain", "garbage"])
def test_mnist_corrupt_file_is_one_line_naming_it(tmp_path, how):
    root = syn.write_idx(tmp_path, seed=0, n_train=20, n_test=10, gz=how != "truncated_plain")
    name = "train-images-idx3-ubyte" + ("" if how == "truncated_plain" else ".gz")
    path = root / name
    blob = path.read_bytes()
    if how == "truncated_gz":
        path.write_bytes(blob[: len(blob) // 2])
    elif how == "truncated_plain":
        path.write_bytes(blob[: 16 + 28 * 28 * 3])  # header promises 20 images, 3 are there
    else:
        path.write_bytes(b"\x1f\x8b" + os.urandom(200))
    with pytest.raises(DataError) as err:
        mnist.load(root, "train")
    assert name in str(err.value) and "\n" not in str(err.value)


def test_mnist_label_count_mismatch_and_half_split(tmp_path):
    root = syn.write_idx(tmp_path, seed=0, n_train=20, n_test=10, gz=False)
    shutil.copy(root / "t10k-labels-idx1-ubyte", root / "train-labels-idx1-ubyte")
    with pytest.raises(DataError, match="10 labels for 20 images"):
        mnist.load(root, "train")
    (root / "train-images-idx3-ubyte").unlink()
    assert mnist.list_splits(root) == ["test"]
    with pytest.raises(DataError, match="incomplete.*train-images-idx3-ubyte"):
        mnist.load(root, "train")
    assert "train: incomplete" in mnist.check(root)


def test_unknown_reader_option_names_the_key(idx_root):
    with pytest.raises(ConfigError, match="data.options.resplt.*resplit"):
        mnist.load(idx_root, "train", resplt={})


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="shared MNIST test set not present")
def test_real_mnist_test_set_counts_and_seeded_split():
    full = mnist.load(SHARED_MNIST, "test")
    # Class counts from the data set's documentation (PROVENANCE.txt).
    expected = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert torch.bincount(full.labels, minlength=10).tolist() == expected
    spec = {"from": "test", "seed": 0, "train": 8000, "test": 2000}
    tr, te = mnist.load(SHARED_MNIST, "train", resplit=spec), mnist.load(SHARED_MNIST, "test", resplit=spec)
    assert (len(tr), len(te)) == (8000, 2000) and not set(tr.names) & set(te.names)


# ---------------------------------------------------------------- CIFAR-100 pickles

@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    return syn.write_cifar100(tmp_path_factory.mktemp("cifar"), seed=2, n_train=120, n_test=40)


def test_cifar_fine_and_coarse_labels_match_the_pickle(cifar_root):
    with open(cifar_root / "cifar-100-python" / "train", "rb") as f:
        raw = pickle.load(f, encoding="latin1")  # our own synthetic file: trusted oracle
    fine = cifar.load(cifar_root, "train")
    coarse = cifar.load(cifar_root / "cifar-100-python", "train", labels="coarse")
    assert fine.images.shape == (120, 3, 32, 32) and fine.images.dtype == torch.uint8
    # Row layout: 1024 red, then 1024 green, then 1024 blue values.
    assert fine.images[7, 1, 2, 3] == raw["data"][7, 1024 + 2 * 32 + 3]
    assert fine.labels.tolist() == raw["fine_labels"] and coarse.labels.tolist() == raw["coarse_labels"]
    assert len(fine.class_names) == 100 and len(coarse.class_names) == 20
    assert fine.names[0] == raw["filenames"][0]
    assert cifar.list_splits(cifar_root) == ["train", "test"]


def test_cifar_corrupt_pickle_names_the_file(tmp_path):
    root = syn.write_cifar100(tmp_path, seed=0, n_train=20, n_test=10)
    path = root / "cifar-100-python" / "test"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match=r"cifar-100-python/test: truncated or corrupt"):
        cifar.load(root, "test")


class _Evil:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_cifar_pickle_that_would_run_code_is_refused(tmp_path):
    root = syn.write_cifar100(tmp_path, seed=0, n_train=20, n_test=10)
    marker = tmp_path / "pwned"
    (root / "cifar-100-python" / "train").write_bytes(pickle.dumps({"data": _Evil(str(marker))}))
    with pytest.raises(DataError, match="refused"):
        cifar.load(root, "train")
    assert not marker.exists()


def test_cifar_wrong_root_and_missing_meta(tmp_path):
    with pytest.raises(DataError, match="no CIFAR-100 pickles found.*cifar-100-python/train"):
        cifar.load(tmp_path, "train")
    root = syn.write_cifar100(tmp_path / "c", seed=0, n_train=20, n_test=10)
    (root / "cifar-100-python" / "meta").unlink()
    with pytest.raises(DataError, match="meta: not found"):
        cifar.load(root, "train")


# ---------------------------------------------------------------- image folders (course PNG layout)

@pytest.fixture()
def png_root(tmp_path) -> Path:
    return syn.write_image_folders(tmp_path / "png", seed=0, n_train=30, n_test=20, size=16)


def test_imagefolder_reads_course_layout(png_root):
    data = imagefolder.load(png_root, "train")  # finds Train/ case-insensitively
    assert data.images.shape == (30, 1, 16, 16) and data.class_names == [str(i) for i in range(10)]
    for k in (0, 17):
        path = png_root / data.names[k]
        assert int(path.parent.name) == int(data.labels[k])
        assert np.array_equal(np.asarray(Image.open(path)), data.images[k, 0].numpy())
    assert imagefolder.list_splits(png_root) == ["Test", "Train"]


def test_imagefolder_skips_junk_and_keeps_label_numbering(png_root):
    (png_root / "Train" / "3" / ".DS_Store").write_bytes(b"\0")
    (png_root / "Train" / "3" / "._00001.png").write_bytes(b"\0")
    (png_root / "Train" / "3" / "readme.txt").write_text("x")
    (png_root / "__MACOSX" / "Train" / "3").mkdir(parents=True)  # zip litter: neither a split nor a class
    shutil.rmtree(png_root / "Test" / "3")
    train, test = imagefolder.load(png_root, "Train"), imagefolder.load(png_root, "Test")
    assert len(train) == 30 and any("skipped 2 junk and 1 non-image" in n for n in train.notes)
    assert test.class_names == train.class_names  # class 4 is still label 4 without a Test/3 folder
    assert all(int((png_root / n).parent.name) == int(lab) for n, lab in zip(test.names, test.labels))
    assert any("no folder for class(es) 3" in n for n in test.notes)
    assert imagefolder.list_splits(png_root) == ["Test", "Train"]


def test_imagefolder_natural_class_order(tmp_path):
    for c in range(12):
        (tmp_path / "train" / str(c)).mkdir(parents=True)
        Image.fromarray(np.full((4, 4), c, np.uint8)).save(tmp_path / "train" / str(c) / "a.png")
    data = imagefolder.load(tmp_path, "train")
    assert data.class_names == [str(i) for i in range(12)]
    assert data.images[:, 0, 0, 0].tolist() == data.labels.tolist()


def test_imagefolder_corrupt_png_and_mixed_sizes(png_root):
    victim = sorted((png_root / "Test" / "5").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:60])
    with pytest.raises(DataError, match=f"{victim.name}: cannot decode image"):
        imagefolder.load(png_root, "Test")
    odd = sorted((png_root / "Train" / "2").iterdir())[0]
    Image.fromarray(np.zeros((20, 16), np.uint8)).save(odd)
    with pytest.raises(DataError, match=f"{odd.name}: image is 20x16.*data.size"):
        imagefolder.load(png_root, "Train")
    assert imagefolder.load(png_root, "Train", size=[16, 16]).images.shape == (30, 1, 16, 16)


def test_imagefolder_colour_and_channels_option(tmp_path):
    root = syn.write_image_folders(tmp_path, seed=0, n_train=10, n_test=10, size=8, channels=3)
    rgb = imagefolder.load(root, "Train")
    assert rgb.images.shape == (10, 3, 8, 8)
    grey = imagefolder.load(root, "Train", channels=1)
    expect = np.asarray(Image.open(root / grey.names[0]).convert("L"))
    assert np.array_equal(grey.images[0, 0].numpy(), expect)


def test_imagefolder_wrong_root(tmp_path):
    (tmp_path / "flat").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match="no split/class folders found.*Train/, Test/"):
        imagefolder.load(tmp_path / "flat", "train")
    with pytest.raises(DataError, match="no split folder 'val'"):
        imagefolder.load(syn.write_image_folders(tmp_path / "ok", n_train=10, n_test=10, size=8), "val")


def test_imagefolder_reads_a_root_of_class_folders_as_its_one_split(png_root, capsys):
    """torchvision's ImageFolder layout (root/<class>/<image>): the split '.', its own classes only, carved by a
    resplit; `cnnlab data check imagefolder` reads it too."""
    flat = png_root / "Train"
    assert imagefolder.is_flat(flat) and not imagefolder.is_flat(png_root)
    (png_root / "Train" / "3" / "thumbnails").mkdir()  # a folder inside a class folder: still class folders
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(png_root / "Train" / "3" / "thumbnails" / "t.png")
    assert imagefolder.is_flat(flat) and not imagefolder.is_flat(png_root)
    assert imagefolder.list_splits(flat) == ["."]
    whole = imagefolder.load(flat, ".")
    by_split = imagefolder.load(png_root, "Train")
    assert whole.class_names == by_split.class_names and torch.equal(whole.images, by_split.images)
    assert torch.equal(whole.labels, by_split.labels) and whole.names == [n.split("/", 1)[1] for n in by_split.names]
    spec = {"from": ".", "seed": 0, "train": 20, "val": 5, "test": 5}
    parts = [imagefolder.load(flat, s, resplit=spec) for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [20, 5, 5] and len({n for p in parts for n in p.names}) == 30
    assert "split 'val' = 5 samples drawn (seed 0) from the class folders under the root" in parts[1].notes
    from cnnlab.cli import main
    assert main(["data", "check", "imagefolder", str(flat)]) == 0
    assert "all (one folder per class, no split folders): 30 images" in capsys.readouterr().out


# ---------------------------------------------------------------- scikit-learn digits

def test_digits_split_is_stratified_disjoint_and_scaled():
    from sklearn.datasets import load_digits

    train, test = digits.load(None, "train"), digits.load(None, "test")
    assert len(train) + len(test) == 1797 and not set(train.names) & set(test.names)
    assert train.images.shape[1:] == (1, 8, 8) and train.images.dtype == torch.uint8
    ref = load_digits()
    i = int(train.names[5].split("-")[1])
    assert np.array_equal(train.images[5, 0].numpy(), np.rint(ref.images[i] * 255 / 16).astype(np.uint8))
    assert train.labels[5] == ref.target[i]
    shares = torch.bincount(test.labels, minlength=10).float() / len(test)
    assert shares.min() > 0.09 and shares.max() < 0.11  # stratified: ~10% each
    assert digits.load(None, "train", seed=1).names != train.names


def test_imagefolder_check_of_mixed_sizes_reports_them_instead_of_failing(tmp_path):
    """`cnnlab data check imagefolder` on class folders of photographs (every image its own size) stopped at the
    second image with "set data.size" (no such option in a check). It shows them at the median size and says
    that training resizes to data.size, naming the command that chooses it."""
    for c, sizes in (("a", [(20, 30), (24, 30), (28, 36)]), ("b", [(20, 30), (30, 40)])):
        for i, (h, w) in enumerate(sizes):
            (tmp_path / c).mkdir(exist_ok=True)
            Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(tmp_path / c / f"{i}.png")
    text = imagefolder.check(tmp_path)
    assert "5 images 3x24x30" in text  # median height of 20, 20, 24, 28, 30 and median width of 30, 30, 30, 36, 40
    assert (f"4 distinct image sizes (HxW 20..30 x 30..40); shown at the median 24x30: training resizes to data.size "
            f"[H, W], which cnnlab new --task classification --images {tmp_path} --out recipe.yaml chooses") in text
    with pytest.raises(DataError, match="set data.size"):
        imagefolder.load(tmp_path, ".")  # training without a size still refuses, naming the key


def test_stratified_resplit_keeps_every_class_within_one_image_of_its_share(tmp_path):
    """A seeded shuffle of imbalanced class folders (92 / 5 / 3 images) leaves a rare class out of a 15-image test
    split for some seeds, or puts twice its share there. With `stratify: true` (what `cnnlab new` writes) each
    carved split holds every class within one image of count x share, for every seed; splits stay disjoint."""
    for c, n in (("normal", 92), ("rare", 5), ("rarer", 3)):
        (tmp_path / c).mkdir()
        for i in range(n):
            Image.fromarray(np.full((4, 4), i % 250, np.uint8)).save(tmp_path / c / f"{i}.png")
    sizes = {"train": 70, "val": 15, "test": 15}
    worst = {True: 0.0, False: 0.0}
    for seed in range(6):
        for stratify in (True, False):
            spec = {"from": ".", "seed": seed, "stratify": stratify, **sizes}
            parts = {s: imagefolder.load(tmp_path, s, resplit=spec) for s in sizes}
            assert len({n for d in parts.values() for n in d.names}) == 100  # disjoint, all used
            for s, d in parts.items():
                counts = torch.bincount(d.labels, minlength=3).tolist()
                expected = [sizes[s] * n / 100 for n in (92, 5, 3)]
                worst[stratify] = max(worst[stratify], *(abs(a - e) for a, e in zip(counts, expected)))
            if stratify:
                assert "stratified by class" in parts["test"].notes[-1]
    assert worst[True] < 1.0
    assert worst[False] >= 1.5  # the plain shuffle is what the stratified order is against
    assert imagefolder.list_splits(tmp_path, resplit={"from": ".", "stratify": True, **sizes}) == list(sizes)


def test_resplit_stratify_must_be_a_boolean(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(4):
            Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / c / f"{i}.png")
    with pytest.raises(DataError, match="resplit stratify must be true or false, got 'yes'"):
        imagefolder.load(tmp_path, "train", resplit={"from": ".", "stratify": "yes", "train": 6, "test": 2})
