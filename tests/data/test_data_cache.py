"""The decoded-image cache (cnnlab.data.cache) and the parallel decode (cnnlab.data.parallel).

Oracles: the same split decoded with the cache off (torch.equal on every array, equal names, classes, notes), the
sequential loop for the parallel decode, and counts of reader calls to tell a cache hit from a decode."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.config import DataConfig, load_recipe
from cnnlab.data import cache, parallel
from cnnlab.data.formats import FORMATS
from cnnlab.data.loading import load_split
from cnnlab.data.synthetic import classification, endovis, glas, voc
from cnnlab.data.types import ClsData, ColorData, SegData
from cnnlab.errors import CnnlabError, DataError

OLD = 1_600_000_000  # an mtime long past (seconds): files set to it are not "changed in the last second"


@pytest.fixture
def cached(monkeypatch, tmp_path):
    """Tiny sets are cached too, and files just written may be (each test sets the mtimes it relies on)."""
    monkeypatch.setattr(cache, "MIN_BYTES", 0)
    monkeypatch.setattr(cache, "RACY_SECONDS", 0.0)
    return tmp_path / "cache"


def _endovis(tmp_path: Path, n_train: int = 6, n_color: int = 3) -> Path:
    return endovis.write(tmp_path / "endovis", seed=0, n_train=n_train, n_val=2, n_test=2, n_color_train=n_color,
                         n_color_val=2, height=24, width=32)


def _folders(tmp_path: Path, n: int = 14) -> Path:
    root = tmp_path / "folders"
    for i in range(n):
        rng = np.random.default_rng(i)
        h, w = 20 + i % 3 * 4, 30 - i % 2 * 6  # mixed sizes: the reader resizes
        for sub, arr in (("images", rng.integers(0, 256, (h, w, 3), dtype=np.uint8)),
                         ("masks", (rng.random((h, w)) > 0.5).astype(np.uint8) * 255)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / sub / f"s{i}.png")
    return root


SETS = {  # format -> (writer, split, data options)
    "endovis": (_endovis, "train", {}),
    "endovis_colorization": (_endovis, "train_cor", {}),
    "imagefolder": (lambda t: classification.write_image_folders(t / "imf", n_train=30, n_test=6, size=12,
                                                                 channels=3), "Train", {}),
}


def _cfg(fmt: str, root: Path, cache_dir: Path | None, **kw) -> DataConfig:
    return DataConfig(format=fmt, root=str(root), cache_dir=str(cache_dir) if cache_dir else None, **kw)


def _arrays(d) -> list[torch.Tensor]:
    second = d.masks if isinstance(d, SegData) else d.labels if isinstance(d, ClsData) else d.targets
    return [d.images, second]


def assert_same_split(a, b, extra_notes: int = 0) -> None:
    """Every array bit for bit, names, classes, the reader's notes (b may carry extra cache notes at the end)."""
    assert type(a) is type(b)
    for x, y in zip(_arrays(a), _arrays(b)):
        assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
    assert a.names == b.names and a.class_names == b.class_names
    assert getattr(a, "ignore_index", None) == getattr(b, "ignore_index", None)
    assert b.notes[:len(b.notes) - extra_notes] == a.notes


def _age(root: Path, t: float = OLD) -> None:
    for dirpath, _, names in os.walk(root):
        for n in names:
            os.utime(os.path.join(dirpath, n), (t, t))


def _count_decodes(monkeypatch, fmt: str) -> list[int]:
    calls = [0]
    reader = FORMATS[fmt]
    real = reader.load

    def counting(*a, **kw):
        calls[0] += 1
        return real(*a, **kw)

    monkeypatch.setattr(reader, "load", counting)
    return calls


# ---------------------------------------------------------------- hits equal decodes
@pytest.mark.parametrize("fmt", list(SETS))
def test_cached_split_equals_the_decoded_split(tmp_path, cached, monkeypatch, fmt):
    writer, split, options = SETS[fmt]
    root = writer(tmp_path)
    fresh = load_split(_cfg(fmt, root, None, cache=False, options=options), split)
    first = load_split(_cfg(fmt, root, cached, options=options), split)   # decodes and writes
    calls = _count_decodes(monkeypatch, fmt)
    hit = load_split(_cfg(fmt, root, cached, options=options), split)
    assert calls[0] == 0, "the second load decoded again instead of reading the cache"
    assert_same_split(fresh, first)
    assert_same_split(fresh, hit, extra_notes=1)
    assert "read from the cache" in hit.notes[-1]
    assert isinstance(hit, (SegData, ClsData, ColorData))


