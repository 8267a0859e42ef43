"""Command lines that cnnlab prints as hints for your folders, quoted for a shell (tests run each one)."""
from __future__ import annotations

import shlex
from pathlib import Path

from cnnlab.errors import DataError


def check_command(images: str | Path, masks: str | Path, fov: str | Path | None = None) -> str:
    """The `cnnlab data check folders` command line for these folders, quoted for a shell (used in hints)."""
    args = ["cnnlab", "data", "check", "folders", "--images", str(images), "--masks", str(masks)]
    args += ["--fov", str(fov)] if fov is not None else []
    return shlex.join(args)


def refuse_problems(problems: list[str], check: str) -> None:
    """Files that failed the survey stop `new` before any recipe exists: the first named, the rest counted, and the
    check command to run once they are fixed."""
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise DataError(f"{problems[0]}{more}; no recipe written",
                        f"replace or remove the file(s), then check again: {check}")
