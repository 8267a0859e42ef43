"""Issue 29: the decoded cache treats any damage of an entry as a miss, and deletes only what cnnlab wrote.

Oracles: the split decoded with the cache off (bit for bit), counts of reader calls to tell a hit from a decode."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cnnlab.data import cache
from cnnlab.data.loading import load_split
from conftest import tiny_recipe
from test_data_cache import _age, _cfg, _count_decodes, _endovis, _entry, assert_same_split, filled_entry


@pytest.fixture
def cached(monkeypatch, tmp_path):
    monkeypatch.setattr(cache, "MIN_BYTES", 0)
    monkeypatch.setattr(cache, "RACY_SECONDS", 0.0)
    return tmp_path / "cache"


@contextlib.contextmanager
def _fifo_readers(fifo: Path | None) -> Iterator[list[str]]:
    """Watch a FIFO for a reader while the body runs; yields the list of readers seen (one entry each). A reader
    blocked in open() is seen by a non-blocking open for writing (which fails with ENXIO while nobody reads), then
    released by closing it: the body never hangs and the test needs no time limit."""
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                if e.errno not in (errno.ENXIO, errno.ENOENT):  # nobody reads it; the entry was replaced
                    raise
            else:
                if stat.S_ISFIFO(os.fstat(fd).st_mode):  # not the regular file that replaced it
                    seen.append("reader")
                os.close(fd)
            done.wait(0.001)

    t = threading.Thread(target=watch, daemon=True) if fifo is not None else None
    if t is not None:
        t.start()
    try:
        yield seen
    finally:
        done.set()
        if t is not None:
            t.join()


@pytest.mark.parametrize("damage", ["empty", "empty_meta", "header_only", "fifo", "directory"])
def test_any_damage_of_an_entry_is_a_miss_and_the_entry_is_replaced(tmp_path, cached, monkeypatch, damage):
    """Before: a 0-byte images.npy raised EOFError out of every run (`: > images.npy`), a FIFO blocked forever."""
    cfg, fresh, entry = filled_entry(tmp_path, cached)
    images = entry / "images.npy"
    if damage == "empty":
        images.write_bytes(b"")
    elif damage == "empty_meta":
        (entry / "meta.json").write_bytes(b"")
    elif damage == "header_only":
        images.write_bytes(images.read_bytes()[:128])
    elif damage == "fifo":
        images.unlink()
        os.mkfifo(images)
    else:
        images.unlink()
        images.mkdir()
    calls = _count_decodes(monkeypatch, "endovis")
    with _fifo_readers(images if damage == "fifo" else None) as readers:
        data = load_split(cfg, "train")
    assert readers == [], "the cache opened the FIFO (a read that blocks until someone writes)"
    assert calls[0] == 1
    assert assert_same_split(fresh, data, extra_notes=1) is None
    assert "decoded the files again" in data.notes[-1]
    hit = load_split(cfg, "train")  # replaced: the next load is a hit
    assert calls[0] == 1 and "read from the cache" in hit.notes[-1]


def test_evaluate_reads_past_an_empty_test_entry(tmp_path, cached, monkeypatch):
    """`cnnlab evaluate RUN` decoded the test split through the cache and stopped at EOFError on an empty entry."""
    from cnnlab.cli import main

    root = _endovis(tmp_path)
    _age(root)
    raw = tiny_recipe(root, tmp_path / "runs", train={"epochs": 1, "max_steps_per_epoch": 1},
                      data={"cache_dir": str(cached)})
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    assert main(["train", str(recipe)]) in (0, None)
    (run_dir,) = (tmp_path / "runs").glob("tiny-*")
    assert main(["evaluate", str(run_dir)]) in (0, None)  # evaluate's own entry exists (its key may differ)
    tests = [p for p in cached.iterdir() if p.name.startswith("endovis-test-")]
    assert tests, sorted(p.name for p in cached.iterdir())
    for entry in tests:
        (entry / "images.npy").write_bytes(b"")
    assert main(["evaluate", str(run_dir)]) in (0, None)
    ev = json.loads(sorted(run_dir.glob("evaluate*.json"))[-1].read_text())
    ref = json.loads((run_dir / "summary.json").read_text())
    assert ev["metrics"]["dice_mean"] == pytest.approx(ref["metrics"]["dice_mean"], abs=1e-6)
    assert any((entry / "images.npy").stat().st_size > 0 for entry in tests)  # the entry evaluate read: replaced


def test_pruning_deletes_only_folders_cnnlab_wrote(tmp_path, cached, monkeypatch):
    """A shared data.cache_dir: another tool's folders (one even shaped like an entry whose root is gone, one like
    an old temporary folder) stay; cnnlab's own outdated entry is dropped."""
    root = _endovis(tmp_path)
    _age(root)
    cfg = _cfg("endovis", root, cached)
    load_split(cfg, "train")
    own = _entry(cached)
    assert (own / cache.MARKER).is_file()
    foreign = cached / "someone-elses"
    foreign.mkdir()
    (foreign / "meta.json").write_text(json.dumps({"root": str(tmp_path / "gone"), "format": "endovis"}))
    old_tmp = cached / ".tmp-their-work"
    old_tmp.mkdir()
    os.utime(old_tmp, (1_000_000_000, 1_000_000_000))
    monkeypatch.setattr(cache, "code_digest", lambda: "cnnlab upgraded")
    load_split(cfg, "train")
    names = sorted(p.name for p in cached.iterdir())
    assert "someone-elses" in names and ".tmp-their-work" in names
    assert own.name not in names and len(names) == 3