def test_a_hit_is_memory_mapped_copy_on_write(tmp_path, cached):
    """Writing into a cached tensor changes memory only: the file and the next hit keep the decoded values."""
    root = _endovis(tmp_path)
    cfg = _cfg("endovis", root, cached, size=[24, 32])
    fresh = load_split(_cfg("endovis", root, None, cache=False, size=[24, 32]), "train")
    load_split(cfg, "train")
    hit = load_split(cfg, "train")
    hit.images.add_(1)
    hit.masks.zero_()
    again = load_split(cfg, "train")
    assert_same_split(fresh, again, extra_notes=1)
    assert "read from the cache" in again.notes[-1]  # the file was not written through


def test_a_cache_folder_inside_the_data_root_does_not_invalidate_itself(tmp_path, cached, monkeypatch):
    root = _endovis(tmp_path)
    cfg = _cfg("endovis", root, root / ".cache")
    load_split(cfg, "train")
    calls = _count_decodes(monkeypatch, "endovis")
    load_split(cfg, "train")
    assert calls[0] == 0


def test_the_runs_folder_inside_the_data_root_does_not_invalidate_the_entry(tmp_path, cached, monkeypatch):
    """`cnnlab new --images images --masks masks` run in the project folder writes `out: runs` there, so every run
    changed the files under data.root and the next run decoded again (a second run never hit the cache)."""
    root = _folders(tmp_path)
    _age(root)
    outputs = root / "runs"
    opts = {"images": str(root / "images"), "masks": str(root / "masks")}
    cfg = _cfg("folders", root, cached, options=opts)
    load_split(cfg, "train", outputs)                      # the first run: no runs/ yet
    (outputs / "r-1").mkdir(parents=True)                  # what that run leaves behind
    (outputs / "r-1" / "metrics.csv").write_text("epoch\n1\n")
    calls = _count_decodes(monkeypatch, "folders")
    hit = load_split(cfg, "train", outputs)
    assert calls[0] == 0 and any("read from the cache" in n for n in hit.notes)
    load_split(cfg, "train")                               # without naming the outputs folder it is data: a miss
    assert calls[0] == 1


def test_a_folders_recipe_as_new_writes_it_is_keyed_by_its_image_and_mask_folders_only(tmp_path, cached,
                                                                                          monkeypatch):
    """Absolute images/masks folders and a random split (what `cnnlab new` writes): files beside the folders (the
    recipe new wrote into the project folder, a notebook, a log) keep the hit; a changed mask is a miss."""
    root = _folders(tmp_path)
    _age(root)
    opts = {"images": str(root / "images"), "masks": str(root / "masks"), "split": "random"}
    cfg = _cfg("folders", root, cached, options=opts)
    first = load_split(cfg, "train")
    (root / "recipe.yaml").write_text("name: edited\n")
    (root / "notes").mkdir()
    (root / "notes" / "log.txt").write_text("x")
    calls = _count_decodes(monkeypatch, "folders")
    assert_same_split(first, load_split(cfg, "train"), extra_notes=1)
    assert calls[0] == 0
    mask = root / "masks" / "s0.png"
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(mask)
    os.utime(mask, (OLD + 5, OLD + 5))
    load_split(cfg, "train")
    assert calls[0] == 1
    relative = _cfg("folders", root, cached, options={"images": "images", "masks": "masks", "split": "random"})
    load_split(relative, "train")                           # relative folders: the whole root is the key, as before
    (root / "recipe.yaml").write_text("name: edited again\n")
    os.utime(root / "recipe.yaml", (OLD, OLD))
    load_split(relative, "train")
    assert calls[0] == 3


# ---------------------------------------------------------------- invalidation
def _rewrite_mask_same_size(root: Path, value_shift: int) -> Path:
    """Sample 0's mask saved uncompressed (its byte size depends on its pixel count only), other grey levels."""
    path = root / "segmentation" / "train" / "0" / "0_mask.png"
    arr = np.asarray(Image.open(path))
    levels = np.array(sorted(set(range(0, 256, 32))), dtype=np.uint8)
    idx = np.searchsorted(levels, arr)
    Image.fromarray(levels[(idx + value_shift) % len(levels)]).save(path, compress_level=0)
    return path


