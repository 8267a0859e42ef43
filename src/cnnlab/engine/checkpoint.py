"""A run's checkpoints, best.pt and last.pt: what they hold (`checkpoint_of`), written atomically (temp file,
fsync, rename) and read back without executing pickled code, as a typed `RunCheckpoint`.

The one place a checkpoint is built, saved and loaded (engine/run_files.py owns the run's other files): the
normaliser saved as {"mean", "std"} is rebuilt here, the training state, the recipe and the mask encoding read
here, so that a resume, `cnnlab predict`/`evaluate`/`export` and the Python API read one format one way.
"""
from __future__ import annotations

import errno
import os
import pickle
import shlex
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict as dc_asdict
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.config import Recipe, asdict, recipe_from_dict
from cnnlab.data.mask_encoding import MaskEncoding, resolve_encoding
from cnnlab.engine.context import RunContext
from cnnlab.engine.distributed import unwrap
from cnnlab.engine.fit import TrainState
from cnnlab.engine.run_files import BEST, LAST
from cnnlab.engine.steps import Normalizer
from cnnlab.errors import CnnlabError
from cnnlab.interrupts import protected
from cnnlab.losses.core import loss_entries


def checkpoint_of(ctx: RunContext, state: TrainState) -> dict:
    """Everything a resume, an evaluation or an export needs, in tensors and plain containers only."""
    r, data, norm = ctx.recipe, ctx.data, ctx.norm
    ck = {"model": unwrap(ctx.core).state_dict(), "optimizer": ctx.opt.state_dict(), "state": dc_asdict(state),
          "recipe": asdict(r), "norm": {"mean": list(norm.mean), "std": list(norm.std)},
          "class_names": data.class_names, "in_channels": data.train.images.shape[1],
          "input_size": list(r.data.patch or data.train.images.shape[-2:])}
    if ctx.scaler is not None and ctx.scaler.is_enabled():  # fp16 loss scale: exact resume needs it
        ck["scaler"] = ctx.scaler.state_dict()
    ck.update(ctx.task.checkpoint_entries(r, data.train))
    ck.update(loss_entries(ctx.loss_fn))  # class weights: evaluate scores with these, never recomputed
    return ck


def save_checkpoints(run_dir: Path, ck: dict, improved: bool) -> None:
    """best.pt on improvement, then last.pt: each write atomic (a signal waits for the rename)."""
    if improved:
        atomic_save(ck, Path(run_dir) / BEST)
    atomic_save(ck, Path(run_dir) / LAST)


@dataclass(frozen=True)
class RunCheckpoint:
    """A checkpoint read back: typed views of what `checkpoint_of` saved. A view reads its entry when asked, so a
    checkpoint lacking one fails where that entry is needed (a reader checks the keys it needs with `keys`)."""

    path: Path
    entries: dict  # everything saved: weights, optimizer, state, recipe, task and loss entries

    @property
    def weights(self) -> dict:
        """The model's state_dict."""
        return self.entries["model"]

    @property
    def optimizer(self) -> dict:
        return self.entries["optimizer"]

    @property
    def scaler(self) -> dict | None:
        """The fp16 loss scaler's state (None for runs without one)."""
        return self.entries.get("scaler")

    @property
    def norm(self) -> Normalizer:
        """The normaliser the run's inputs went through (fitted on its training images)."""
        n = self.entries["norm"]
        return Normalizer(tuple(n["mean"]), tuple(n["std"]))

    @property
    def train_state(self) -> TrainState:
        """Epochs done, best score and epoch, plateau decay, history: what a resume continues from."""
        return TrainState(**self.entries["state"])

    @property
    def best_epoch(self) -> int | None:
        return self.entries.get("state", {}).get("best_epoch")

    @property
    def class_names(self) -> list[str]:
        return list(self.entries["class_names"])

    @property
    def in_channels(self) -> int:
        return int(self.entries["in_channels"])

    @property
    def input_size(self) -> tuple[int, int]:
        """The size the model was built for (its patches where data.patch was set)."""
        size = self.entries["input_size"]
        return int(size[0]), int(size[1])

    def recipe(self, overrides: list[str] | None = None) -> Recipe:
        """The recipe saved with the weights, overrides applied; names not checked again (runs saved before
        names were checked stay readable)."""
        return recipe_from_dict(self.entries["recipe"], overrides, check_name=False)

    def encoding(self, recipe: Recipe) -> tuple[MaskEncoding, list[str]]:
        """How the data set's masks encode the classes (stored since it was recorded, else from the recipe's
        format and root), with a note where it had to be guessed."""
        return resolve_encoding(recipe, self.class_names, self.entries)


def read_checkpoint(path: Path, keys: Sequence[str] = ("model",)) -> RunCheckpoint:
    """best.pt or last.pt as a RunCheckpoint (refused in one line unless it is a cnnlab checkpoint with `keys`)."""
    return RunCheckpoint(Path(path), load_checkpoint(path, keys))


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
