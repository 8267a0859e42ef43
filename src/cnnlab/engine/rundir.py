"""Run directories: always new, locked while a run trains, derived files set aside on resume; the git hash and
environment a run records. What goes into the folder is engine/run_files.py's (and checkpoint.py's)."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import platform
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from cnnlab.engine.distributed import is_main
from cnnlab.errors import CnnlabError
from cnnlab.interrupts import protected


def git_hash() -> str:
    """The commit of the code that ran (with '+dirty' when the tree had changes), or 'unknown'."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def new_run_dir(out: str | Path, name: str) -> Path:
    """A fresh folder out/name-YYYYmmdd-HHMMSS; a clash gets a numbered suffix, nothing is overwritten."""
    base = Path(out)
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CnnlabError(f"cannot create output folder {base} ({e.strerror})", "choose another 'out'") from None
    if not os.access(base, os.W_OK):
        raise CnnlabError(f"output folder {base} is not writable", "choose another 'out' or fix permissions")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        d = base / (f"{name}-{stamp}" + (f"-{i + 1}" if i else ""))
        try:
            d.mkdir()
            (d / "figures").mkdir()
            return d
        except FileExistsError:
            continue
    raise CnnlabError(f"could not find a free run folder name under {base}")


def environment() -> dict:
    """Hardware and software the run used (for reports and reproducibility)."""
    env = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
           "cpu_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def write_text_atomic(path: Path, text: str) -> None:
    """Replace a small text file in one step (a kill mid-write leaves the old file, never half a file). UTF-8; a
    character UTF-8 cannot hold (the surrogate escape of a file or class name's non-UTF-8 byte, caf\\udce9) is
    written as its \\u escape instead of failing the report that names it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with protected():  # a Ctrl-C or SIGTERM waits for the rename: no temp file is left behind
        try:
            tmp.write_text(text, encoding="utf-8", errors="backslashreplace")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


DERIVED = ("export", "evaluate_*.json")  # made from best.pt by `cnnlab export` / `cnnlab evaluate`


def set_aside_derived(run_dir: Path, best_epoch: int) -> Path | None:
    """Move files made from the current best.pt into stale/<time>/ (with a README) before training changes it.

    Moved, not deleted: nothing the user made is lost, and nothing left at the top describes another model.
    """
    run_dir = Path(run_dir)
    found = [p for pattern in DERIVED for p in sorted(run_dir.glob(pattern))]
    if not found:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = run_dir / "stale" / stamp
    for i in range(2, 1000):
        if not dest.exists():
            break
        dest = run_dir / "stale" / f"{stamp}-{i}"
    dest.mkdir(parents=True)
    run = shlex.quote(str(run_dir))
    (dest / "README.txt").write_text(
        f"These files were made from best.pt as it was at epoch {best_epoch}, before the run was resumed on "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} to train further; they do not describe the run's best.pt any more.\n"
        f"Make them again from the new best.pt with: cnnlab export {run} --format onnx (or torchscript) and "
        f"cnnlab evaluate {run}\n")
    for p in found:
        os.replace(p, dest / p.name)
    return dest


LOCK = ".lock"
_HELD: dict[str, int] = {}  # run dirs this process holds locked -> lock file descriptor


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive flock on run_dir/.lock while training; a second process gets one line and exit 2.

    The file holds the PID while the run lives and is removed when it ends, so a finished run dir has no .lock
    (a killed run leaves it, stale: the next run takes it over, as flock died with the killer's victim).
    Re-entrant within a process (resume locks, then train runs inside). Only rank 0 locks under torchrun.
    """
    key = str(Path(run_dir).resolve())
    if key in _HELD or not is_main():
        yield
        return
    path = Path(run_dir) / LOCK
    fd = _take_lock(path, run_dir)
    if fd < 0:  # a file system without flock: run unlocked rather than not at all
        yield
        return
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _HELD[key] = fd
    try:
        yield
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):
            path.unlink()  # removed while still held: whoever opened this file before sees it gone, and retries
        os.close(fd)


def _take_lock(path: Path, run_dir: Path) -> int:
    """The locked descriptor of path (-1 where flock is not supported), or CnnlabError naming the holder.

    A file locked just after its holder removed it is not the lock any more (another process may create a new
    one at the path): the inode is checked after locking, and a stale one is let go and the path opened again."""
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f"process {holder}" if holder.isdigit() else "another process"
                raise CnnlabError(f"run dir is in use by {who}: {run_dir}", "wait for it to end (or stop it), "
                                  f"then: cnnlab train --resume {shlex.quote(str(run_dir))}") from None
            return -1
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder removed this file as it finished: open the path again
    raise CnnlabError(f"could not lock {path}: it keeps being replaced", "is another program removing it?")


def check_free_space(run_dir: Path, model: torch.nn.Module) -> None:
    """Refuse to start when the disk cannot hold the checkpoints (best.pt and last.pt, each with optimizer state)."""
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    need = 2 * 3 * n_bytes + 50 * 2**20  # two checkpoints of weights + Adam moments, plus figures and logs
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise CnnlabError(f"only {free / 2**20:.0f} MiB free at {run_dir.parent}; this run needs about "
                          f"{need / 2**20:.0f} MiB "
                          "for its checkpoints", "free some space or choose another 'out'")
