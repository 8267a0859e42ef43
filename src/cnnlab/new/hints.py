"""Command lines that cnnlab prints as hints for your folders, quoted for a shell (tests run each one)."""
from __future__ import annotations

import shlex
from pathlib import Path


def check_command(images: str | Path, masks: str | Path, fov: str | Path | None = None) -> str:
    """The `cnnlab data check folders` command line for these folders, quoted for a shell (used in hints)."""
    args = ["cnnlab", "data", "check", "folders", "--images", str(images), "--masks", str(masks)]
    args += ["--fov", str(fov)] if fov is not None else []
    return shlex.join(args)
