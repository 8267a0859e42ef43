"""Decoded splits kept on disk, so that the second run on the same data skips decoding.

What is stored: a split exactly as its reader returned it (uint8 images at the training size, masks, labels or
colour targets, names, classes, notes), one `.npy` per array plus `meta.json`, in one folder per entry under the
cache folder; each split type says which of its tensors are arrays and what else it keeps (data/types.py).
Loading maps the arrays into memory (`np.load(mmap_mode="c")`): pages are read on first touch and shared with
the OS page cache; copy-on-write, so a tensor written in place (nothing in training does: batches are gathered
copies) changes memory, never the file.

Keyed by (any change is a different entry, so a stale one is never read):
  - the files: every file under data.root (and under reader options naming folders outside it) with its size,
    mtime and ctime, in order (a renamed, added, removed, rewritten or touched file changes the key);
  - every setting that changes the pixels: format, resolved root, split, data.size, data.options;
  - the code and libraries that decode: a digest of cnnlab/data's source files, the versions of Pillow, numpy,
    torch, torchvision and scikit-image, and CACHE_FORMAT (the layout of an entry).

Written atomically: arrays and meta.json into a temporary folder beside the entry, each fsynced, then one
rename. Read defensively: meta.json must name the same key, each array its recorded shape, dtype, file size and
CRC-32, and every file must be a regular file (a FIFO would block the read); anything else (a truncated, empty or
damaged file, whatever the damage) is a note and the split is decoded again, and the entry replaced, never an error
or wrong data. One limit: a hit is memory-mapped, so a cache file truncated in place while a run is using it kills
that run with SIGBUS (the kernel's rule for mapped files; cnnlab itself never truncates an entry, it writes new
ones beside and renames); the next run decodes again. Not cached: splits under MIN_BYTES (decoding them is quicker
than the files), formats that are not folders of image files, files changed in the last RACY_SECONDS (a rewrite
within the file system's timestamp tick would keep its mtime), and a write that would leave the disk under
FREE_MARGIN bytes.

Where: data.cache_dir, else $CNNLAB_CACHE_DIR, else $XDG_CACHE_HOME/cnnlab/decoded (~/.cache/cnnlab/decoded).
Off: data.cache: false, or `cnnlab train --no-cache` (reads and writes nothing). To reclaim space, delete the
folder; each write also drops entries whose data root is gone, and entries of the same format, root and split
whose files, cnnlab code or libraries have changed since. Only folders holding cnnlab's marker file (MARKER,
written first into every entry) are ever deleted: a shared data.cache_dir may hold other folders.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
import zlib
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from cnnlab.data.types import SPLIT_TYPES, Split
from cnnlab.interrupts import protected

CACHE_FORMAT = 1
CACHE_DIR_ENV = "CNNLAB_CACHE_DIR"
# Readers that decode one image file per sample; the others read a few binary files (MNIST, CIFAR) or nothing
# from disk (digits), which is as fast as reading a cache.
CACHED_FORMATS = frozenset({"endovis", "endovis_colorization", "glas", "folders", "voc", "imagefolder"})
MIN_BYTES = 1 << 20          # smaller splits decode in a fraction of a second
RACY_SECONDS = 1.0           # files changed this recently are not cached (see the module docstring)
FREE_MARGIN = 2 << 30        # never fill the disk that checkpoints go to
MAX_FILES = 200_000          # a data.root this large (a home folder by mistake?) is not fingerprinted
STALE_TMP_SECONDS = 3600     # temporary folders of writes cut short are removed after an hour
LIBRARIES = ("pillow", "numpy", "torch", "torchvision", "scikit-image")
KINDS: dict[str, type] = {t.cache_kind: t for t in SPLIT_TYPES}  # meta.json's "kind" -> split type
MARKER = "cnnlab-cache-entry"  # in every entry and temporary folder cnnlab writes: the only ones it deletes


class _Unusable(Exception):
    """An entry that must not be used; the message says why (it becomes a note)."""


def cache_root(configured: str | None = None) -> Path:
    """The cache folder: data.cache_dir, else $CNNLAB_CACHE_DIR, else the user's cache folder."""
    chosen = configured or os.environ.get(CACHE_DIR_ENV)
    if chosen:
        return Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "cnnlab" / "decoded"