def test_a_file_rewritten_with_the_same_size_is_decoded_again(tmp_path, cached):
    root = _endovis(tmp_path)
    path = _rewrite_mask_same_size(root, 0)
    _age(root)
    cfg = _cfg("endovis", root, cached)
    before = load_split(cfg, "train")
    size = path.stat().st_size
    _rewrite_mask_same_size(root, 1)
    os.utime(path, (OLD + 60, OLD + 60))
    assert path.stat().st_size == size
    after = load_split(cfg, "train")
    assert_same_split(load_split(_cfg("endovis", root, None, cache=False), "train"), after)
    assert not torch.equal(before.masks[0], after.masks[0])


@pytest.mark.parametrize("change", ["mtime", "size", "added", "removed"])
def test_a_changed_file_invalidates_the_entry(tmp_path, cached, monkeypatch, change):
    root = _endovis(tmp_path)
    _age(root)
    cfg = _cfg("endovis", root, cached)
    load_split(cfg, "train")
    image = root / "segmentation" / "train" / "1" / "1_input.jpg"
    if change == "mtime":
        os.utime(image, (OLD + 5, OLD + 5))
    elif change == "size":
        with open(root / "mapping.json", "a") as f:
            f.write("\n")
    elif change == "added":
        (root / "segmentation" / "train" / "6").mkdir()
        for name in ("6_input.jpg", "6_mask.png"):
            (root / "segmentation" / "train" / "6" / name).write_bytes(
                (root / "segmentation" / "train" / "0" / name.replace("6", "0")).read_bytes())
    else:
        for p in sorted((root / "segmentation" / "train" / "5").iterdir()):
            p.unlink()
        (root / "segmentation" / "train" / "5").rmdir()
    fresh = load_split(_cfg("endovis", root, None, cache=False), "train")
    calls = _count_decodes(monkeypatch, "endovis")
    data = load_split(cfg, "train")
    assert calls[0] == 1
    assert_same_split(fresh, data)
    assert len(data) == {"added": 7, "removed": 5}.get(change, 6)
    assert len(list(cached.iterdir())) == 1  # the entry of the old files was dropped: it can never be read again


@pytest.mark.parametrize("fmt, first, second", [
    ("endovis", {"size": [24, 32]}, {"size": [12, 16]}),
    ("imagefolder", {"options": {"channels": "auto"}}, {"options": {"channels": "1"}}),
    ("endovis_colorization", {"options": {"color_space": "rgb"}}, {"options": {"color_space": "lab"}}),
])
def test_a_changed_setting_is_another_entry(tmp_path, cached, monkeypatch, fmt, first, second):
    writer, split, _ = SETS[fmt]
    root = writer(tmp_path)
    _age(root)
    fresh = load_split(_cfg(fmt, root, None, cache=False, **second), split)
    load_split(_cfg(fmt, root, cached, **first), split)
    calls = _count_decodes(monkeypatch, fmt)
    data = load_split(_cfg(fmt, root, cached, **second), split)
    assert calls[0] == 1
    assert_same_split(fresh, data)
    load_split(_cfg(fmt, root, cached, **first), split)  # both settings stay cached side by side
    assert calls[0] == 1


def test_changed_reader_code_or_library_versions_are_another_entry(tmp_path, cached, monkeypatch):
    """A reader fixed or Pillow upgraded may decode the same file to other pixels: the old entry is not read, and
    it is dropped (no later run can read it)."""
    root = _endovis(tmp_path)
    _age(root)
    cfg = _cfg("endovis", root, cached)
    load_split(cfg, "train")
    monkeypatch.setattr(cache, "code_digest", lambda: "another cnnlab/data or Pillow")
    calls = _count_decodes(monkeypatch, "endovis")
    load_split(cfg, "train")
    assert calls[0] == 1
    assert len(list(cached.iterdir())) == 1


def test_files_changed_in_the_last_second_are_not_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "MIN_BYTES", 0)
    root = _endovis(tmp_path)  # just written
    data = load_split(_cfg("endovis", root, tmp_path / "c"), "train")
    assert any("changed in the last second" in n for n in data.notes)
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_small_splits_are_not_cached(tmp_path):
    root = _endovis(tmp_path)
    _age(root)
    load_split(_cfg("endovis", root, tmp_path / "c"), "train")  # 6 x 24 x 32: far under MIN_BYTES
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


