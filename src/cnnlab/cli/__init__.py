"""The cnnlab command line: one module per command group, each thin over importable functions.

User errors print one line on stderr and exit 2.
"""
from __future__ import annotations

import argparse
import sys

from cnnlab.cli import data, exercises, infer, study, train
from cnnlab.errors import CnnlabError

COMMAND_GROUPS = (train, data, study, infer, exercises)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnnlab", description="Train, compare and explain CNNs on small image sets.")
    sub = p.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CnnlabError as e:
        print(f"cnnlab: error: {e.line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnnlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
