"""Run directories: always new, with the resolved config, git hash and environment written first."""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import torch

from ..config import Recipe, dump_recipe
from ..errors import CnnlabError


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


def write_config(run_dir: Path, recipe: Recipe) -> None:
    """config.yaml (every default written out) headed by the git hash; env.json beside it."""
    header = f"# cnnlab resolved recipe\n# git: {git_hash()}\n"
    (run_dir / "config.yaml").write_text(header + dump_recipe(recipe))
    (run_dir / "env.json").write_text(json.dumps({**environment(), "git": git_hash()}, indent=2))


def check_free_space(run_dir: Path, model: torch.nn.Module) -> None:
    """Refuse to start when the disk cannot hold the checkpoints (best.pt and last.pt, each with optimizer state)."""
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    need = 2 * 3 * n_bytes + 50 * 2**20  # two checkpoints of weights + Adam moments, plus figures and logs
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise CnnlabError(f"only {free / 2**20:.0f} MiB free at {run_dir}; this run needs about {need / 2**20:.0f} MiB "
                          "for its checkpoints", "free some space or choose another 'out'")
