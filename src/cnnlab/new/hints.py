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


def parse_void(text: str) -> list:
    """--void 11 / --void 11,255 / --void 0:0:0 (a colour R:G:B) / --void '#404040' -> data.options.void."""
    out: list = []
    for token in (t.strip() for t in str(text).split(",") if t.strip()):
        try:
            if token.startswith("#") and len(token) == 7:
                out.append([int(token[i:i + 2], 16) for i in (1, 3, 5)])
            elif ":" in token:
                out.append([int(c) for c in token.split(":")])
            else:
                out.append(int(token))
        except ValueError:
            raise DataError(f"--void {text}: '{token}' is not a mask value or an R:G:B colour",
                            "e.g. --void 11, --void 11,255 or --void 0:0:0") from None
    return out