def load_or_decode(fmt: str, root: Path, split: str, size: list[int] | None, options: dict,
                   decode: Callable[[], Split], enabled: bool = True, cache_dir: str | None = None,
                   skip: Sequence[Path] = (), reads: Sequence[Path] | None = None) -> Split:
    """The split from the cache when an entry for exactly these files and settings is intact, else `decode()`
    (then stored for the next run). Every cache problem becomes a note on the split, never an error. skip: folders
    under the data root that hold no data (the runs' output folder); reads: the files and folders the reader reads,
    where it can name them (fingerprinted instead of the whole root)."""
    if not enabled or fmt not in CACHED_FORMATS:
        return decode()
    try:
        folder = cache_root(cache_dir)
    except RuntimeError:  # no home folder to put it in (Path.home() fails without HOME or a passwd entry)
        data = decode()
        data.notes.append(f"decoded-image cache not used: no home folder; set data.cache_dir or {CACHE_DIR_ENV}")
        return data
    files = fingerprint(Path(root), options, [folder, *skip], reads)
    if files is None:
        data = decode()
        data.notes.append(f"decoded-image cache not used: over {MAX_FILES:,} files under {root} to check")
        return data
    key = entry_key(fmt, Path(root), split, size, options, files[0])
    entry = folder / f"{_safe(fmt)}-{_safe(split)}-{key[:24]}"
    notes: list[str] = []
    if (entry / "meta.json").is_file():
        try:
            data = read_entry(entry, key)
            data.notes.append(f"{split}: decoded arrays read from the cache {entry} (`cnnlab train --no-cache` or "
                              "data.cache: false decodes the files again)")
            return data
        except _Unusable as e:
            notes.append(f"decoded-image cache entry {entry} unusable ({e}): decoded the files again")
    data = decode()
    note = _store(folder, entry, key, data, fmt, Path(root), split, files)  # the reader's notes only
    data.notes.extend(notes + ([note] if note else []))
    return data


def _safe(text: str) -> str:
    """A split or format name as part of a folder name."""
    return "".join(c if c.isalnum() or c in "_.=" else "_" for c in str(text))[:40] or "_"


def _walk(base: str, rel: str, seen: set[tuple[int, int]], out: list[str]) -> bool:
    """Append 'relative path, size, mtime, ctime' for every file under base (links followed, cycles and the cache
    folder not); False when over MAX_FILES. Paths are relative so that the key does not depend on how data.root
    was written; os.scandir because a walk of the course data took 0.6 s with os.walk and relpath."""
    try:
        entries = sorted(os.scandir(base), key=lambda e: e.name)
    except OSError as e:
        out.append(f"{rel}\tunreadable {e.errno}")
        return True
    for e in entries:
        try:
            st = e.stat()
        except OSError:  # a dangling link: its presence still counts
            out.append(f"{rel}{e.name}\tmissing")
            continue
        if e.is_dir():
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            out.append(f"{rel}{e.name}/")  # an empty sample folder counts too
            if not _walk(e.path, f"{rel}{e.name}/", seen, out):
                return False
        else:
            out.append(f"{rel}{e.name}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ctime_ns}")
    return len(out) <= MAX_FILES


def _option_paths(root: Path, options: dict) -> list[Path]:
    """Folders and files named by reader options outside data.root (the folders reader's images/masks/fov/
    split_file may be absolute or '../x'); those under root are walked with it."""
    found = []
    real_root = root.resolve()
    for value in options.values():
        if not isinstance(value, str) or not value:
            continue
        p = Path(value).expanduser()
        p = (p if p.is_absolute() else root / p)
        if p.exists() and real_root not in p.resolve().parents and p.resolve() != real_root:
            found.append(p)
    return found