# ---------------------------------------------------------------- damaged entries
def _entry(folder: Path) -> Path:
    (entry,) = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return entry


def filled_entry(tmp_path: Path, cached: Path) -> tuple:
    """An aged EndoVis stand-in whose train split is decoded once with the cache off (the oracle) and once into
    `cached`: its config, the oracle split and the cache entry the second load wrote."""
    root = _endovis(tmp_path)
    _age(root)
    cfg = _cfg("endovis", root, cached)
    fresh = load_split(_cfg("endovis", root, None, cache=False), "train")
    load_split(cfg, "train")
    return cfg, fresh, _entry(cached)


@pytest.mark.parametrize("damage", ["truncated", "flipped", "meta", "missing"])
def test_a_damaged_entry_is_decoded_again_with_a_note(tmp_path, cached, monkeypatch, damage):
    cfg, fresh, entry = filled_entry(tmp_path, cached)
    images = entry / "images.npy"
    raw = images.read_bytes()
    if damage == "truncated":
        images.write_bytes(raw[: len(raw) // 2])
    elif damage == "flipped":  # same size, same header: only the checksum can tell
        images.write_bytes(raw[:-10] + bytes(b ^ 0xFF for b in raw[-10:]))
    elif damage == "meta":
        (entry / "meta.json").write_text('{"key": ')
    else:
        (entry / "masks.npy").unlink()
    calls = _count_decodes(monkeypatch, "endovis")
    data = load_split(cfg, "train")
    assert calls[0] == 1
    assert "unusable" in data.notes[-1] and "decoded the files again" in data.notes[-1]
    assert_same_split(fresh, data, extra_notes=1)
    hit = load_split(cfg, "train")  # the entry was written again
    assert calls[0] == 1
    assert_same_split(fresh, hit, extra_notes=1)


# ---------------------------------------------------------------- switched off
def test_cache_off_reads_and_writes_nothing(tmp_path, cached, monkeypatch):
    root = _endovis(tmp_path)
    _age(root)
    load_split(_cfg("endovis", root, cached), "train")
    before = sorted(p.name for p in cached.iterdir())

    def no_read(*a, **kw):
        raise AssertionError("data.cache: false read the cache")

    monkeypatch.setattr(cache, "read_entry", no_read)
    monkeypatch.setattr(cache, "fingerprint", no_read)
    calls = _count_decodes(monkeypatch, "endovis")
    load_split(_cfg("endovis", root, cached, cache=False), "train")
    load_split(_cfg("endovis", root, tmp_path / "other", cache=False), "train")
    assert calls[0] == 2
    assert sorted(p.name for p in cached.iterdir()) == before and not (tmp_path / "other").exists()


class _Captured(Exception):
    pass


def _capture_train(monkeypatch) -> list:
    import cnnlab.engine.run as run

    seen = []

    def fake_train(recipe, *a, **kw):
        seen.append(recipe)
        raise _Captured

    monkeypatch.setattr(run, "train", fake_train)
    return seen


def test_train_no_cache_flag_turns_the_cache_off(tmp_path, monkeypatch):
    from cnnlab.cli import main
    from cnnlab.config import dump_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: {{root: {tmp_path}}}\n")
    seen = _capture_train(monkeypatch)
    for argv, expected in ((["train", str(recipe)], True), (["train", str(recipe), "--no-cache"], False)):
        with pytest.raises(_Captured):
            main(argv)
        assert seen[-1].data.cache is expected
    run_dir = tmp_path / "run"  # a run killed before its first epoch: resume starts it from config.yaml
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(dump_recipe(load_recipe(recipe)))
    with pytest.raises(_Captured):
        main(["train", "--resume", str(run_dir), "--no-cache"])
    assert seen[-1].data.cache is False


def test_cache_folder_comes_from_the_recipe_then_the_environment_then_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "env"))
    assert cache.cache_root(str(tmp_path / "recipe")) == tmp_path / "recipe"
    assert cache.cache_root(None) == tmp_path / "env"
    monkeypatch.delenv("CNNLAB_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_root(None) == tmp_path / "xdg" / "cnnlab" / "decoded"


def test_recipe_key_cache_false_parses(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {cache: false, cache_dir: /tmp/x}\n")
    r = load_recipe(recipe)
    assert r.data.cache is False and r.data.cache_dir == "/tmp/x"
    with pytest.raises(CnnlabError, match="data.cache"):
        load_recipe(recipe, ["data.cache=maybe"])


# ---------------------------------------------------------------- parallel decode
def test_ordered_map_keeps_order_and_raises_the_first_failure(monkeypatch):
    monkeypatch.setattr(parallel, "usable_cores", lambda: 4)

    def square(i: int) -> int:
        if i in (17, 40):
            raise ValueError(f"item {i}")
        return i * i

    def slow_square(i: int) -> int:  # every 7th item finishes after its successors: order must still hold
        time.sleep(0.01 if i % 7 == 0 else 0)
        return i * i

    assert list(parallel.ordered_map(slow_square, range(50), workers=3)) == [i * i for i in range(50)]
    with pytest.raises(ValueError, match="item 17"):
        list(parallel.ordered_map(square, range(50), workers=3))


def test_threaded_reader_names_the_first_bad_file_in_order(tmp_path, monkeypatch):
    root = _endovis(tmp_path, n_train=20)
    (root / "segmentation" / "train" / "4" / "4_input.jpg").write_bytes(b"not a jpeg")
    (root / "segmentation" / "train" / "15" / "15_mask.png").unlink()
    monkeypatch.setattr(parallel, "usable_cores", lambda: 4)
    monkeypatch.setenv(parallel.THREADS_ENV, "3")
    with pytest.raises(DataError, match=r"4_input\.jpg: not a readable image"):
        load_split(_cfg("endovis", root, None, cache=False), "train")


def test_decode_workers_follow_torch_threads_env_and_cores(monkeypatch):
    monkeypatch.setattr(parallel, "usable_cores", lambda: 4)
    monkeypatch.delenv(parallel.THREADS_ENV, raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    assert parallel.decode_workers() == 3
    monkeypatch.setenv(parallel.THREADS_ENV, "2")
    assert parallel.decode_workers() == 2
    monkeypatch.setenv(parallel.THREADS_ENV, "16")
    assert parallel.decode_workers() == 4  # never more than the usable cores
    assert parallel.decode_workers(1) == 1


PARALLEL_SETS = {  # format -> (writer, split, data settings); more samples than the decode window (3 x 4)
    "endovis": (lambda t: _endovis(t, n_train=20), "train", {"size": [16, 24]}),
    "endovis_colorization": (lambda t: _endovis(t, n_train=2, n_color=14), "train_cor", {"size": [12, 16]}),
    "folders": (_folders, "train", {"size": [16, 16], "options": {"fractions": {"train": 1.0}}}),
    "glas": (lambda t: glas.write(t / "glas", n_train=14, n_test_a=2, n_test_b=2, width=40, height=32),
             "train", {"size": [16, 16]}),
    "voc": (lambda t: voc.write(t / "voc", n_train=14, n_val=2, n_test=2, height=24, width=28), "train",
            {"size": [20, 20]}),
    "imagefolder": (SETS["imagefolder"][0], "Train", {}),
}


@pytest.mark.parametrize("fmt", list(PARALLEL_SETS))
def test_parallel_decode_equals_sequential_decode(tmp_path, monkeypatch, fmt):
    writer, split, settings = PARALLEL_SETS[fmt]
    root = writer(tmp_path)
    cfg = _cfg(fmt, root, None, cache=False, **settings)
    monkeypatch.setattr(parallel, "usable_cores", lambda: 4)
    pools = []

    class CountingPool(parallel.ThreadPoolExecutor):
        def __init__(self, *a, **kw):
            pools.append(a[0] if a else kw.get("max_workers"))
            super().__init__(*a, **kw)

    monkeypatch.setattr(parallel, "ThreadPoolExecutor", CountingPool)
    monkeypatch.setenv(parallel.THREADS_ENV, "1")
    sequential = load_split(cfg, split)
    assert pools == []
    monkeypatch.setenv(parallel.THREADS_ENV, "3")
    threaded = load_split(cfg, split)
    assert pools and set(pools) == {3}
    assert_same_split(sequential, threaded)
    assert len(threaded) >= 13
