"""cnnlab's messages: Python logging, shown on the one rich Console and kept in each run dir's train.log.

Why logging: one call (`log.info`) reaches the terminal and the run's own record, and a run's file handler can be
attached and removed around exactly that run. The console handler is rich's RichHandler on the Console the
progress bars draw on (so a message printed during a live bar lands above it), rendering each message as the bare
line cnnlab always printed: no time, level or source column, no wrapping, no highlighting.

train.log holds every line of its run: the lines logged before the run dir exists (what is being read, the
`data:` line) are kept per thread (_early, at most EARLY_MAX) and written first when the run's train.log opens;
whatever is logged after it closes is not kept for the next run. The final tables, printed after training, are
appended by `append_printed_to_run_log`. `console` is the one terminal of the process: every part prints on it
(bars, messages, tables; `piped_width` for a table piped to a file), none makes its own.

Per-record switches (logging's `extra`): {"console": False} keeps a record out of the terminal (an epoch line with
train.progress off still belongs in train.log); {"markup": True} renders rich markup on the terminal and strips it
from the file.
"""
from __future__ import annotations

import collections
import contextlib
import io
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console, ConsoleRenderable, Group
from rich.highlighter import NullHighlighter
from rich.logging import RichHandler
from rich.text import Text
from rich.traceback import Traceback

from cnnlab.errors import CnnlabError

ROOT = "cnnlab"
LOG_FILE = "train.log"
FILE_FORMAT = "%(asctime)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
LOG_WIDTH = 120  # train.log's tables: class names whole (a terminal is often narrower)

console = Console(highlight=False, soft_wrap=True)  # the one terminal of a cnnlab process: messages and bars
EARLY_MAX = 200  # records kept per thread while no train.log is open
_early = threading.local()  # .records: this thread's records since its last run closed; .open: run logs open


def get_logger(name: str) -> logging.Logger:
    """The logger of a cnnlab module (pass __name__); its records reach the console and any open train.log."""
    return logging.getLogger(name if name == ROOT or name.startswith(ROOT + ".") else f"{ROOT}.{name}")


def quiet(show: bool = False) -> dict:
    """`extra` for a record that goes to train.log but not to the terminal (unless show)."""
    return {"console": show}


class _LineHandler(RichHandler):
    """RichHandler that prints the message alone, as console.print did before logging.

    RichHandler's default grid pads each line to the terminal width and wraps long ones (a path cut in two cannot
    be pasted back); without its time/level/path columns the grid has nothing to add.
    """

    def render(self, *, record: logging.LogRecord, traceback: Traceback | None,
               message_renderable: ConsoleRenderable) -> ConsoleRenderable:
        return message_renderable if traceback is None else Group(message_renderable, traceback)


def _on_console(record: logging.LogRecord) -> bool:
    return getattr(record, "console", True)


def _early_records() -> collections.deque:
    if not hasattr(_early, "records"):
        _early.records, _early.open = collections.deque(maxlen=EARLY_MAX), 0
    return _early.records


class _EarlyHandler(logging.Handler):
    """Keeps this thread's records while none of its runs has a train.log open (see the module docstring)."""

    def emit(self, record: logging.LogRecord) -> None:
        records = _early_records()
        if not _early.open:
            records.append(record)


def _install() -> None:
    """The console handler on the 'cnnlab' logger, once per process (a re-imported module adds no second one)."""
    root = logging.getLogger(ROOT)
    if any(getattr(h, "cnnlab_console", False) for h in root.handlers):
        return
    early = _EarlyHandler()
    early.cnnlab_early = True
    root.addHandler(early)
    handler = _LineHandler(console=console, show_time=False, show_level=False, show_path=False,
                           highlighter=NullHighlighter(), keywords=[], markup=False)
    handler.cnnlab_console = True
    handler.addFilter(_on_console)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False  # an application's own root handler would print every line twice


_install()


class _PlainFormatter(logging.Formatter):
    """Timestamped plain text: rich markup of a record that used it is removed."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        if getattr(record, "markup", False):
            record.message = Text.from_markup(record.message).plain
        return super().formatMessage(record)


def _why(e: BaseException) -> str:
    """One line for how a run ended early: cnnlab's own line, else the exception's type and message."""
    if isinstance(e, CnnlabError):
        return e.line()
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


@contextlib.contextmanager
def run_log(run_dir: Path, enabled: bool = True) -> Iterator[None]:
    """run_dir/train.log (appended: a resume continues it) receives this thread's cnnlab records for the block.

    The handler is removed and closed on the way out, whatever happens: runs one after another in one process
    (a study, the tests) each write only their own file. Only records of the thread that opened it are kept, so
    runs in two threads of one process do not mix either. A run that ends with an exception says so in its file.
    """
    if not enabled:
        yield
        return
    handler = logging.FileHandler(Path(run_dir) / LOG_FILE, mode="a", encoding="utf-8")
    handler.setFormatter(_PlainFormatter(FILE_FORMAT, DATE_FORMAT))
    owner = threading.get_ident()
    handler.addFilter(lambda record: record.thread == owner)
    root = logging.getLogger(ROOT)
    records = _early_records()
    for record in records:  # the lines from before the run dir existed
        handler.handle(record)
    records.clear()
    _early.open += 1
    root.addHandler(handler)
    try:
        yield
    except BaseException as e:
        root.info(f"stopped: {_why(e)}", extra=quiet())
        raise
    finally:
        root.removeHandler(handler)
        handler.close()
        _early.open -= 1
        records.clear()  # what comes after this run is not the next run's


def begin_run_log() -> None:
    """A command that will make or resume a run starts: what this thread logged before is not that run's."""
    _early_records().clear()


@contextlib.contextmanager
def piped_width(columns: int) -> Iterator[Console]:
    """The console, `columns` wide for the block where stdout is not a terminal (a pipe, a file or a job's log keeps
    whole table rows instead of rich's 80-column default); on a terminal, its own width."""
    if sys.stdout.isatty():
        yield console
        return
    saved = console._width  # None unless COLUMNS was set: rich's width property cannot give that back
    console.width = columns
    try:
        yield console
    finally:
        console._width = saved


def append_to_run_log(run_dir: Path, text: str) -> None:
    """Lines printed after the run's train.log closed (the final tables) appended to it, timestamped."""
    stamp = time.strftime(DATE_FORMAT)
    with open(Path(run_dir) / LOG_FILE, "a", encoding="utf-8") as f:
        f.writelines(f"{stamp} {line}".rstrip() + "\n" for line in text.rstrip("\n").splitlines())


def append_printed_to_run_log(run_dir: Path, draw: Callable[[Console], None]) -> None:
    """What `draw` prints (the final tables) appended to the run's train.log as plain text, LOG_WIDTH wide: a
    console of its own that writes to memory, not a second terminal."""
    text = Console(file=io.StringIO(), width=LOG_WIDTH, highlight=False, color_system=None, record=True)
    draw(text)
    append_to_run_log(run_dir, text.export_text())