def fingerprint(root: Path, options: dict, skip: Sequence[Path] = (),
                reads: Sequence[Path] | None = None) -> tuple[str, int] | None:
    """(digest of every file's path, size, mtime and ctime, newest of those times in ns), or None when there are
    more than MAX_FILES files. skip: folders inside the data that are not data (the cache folder; the runs' output
    folder, which every run changes: `cnnlab new` run in the folder holding images/ and masks/ puts runs/ there).
    reads: what the reader reads, where it can say (walked instead of the root and the option paths)."""
    lines: list[str] = []
    seen: set[tuple[int, int]] = set()
    for folder in skip:
        if folder.is_dir():  # counted as seen: the walk neither lists nor enters it
            st = folder.stat()
            seen.add((st.st_dev, st.st_ino))
    bases = list(reads) if reads is not None else [root, *_option_paths(root, options)]
    for tag, base in enumerate(bases):
        if base.is_file():
            st = base.stat()
            lines.append(f"{tag}:\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ctime_ns}")
        elif not _walk(str(base), f"{tag}:", seen, lines):
            return None
    newest = max((int(t) for line in lines for t in line.split("\t")[2:] if t.isdigit()), default=0)
    return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest(), newest


@lru_cache(maxsize=1)
def code_digest() -> str:
    """Digest of cnnlab/data's source and of the decoding libraries' versions: a reader fixed or a library
    upgraded may decode the same file to other pixels."""
    h = hashlib.sha256()
    base = Path(__file__).resolve().parent
    for path in sorted(base.rglob("*.py")):
        h.update(str(path.relative_to(base)).encode() + b"\0" + path.read_bytes() + b"\0")
    for lib in LIBRARIES:
        try:
            h.update(f"{lib}={metadata.version(lib)}\n".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{lib}=none\n".encode())
    return h.hexdigest()


def entry_key(fmt: str, root: Path, split: str, size: list[int] | None, options: dict, files: str) -> str:
    """The key of one split: files, settings that change the pixels, code and libraries (see the docstring)."""
    parts = {"cache_format": CACHE_FORMAT, "format": fmt, "root": str(Path(root).expanduser().resolve()),
             "split": split, "size": list(size) if size is not None else None, "options": options,
             "files": files, "code": code_digest()}
    text = json.dumps(parts, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def read_entry(entry: Path, key: str) -> Split:
    """The split stored in entry, checked against key, shapes, dtypes, file sizes and checksums."""
    try:
        meta = json.loads(_regular(entry / "meta.json").read_text())
        if meta.get("key") != key or meta.get("cache_format") != CACHE_FORMAT:
            raise _Unusable("written for other files or settings")
        kind = KINDS[meta["kind"]]
        arrays = {name: _read_array(entry / f"{name}.npy", meta["arrays"][name]) for name in kind.cache_arrays}
        n = len(meta["names"])
        if any(a.shape[0] != n for a in arrays.values()):
            raise _Unusable("arrays and names disagree on the number of samples")
        tensors = {name: torch.from_numpy(a) for name, a in arrays.items()}
        return kind.from_cache(tensors, meta["names"], meta["fields"], list(meta["notes"]))
    except _Unusable:
        raise
    except Exception as e:  # noqa: BLE001 (any damage is a miss: EOFError of an empty .npy, a bad header, ...)
        raise _Unusable(f"{type(e).__name__}: {str(e)[:80]}") from None


def _regular(path: Path) -> Path:
    """path, refused unless a non-empty regular file: a FIFO would block the read, an empty file is damage."""
    st = path.stat()
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        raise _Unusable(f"{path.name} is {'empty' if stat.S_ISREG(st.st_mode) else 'not a regular file'}")
    return path


def _read_array(path: Path, spec: dict) -> np.ndarray:
    """One memory-mapped array (copy-on-write), refused unless shape, dtype, size on disk and CRC-32 match."""
    arr = np.load(_regular(path), mmap_mode="c", allow_pickle=False)
    if list(arr.shape) != list(spec["shape"]) or str(arr.dtype) != spec["dtype"]:
        raise _Unusable(f"{path.name} holds {arr.dtype} {list(arr.shape)}, expected {spec['dtype']} {spec['shape']}")
    if path.stat().st_size != arr.offset + arr.nbytes:
        raise _Unusable(f"{path.name} has {path.stat().st_size} bytes, expected {arr.offset + arr.nbytes}")
    if zlib.crc32(arr) != spec["crc32"]:
        raise _Unusable(f"{path.name} fails its checksum")
    return np.asarray(arr)  # a plain ndarray view; the map stays open while a tensor uses it


def _arrays(data: Split) -> dict[str, np.ndarray]:
    return {name: np.ascontiguousarray(getattr(data, name).numpy()) for name in data.cache_arrays}


def _store(folder: Path, entry: Path, key: str, data: Split, fmt: str, root: Path, split: str,
           files: tuple[str, int]) -> str | None:
    """Write the entry unless it is not worth it or not safe (see the docstring); a note when it could not be."""
    arrays = _arrays(data)
    nbytes = sum(a.nbytes for a in arrays.values())
    if nbytes < MIN_BYTES:
        return None
    if files[1] > time.time_ns() - RACY_SECONDS * 1e9:
        return f"decoded-image cache not written: files under {root} changed in the last second"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if shutil.disk_usage(folder).free < nbytes + FREE_MARGIN:
            return f"decoded-image cache not written: {folder} would have under {FREE_MARGIN >> 30} GiB free"
        meta = {"cache_format": CACHE_FORMAT, "key": key, "format": fmt, "root": str(root.expanduser().resolve()),
                "split": split, "files": files[0], "code": code_digest(), "kind": data.cache_kind,
                "names": list(data.names), "notes": list(data.notes), "fields": data.cache_fields(),
                "written": time.strftime("%Y-%m-%d %H:%M:%S")}
        with protected():  # Ctrl-C or SIGTERM waits for the entry's rename: no temporary folder is left
            _write_atomically(folder, entry, arrays, meta)
    except OSError as e:
        return f"decoded-image cache not written to {folder} ({e.strerror or e}); set data.cache_dir or {CACHE_DIR_ENV}"
    _prune(folder, entry, meta)
    return None


def _fsync_write(path: Path, write: Callable) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _write_atomically(folder: Path, entry: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Arrays and meta.json into a temporary folder, fsynced, then renamed to the entry in one step."""
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name}-", dir=folder))
    try:
        (tmp / MARKER).write_bytes(b"")
        meta["arrays"] = {}
        for name, arr in arrays.items():
            _fsync_write(tmp / f"{name}.npy", lambda f, a=arr: np.save(f, a, allow_pickle=False))
            meta["arrays"][name] = {"shape": list(arr.shape), "dtype": str(arr.dtype), "crc32": zlib.crc32(arr)}
        _fsync_write(tmp / "meta.json", lambda f: f.write(json.dumps(meta, indent=1).encode()))
        if entry.is_symlink() or entry.exists() and not entry.is_dir():  # not cnnlab's: a link, a FIFO, a file
            entry.unlink()
        elif entry.exists():  # an unusable entry under this key (its name is this key's)
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.rename(tmp, entry)
        except OSError:
            if not (entry / "meta.json").is_file():  # not a concurrent writer of the same data having won
                raise
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _prune(folder: Path, entry: Path, meta: dict) -> None:
    """Drop entries that can never be read again: same format/root/split made from files or by cnnlab code or
    libraries since changed, or a data root that is gone; and temporary folders of writes cut short."""
    now = time.time()
    for other in folder.iterdir():
        try:
            if other.is_symlink() or not (other / MARKER).is_file():  # not written by cnnlab: never deleted
                continue
            if other.name.startswith(".tmp-"):
                if now - other.stat().st_mtime > STALE_TMP_SECONDS:
                    shutil.rmtree(other, ignore_errors=True)
                continue
            if other == entry or not (other / "meta.json").is_file():
                continue
            m = json.loads((other / "meta.json").read_text())
            same = (m.get("format"), m.get("root"), m.get("split")) == (meta["format"], meta["root"], meta["split"])
            outdated = m.get("files") != meta["files"] or m.get("code") != meta["code"]
            if (same and outdated) or not Path(m.get("root", "")).exists():
                shutil.rmtree(other, ignore_errors=True)
        except (OSError, ValueError, AttributeError):
            continue
