"""`cnnlab --version`: cnnlab's version, the commit of a source checkout, torch's version and the CPU.

Read without importing torch (its installed metadata, /proc/cpuinfo): `--version`, like `--help`, answers at once.
"""
from __future__ import annotations

import argparse
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import cnnlab


def git_commit() -> str | None:
    """The short commit (with '+dirty' for uncommitted changes) where cnnlab runs from a git checkout; None for an
    installed wheel (its files are tracked by no repository, even one its venv happens to sit in)."""
    here = Path(cnnlab.__file__).resolve().parent
    try:
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", "__init__.py"], cwd=here,
                                 capture_output=True, timeout=5)
        if tracked.returncode != 0:
            return None
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (rev + ("+dirty" if dirty else "")) or None


def cpu_kind() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def version_text() -> str:
    """The lines `cnnlab --version` prints (also worth pasting into a bug report)."""
    try:
        torch = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch = "not installed"
    commit = git_commit()
    return "\n".join([f"cnnlab {cnnlab.__version__}" + (f" (git {commit})" if commit else ""),
                      f"torch {torch}",
                      f"python {platform.python_version()} ({platform.system()} {platform.machine()})",
                      f"cpu {cpu_kind()}"])


class VersionAction(argparse.Action):
    """argparse's version action, with the text made only when asked for (it runs git)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="show cnnlab's version, the git commit of a checkout, torch's version and the CPU")

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(version_text())
        parser.exit()
