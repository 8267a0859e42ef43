"""Checkpoints written atomically (temp file, fsync, rename) and read without executing pickled code."""
from __future__ import annotations

import errno
import os
import pickle
import shlex
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from cnnlab.errors import CnnlabError
from cnnlab.interrupts import protected


def current_umask() -> int:
    """The process umask: from /proc on Linux, else read by setting it and setting it straight back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def atomic_save(obj: dict, path: Path) -> None:
    """Write obj to path so that a crash at any point leaves the previous file intact.

    mkstemp creates its file 0600; the checkpoint gets the mode every other file of the run gets (0666 less the
    user's umask), so a group that can read the run dir can read its checkpoints too.
    """
    path = Path(path)
    with protected():  # a Ctrl-C or SIGTERM waits for the rename: no half-written zip, no traceback from it
        _write_atomically(obj, path)


def _write_atomically(obj: dict, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, (OSError, RuntimeError)) and _disk_full(e, path.parent):
            folder = shlex.quote(str(path.parent))
            raise CnnlabError(f"{path}: no space left on the disk while writing it; the previous {path.name} is kept",
                              f"free some space (df -h {folder}), then: cnnlab train --resume {folder}") from None
        raise


def _disk_full(e: BaseException, folder: Path) -> bool:
    """A write that failed for want of space: ENOSPC/EDQUOT, or torch's zip writer's own error on a full disk."""
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    try:
        return shutil.disk_usage(folder).free < (1 << 20)
    except OSError:
        return False


def load_checkpoint(path: Path, keys: Sequence[str] = ("model",)) -> dict:
    """Read a cnnlab checkpoint with weights_only=True (tensors, numbers, strings, containers only); refused in one
    line unless it is a mapping holding `keys` (a bare state_dict, a list or a string saved as last.pt raised
    KeyError or TypeError on --resume)."""
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"checkpoint not found: {path}", "is this a run directory of a started run?")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CnnlabError(f"{path}: refused, it needs pickled code to load",
                          "only cnnlab checkpoints and plain state dicts are accepted") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CnnlabError(f"{path}: unreadable checkpoint ({type(e).__name__})",
                          "it may be truncated; the other checkpoint in the run dir may still be good") from None
    missing = [k for k in keys if k not in ck] if isinstance(ck, dict) else list(keys)
    if missing:
        what = (f"it holds a {type(ck).__name__}" if not isinstance(ck, dict) else
                f"no {', '.join(missing)}: a bare state_dict?")
        hint = (f"start the run over from its config.yaml: mv {shlex.quote(str(path))} "
                f"{shlex.quote(str(path) + '.bad')} && cnnlab train --resume {shlex.quote(str(path.parent))}"
                if path.name == "last.pt" else "restore the file cnnlab wrote (a bare state_dict is not a run)")
        raise CnnlabError(f"{path}: not a cnnlab checkpoint ({what})", hint)
    return ck


def saved_epoch(path: Path) -> int | None:
    """The epoch a checkpoint on disk holds (None where there is none or it cannot be read): what an interrupt's
    line names, so that it says what was written rather than what the loop had reached. Memory-mapped, so reading
    the number does not read the weights."""
    try:
        ck = torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)
        return int(ck["state"]["epoch"])
    except Exception:  # noqa: BLE001 - missing, truncated or foreign: the line then says no epoch is held
        return None
