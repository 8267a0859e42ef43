"""User-facing errors: one line naming the file or key and what to do; the CLI exits 2."""
from __future__ import annotations

import difflib
from typing import Iterable


class CnnlabError(Exception):
    """An error caused by the user's input (data, config, paths), shown as one line."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(self.line())

    def line(self) -> str:
        """The single line the CLI prints."""
        return f"{self.message} — {self.hint}" if self.hint else self.message


class DataError(CnnlabError):
    """A data set on disk is missing, malformed or inconsistent."""


class ConfigError(CnnlabError):
    """A recipe or --set override is invalid."""


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """A hint listing valid names, closest match first."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1)
    head = f"did you mean '{close[0]}'? " if close else ""
    return f"{head}valid: {', '.join(valid)}"


def lookup(registry: dict, name: str, what: str):
    """Registry lookup that fails with the list of valid names."""
    try:
        return registry[name]
    except KeyError:
        raise ConfigError(f"unknown {what} '{name}'", did_you_mean(name, registry)) from None
