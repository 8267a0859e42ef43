"""`cnnlab cache list|clear`: what the decoded cache holds (cnnlab.data.cache), and removing it.

Only folders holding cnnlab's marker file are listed or removed: a shared data.cache_dir (or a mistaken --dir)
may hold other people's folders, and those are never touched.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from cnnlab.data.cache import MARKER


@dataclass(frozen=True)
class Entry:
    """One cache entry: its folder, size and what it was decoded from (empty where meta.json is unreadable)."""

    path: Path
    bytes: int
    format: str = ""
    split: str = ""
    root: str = ""
    written: str = ""

    @property
    def stale(self) -> bool:
        """Its data root is gone (or it is a write cut short): it can never be read again."""
        return self.path.name.startswith(".tmp-") or not self.root or not Path(self.root).exists()


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def entries(folder: Path) -> list[Entry]:
    """cnnlab's entries in a cache folder (sorted by name); other folders are left out."""
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.iterdir()):
        if path.is_symlink() or not (path / MARKER).is_file():
            continue
        try:
            meta = json.loads((path / "meta.json").read_text())
        except (OSError, ValueError):
            meta = {}
        out.append(Entry(path, _size(path), str(meta.get("format", "")), str(meta.get("split", "")),
                         str(meta.get("root", "")), str(meta.get("written", ""))))
    return out


def clear(folder: Path, stale_only: bool = False) -> tuple[list[Entry], int]:
    """Remove cnnlab's entries (only the stale ones with stale_only); returns them and the count of other
    folders left in place because cnnlab did not write them."""
    removed = [e for e in entries(folder) if e.stale or not stale_only]
    for e in removed:
        shutil.rmtree(e.path, ignore_errors=True)
    others = sum(1 for p in folder.iterdir() if p.is_dir() and not (p / MARKER).is_file()) if folder.is_dir() else 0
    return removed, others
