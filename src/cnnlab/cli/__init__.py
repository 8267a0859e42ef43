"""The cnnlab command line: one module per command group, each thin over importable functions.

User errors print one line on stderr and exit 2.
"""
from __future__ import annotations

import argparse
import sys

from cnnlab.cli import data, exercises, infer, study, tools, train, tune
from cnnlab.cli.examples import add_examples
from cnnlab.cli.failures import memory_line, os_error_line, out_of_memory, peer_line, peer_lost
from cnnlab.cli.version import VersionAction
from cnnlab.errors import CnnlabError

COMMAND_GROUPS = (train, data, study, tune, infer, exercises, tools)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnnlab", description="Train, compare and explain CNNs on small image sets.")
    p.add_argument("--version", action=VersionAction)
    sub = p.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    add_examples(p)  # each command's --help ends with examples
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point. Exit codes (README "Exit codes"): 0 done; 2 a usage or input error (argparse's own, and every
    CnnlabError as one line on stderr: bad recipe or data, a diverged run, and a run stopped by Ctrl-C or SIGTERM
    with its resume line); 130 a Ctrl-C outside a run. Any other exception is a runtime failure (a bug): it
    propagates, so Python prints its traceback and exits 1."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CnnlabError as e:
        print(f"cnnlab: error: {e.line()}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.filename is None:  # not about a file the user named or a folder they gave: a bug, with its traceback
            raise
        print(f"cnnlab: error: {os_error_line(e)}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:
        if not (out_of_memory(e) or peer_lost(e)):
            raise
        print(f"cnnlab: error: {memory_line(e) if out_of_memory(e) else peer_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnnlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
