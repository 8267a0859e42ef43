"""Writing the recipe `cnnlab new` makes: whole or not at all, never over another file, whatever the names.

Why: the draft was written in place (`open(out, "x")`) with the text encoded strictly, so a folder whose name holds
bytes that are not UTF-8 (a Latin-1 `caf\\xe9`, which Python holds as the surrogate escape '\\udce9') raised
UnicodeEncodeError mid-write and left a 0-byte recipe behind: the retry then said the recipe already exists.

Now the text is encoded with backslashreplace: such a character becomes `\\udce9`, which inside the double-quoted
scalars `new` writes (rows.y) is YAML's own escape for the same character, so the recipe loads back to the exact
path (os.fsencode gives the original byte); in a comment it is a readable stand-in. And each write goes to a
temporary file beside the recipe, fsynced, then linked (first write: fails if the name appeared meanwhile) or
renamed (rewrite) into place, so an interrupted or failed write leaves no file.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cnnlab.errors import CnnlabError


def encode(text: str) -> bytes:
    """UTF-8, with any character UTF-8 cannot hold (a surrogate escape of a non-UTF-8 file name) as its \\u escape."""
    return text.encode("utf-8", "backslashreplace")


def _temporary(out: Path, text: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(encode(text))
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def create_text(out: Path, text: str) -> None:
    """Write a new file at out, whole; refused (nothing written) when out exists, also if it appeared meanwhile."""
    tmp = _temporary(out, text)
    try:
        try:
            os.link(tmp, out)
        except FileExistsError:
            raise CnnlabError(f"{out}: recipe already exists", "choose another --out, or delete the file first") \
                from None
        except OSError:  # a file system without hard links: exclusive create, the text already encoded
            with open(out, "xb") as f:
                f.write(tmp.read_bytes())
    finally:
        tmp.unlink(missing_ok=True)


def replace_text(out: Path, text: str) -> None:
    """Replace the file at out with text in one rename: a reader sees the old text or the new, never half."""
    tmp = _temporary(out, text)
    try:
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
