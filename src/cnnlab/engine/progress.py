"""Seeing a run as it happens: progress bars on a terminal, plain lines elsewhere, and `events.jsonl`.

Why: a run on real data was silent for minutes (decoding, then one line per epoch, then the test evaluation).
On a terminal each phase gets a rich bar (count, images/s, ETA, loss so far) that disappears when the phase ends,
so the one line per epoch stays the run's record. Where stdout is not a terminal (CI, a batch queue's log, a pipe)
a bar would be control codes, so a phase prints plain lines instead, at a bounded rate (`PlainBar`).
`events.jsonl` is for programs: one JSON object per line, flushed as written, for every phase and every epoch.

An outer task that runs whole runs in this process (a sequential study) watches through two hooks instead of a
display of its own (rich allows one live display at a time, and the run's bars are it): HEADERS are lines shown
above each rich bar (run i of N, the study's ETA), EVENT_HOOKS are told every events.jsonl row (the run's epoch).
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

PLAIN_STEP = 0.1        # plain output: a line each time another 10 % of a phase is done ...
PLAIN_EVERY_S = 30.0    # ... or when 30 s passed without one (a phase of unknown length, or slow steps),
PLAIN_GAP_S = 5.0       # but never sooner than 5 s after the phase began or after the last line
_now = time.monotonic   # the clock of every bar (tests replace it)
HEADERS: list[Callable[[], str]] = []           # lines above every rich bar, asked at each refresh
EVENT_HOOKS: list[Callable[[dict], None]] = []  # told each events.jsonl row as it is written


def _clock(seconds: float) -> str:
    """0:07, 12:05, 1:02:03."""
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def _fields_text(fields: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in fields.items())


class Bar:
    """Counts one phase's samples and steps; shows nothing (progress off, or not rank 0).

    advance() is called once per batch from the training and evaluation loops, so it only adds numbers; the
    subclasses decide what to show and how often."""

    def __init__(self, description: str, total: int | None) -> None:
        self.description, self.total = description, total or None
        self.done = self.steps = 0
        self.start = _now()
        self.fields: dict[str, float] = {}
        self.step_losses: list[float] = []  # training: each step's own loss, for the trackers (not shown)

    def advance(self, n: int, step_loss: float | None = None, **fields: float) -> None:
        """n more samples done in one step; fields (e.g. loss=0.31) are shown beside the count."""
        if step_loss is not None:
            self.step_losses.append(step_loss)
        self.done += n
        if self.total is not None:
            self.done = min(self.done, self.total)
        self.steps += 1
        self.fields = fields
        self._show()

    def _show(self) -> None:
        pass

    def close(self) -> None:
        pass

    @property
    def seconds(self) -> float:
        return _now() - self.start


class PlainBar(Bar):
    """Plain lines, no control codes: at most one each PLAIN_GAP_S, one per PLAIN_STEP of the phase, and one per
    PLAIN_EVERY_S while it moves. The last step prints nothing: the phase's own line (the epoch line) follows."""

    def __init__(self, description: str, total: int | None, console: Console) -> None:
        super().__init__(description, total)
        self.console, self.last, self.next_mark = console, self.start, PLAIN_STEP

    def _show(self) -> None:
        now = _now()
        if now - self.last < PLAIN_GAP_S or (self.total is not None and self.done >= self.total):
            return
        frac = self.done / self.total if self.total else None
        if (frac is None or frac < self.next_mark) and now - self.last < PLAIN_EVERY_S:
            return
        self.last = now
        if frac is not None:
            self.next_mark = (math.floor(frac / PLAIN_STEP + 1e-9) + 1) * PLAIN_STEP
        self.console.print(self.line(now), markup=False, highlight=False)

    def line(self, now: float) -> str:
        """'  epoch 3/30: 120/300 images (40%), 24.1 img/s, ETA 0:07, loss 0.4312'."""
        spent = max(now - self.start, 1e-9)
        rate = self.done / spent
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else math.inf
            where = (f"{self.done}/{self.total} images ({100 * self.done / self.total:.0f}%), {rate:.1f} img/s, "
                     f"ETA {_clock(eta) if math.isfinite(eta) else '?'}")
        else:
            where = f"{self.done} images, {rate:.1f} img/s, {_clock(spent)} so far"
        extra = _fields_text(self.fields)
        return f"  {self.description}: {where}" + (f", {extra}" if extra else "")


