"""Text drawn in a figure is literal: what the user named (files, class folders, data.options.classes) is shown as
written, never interpreted.

Why: matplotlib reads a string with two `$` as mathtext (a class named `$\\write18$` raised ValueError after the
test phase and the run ended failed) and its font code refuses the lone surrogates that stand for undecodable
bytes in a file name (os.fsdecode of a Latin-1 `caf\\xe9`: TypeError from FT2Font). Every name that reaches a figure
goes through `literal`.
"""
from __future__ import annotations


def literal(text: object) -> str:
    """text as a figure shows it literally: bytes and undecodable bytes (surrogate escapes) decoded with the
    replacement character, and each `$` escaped so that mathtext never starts."""
    s = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    try:
        s = s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate that stands for no byte
        s = s.encode("utf-8", "replace").decode("utf-8")
    return s.replace("$", r"\$")
