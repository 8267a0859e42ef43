"""The machine's refusals as one line: a file or folder that cannot be written or read (a read-only run folder, a
missing --out folder, a full disk) and an allocation that failed (ulimit -v, a too large batch or window).

Why here, at the top of the CLI: these come from any command at any depth (report, evaluate, export and compare
write into folders the user names) and are not bugs; the traceback told the user nothing the line does not.
An OSError without a file name, or any other exception, is still raised with its traceback: that is a bug.
"""
from __future__ import annotations

import errno
import os
import re
import shlex

ALLOCATION = re.compile(r"can't allocate memory|out of memory|Cannot allocate memory", re.IGNORECASE)
# what gloo and NCCL say in the surviving processes when another process of a torchrun training died
PEER_LOST = re.compile(r"Connection (?:reset|closed) by peer|Broken pipe|NCCL communicator was aborted",
                       re.IGNORECASE)


def os_error_line(e: OSError) -> str:
    """'PATH: why — what to do' for an OSError naming a file."""
    path = os.fsdecode(e.filename)
    why = e.strerror or type(e).__name__
    folder = shlex.quote(os.path.dirname(os.path.abspath(path)) or ".")
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        hint = f"see who may write there: ls -ld {folder} (or write elsewhere with --out, where the command has it)"
    elif e.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = f"free some space there: df -h {folder}"
    elif e.errno in (errno.ENOENT, errno.ENOTDIR):
        hint = f"create the folder first: mkdir -p {folder}"
    else:
        hint = f"check the path: ls -ld {folder}"
    return f"{path}: {why} — {hint}"


def out_of_memory(e: BaseException) -> bool:
    """A failed allocation: MemoryError, or torch's allocator refusing (CPU or CUDA)."""
    return isinstance(e, MemoryError) or bool(ALLOCATION.search(str(e)))


def memory_line(e: BaseException) -> str:
    """'out of memory (what was asked) — what to do'."""
    asked = re.search(r"allocate (\d+) bytes", str(e))
    what = f" (an allocation of {int(asked.group(1)) / 2 ** 30:.1f} GiB failed)" if asked else ""
    return (f"out of memory{what} — smaller batches or images need less: e.g. --set train.batch_size=2 or "
            "--set train.eval_batch_size=2 (train), --batch-size 1 (predict, evaluate); check limits: ulimit -v")


def peer_lost(e: BaseException) -> bool:
    """Under torchrun: the collective failed because another process of the run died (killed, out of memory)."""
    return isinstance(e, RuntimeError) and int(os.environ.get("WORLD_SIZE", "1")) > 1 and \
        bool(PEER_LOST.search(str(e)))


def peer_line(e: BaseException) -> str:
    """'another process stopped (what the library said) — how to resume'."""
    n = os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("WORLD_SIZE", "2")
    said = " ".join(str(e).split())
    said = said[said.find("]") + 1:].strip() if said.startswith("[") else said
    return (f"another process of this distributed run stopped ({said[:100]}); the run's last.pt holds every "
            f"finished epoch — resume it with the same launcher: torchrun --nproc_per_node={n} -m cnnlab train "
            "--resume RUN_DIR (the run dir this command printed)")