class _RateColumn(ProgressColumn):
    """images/s over rich's recent window."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f} img/s" if task.speed else "", style="progress.data.speed")


class _HeadedProgress(Progress):
    """A rich Progress with the HEADERS' lines above its bars."""

    def get_renderables(self) -> Iterable[RenderableType]:
        for header in list(HEADERS):
            yield Text(header(), overflow="ellipsis", no_wrap=True)
        yield from super().get_renderables()


class RichBar(Bar):
    """A rich bar (description, bar, done/total, images/s, ETA or elapsed, loss so far), gone when the phase ends."""

    def __init__(self, description: str, total: int | None, console: Console) -> None:
        super().__init__(description, total)
        time_col = TimeRemainingColumn(compact=True) if self.total else TimeElapsedColumn()
        self.progress = _HeadedProgress(TextColumn("{task.description}"), BarColumn(bar_width=30), MofNCompleteColumn(),
                                 _RateColumn(), time_col, TextColumn("{task.fields[info]}"), console=console,
                                 transient=True, refresh_per_second=4)
        self.task = self.progress.add_task(description, total=self.total, info="")
        self.progress.start()

    def _show(self) -> None:
        self.progress.update(self.task, completed=self.done, info=_fields_text(self.fields))

    def close(self) -> None:
        self.progress.stop()


def _live(console: Console) -> bool:
    """Whether rich's live bars can draw here: a terminal, or a Jupyter notebook where ipywidgets (which rich's
    live display there needs) is installed; elsewhere bars are plain lines at a bounded rate."""
    if console.is_jupyter:
        return importlib.util.find_spec("ipywidgets") is not None
    return console.is_terminal and not console.is_dumb_terminal


class Bars:
    """Makes the bars of one run: rich on a terminal, plain lines elsewhere, nothing when show is False."""

    def __init__(self, console: Console, show: bool, terminal: bool | None = None) -> None:
        self.console, self.show = console, show
        self.terminal = _live(console) if terminal is None else terminal

    @contextlib.contextmanager
    def bar(self, description: str, total: int | None) -> Iterator[Bar]:
        if not self.show:
            b = Bar(description, total)
        elif self.terminal:
            b = RichBar(description, total, self.console)
        else:
            b = PlainBar(description, total, self.console)
        try:
            yield b
        finally:
            b.close()


class EventLog:
    """events.jsonl: one JSON object per line, flushed per line; lines before the run dir exists wait in memory.

    Every line has `event`, `time` (UTC, ISO 8601) and `elapsed_s` (since this process began the run). A resumed
    run appends, starting with a `start` line whose `resumed_at_epoch` says from where; an `epoch` line after it
    replaces any earlier line for the same epoch (the epoch was run again from last.pt)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled, self.pending, self.file = enabled, [], None
        self.t0 = _now()
        self.lock = threading.Lock()

    def open(self, path: Path) -> None:
        if not self.enabled:
            return
        self.file = open(path, "a", encoding="utf-8")
        for line in self.pending:
            self.file.write(line)
        self.file.flush()
        self.pending = []

    def write(self, event: str, **fields: Any) -> None:
        if not self.enabled:
            return
        row = {"event": event, "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
               "elapsed_s": round(_now() - self.t0, 3), **fields}
        for hook in list(EVENT_HOOKS):
            hook(row)
        line = json.dumps(row, default=_jsonable) + "\n"
        with self.lock:
            if self.file is None:
                self.pending.append(line)
            else:
                try:
                    self.file.write(line)
                    self.file.flush()
                except OSError as e:  # a full disk: named, so that the CLI says it in one line (cli/failures.py)
                    raise OSError(e.errno, e.strerror, self.file.name) from None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _jsonable(value: Any) -> Any:
    """Numbers json does not know (numpy, torch scalars) as plain floats; anything else as text."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)

