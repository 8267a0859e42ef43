"""Everything that watches one run: its progress bars, its events.jsonl and its experiment trackers.

engine/run.py calls this at each phase (decoding the data, each epoch's training and validation, the final test)
and for each epoch's metrics; the rest of the engine only sees a `Bar` to advance. Rank 0 watches; the other
processes of a torchrun job get a silent watch (no bars, no files).
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

from rich.console import Console

from cnnlab.config import Recipe
from cnnlab.data.formats.common import DECODE_HOOKS
from cnnlab.data.loading import RunData
from cnnlab.engine.distributed import world
from cnnlab.engine.progress import Bar, Bars, EventLog
from cnnlab.engine.run_files import EVENTS, read_events
from cnnlab.engine.tracking import Tracker, open_trackers
from cnnlab.errors import CnnlabError
from cnnlab.interrupts import last_signal
from cnnlab.logs import get_logger, quiet

log = get_logger(__name__)

# Told each finished epoch (run dir, metrics.csv row, the validation score that picks best.pt); a hook returning a
# reason ends training there, as early stopping does: the run then tests best.pt and finishes (cnnlab tune's pruner)
STOP_HOOKS: list[Callable[[Path, dict, float], str | None]] = []


def per_process(bar: Bar) -> Callable[[int], None]:
    """An evaluation callback for a bar over a whole split: each process evaluates its shard, rank 0 shows its
    own batches times the number of processes."""
    n = world()
    return lambda size: bar.advance(size * n)


class RunWatch:
    """Bars, events and trackers of one run; a context manager whose exit records how the run ended."""

    def __init__(self, r: Recipe, console: Console, main: bool = True) -> None:
        self.r, self.console, self.main = r, console, main
        self.bars = Bars(console, show=main and r.train.progress)
        self.events = EventLog(enabled=main)
        self.trackers: list[Tracker] = []
        self.total_steps = 0
        self.step_losses: list[float] = []  # the training steps' losses of the epoch under way
        self.events.write("start", run=r.name, task=r.task, epochs=r.train.epochs, log_to=list(r.train.log_to))

    @contextlib.contextmanager
    def phase(self, name: str, description: str, total: int | None, **fields) -> Iterator[Bar]:
        """A bar for one phase, between a phase_start and a phase_end event (with its images, steps, seconds)."""
        self.events.write("phase_start", phase=name, total=total, **fields)
        with self.bars.bar(description, total) as bar:
            yield bar
        secs = bar.seconds
        self.events.write("phase_end", phase=name, **fields, images=bar.done, steps=bar.steps,
                          seconds=round(secs, 3), images_per_s=bar.done / max(secs, 1e-9))

    @contextlib.contextmanager
    def decoding(self) -> Iterator[Bar]:
        """The data being read: every decoded model input advances the bar (readers decode in threads)."""
        d = self.r.data
        with self.phase("decode", f"reading {d.root}", None, format=d.format) as bar:
            lock = threading.Lock()

            def tick() -> None:
                with lock:
                    bar.advance(1)

            DECODE_HOOKS.append(tick)
            try:
                yield bar
            finally:
                DECODE_HOOKS.remove(tick)

    def data_read(self, data: RunData, seconds: float) -> None:
        """One line (and event) with what was read: the split sizes and the image size."""
        splits = {"train": len(data.train), "validation": len(data.val)}
        if data.test is not None:
            splits["test"] = len(data.test)
        shape = "x".join(str(s) for s in data.train.images.shape[1:])
        self.events.write("data", splits=splits, image_shape=list(data.train.images.shape[1:]),
                          seconds=round(seconds, 3))
        counts = ", ".join(f"{n} {k}" for k, n in splits.items())
        log.info(f"data: {counts} images ({shape}), read in {seconds:.1f} s", extra=quiet(self.bars.show))

    def attach(self, run_dir: Path, epochs_done: int) -> None:
        """The run dir exists (or is resumed at epochs_done): events.jsonl (appended) and the trackers open."""
        if not self.main:
            return
        path = run_dir / EVENTS
        if epochs_done and path.is_file():  # steps of the epochs already kept in last.pt
            done = [e for e in read_events(path) if e.get("event") == "epoch" and e.get("epoch", 0) <= epochs_done]
            self.total_steps = done[-1].get("total_steps", 0) if done else 0
        self.events.open(path)
        self.events.write("run_dir", path=str(run_dir), resumed_at_epoch=epochs_done or None)
        try:
            self.trackers = open_trackers(self.r, run_dir, epochs_done)
        except CnnlabError:
            raise
        except Exception as e:  # a tracker's own error (an unreachable MLflow server, say): one line, not a trace
            raise CnnlabError(f"train.log_to: could not open the tracker: {type(e).__name__}: {e}",
                              "check train.mlflow_uri / MLFLOW_TRACKING_URI, or remove the tracker from "
                              "train.log_to") from None
        for t in self.trackers:
            log.info(t.describe(), extra=quiet(self.bars.show))

    @contextlib.contextmanager
    def train_phase(self, epoch: int, total: int) -> Iterator[Bar]:
        """The epoch's training bar; its steps' losses go to the trackers with the epoch's row (epoch()), so a
        run stopped before its epoch was recorded logs none of them twice."""
        with self.phase("train", f"epoch {epoch + 1}/{self.r.train.epochs}", total, epoch=epoch + 1) as bar:
            yield bar
        self.step_losses = list(bar.step_losses)

    def val_phase(self, epoch: int, total: int) -> contextlib.AbstractContextManager[Bar]:
        return self.phase("validate", "  validation", total, epoch=epoch + 1)

    def test_phase(self, data: RunData) -> contextlib.AbstractContextManager[Bar]:
        """The end: best.pt evaluated on test, then on validation; without a test split on validation alone;
        with train.tta auto validation first in one pass and with the flips, to choose (engine/summary.py)."""
        split = self.r.data.test if data.test is not None else self.r.data.val
        total = len(data.test) + len(data.val) if data.test is not None else len(data.val)
        if self.r.train.tta == "auto":
            total += len(data.val) * (1 if data.test is not None else 2)
        return self.phase("test", f"testing best.pt on '{split}'", total, split=split)

    def epoch(self, row: dict, steps: int, improved: bool) -> None:
        """An epoch's metrics.csv row as an event and to every tracker."""
        losses = [(self.total_steps + i + 1, v) for i, v in enumerate(self.step_losses)]
        self.total_steps += steps
        self.events.write("epoch", **row, steps=steps, total_steps=self.total_steps, best=improved)
        self._each_tracker(lambda t: t.epoch(row["epoch"], row))
        if losses:
            self._each_tracker(lambda t: t.steps(losses))
        self.step_losses = []

    def stop_reason(self, run_dir: Path, row: dict, score: float) -> str | None:
        """The first STOP_HOOKS reason to end training after this epoch (rank 0 of a single process only: a
        torchrun job would need every rank to agree)."""
        if not self.main or world() > 1:
            return None
        return next((why for hook in list(STOP_HOOKS) if (why := hook(run_dir, row, score))), None)

    def finish(self, run_dir: Path, summary: dict, epochs_run: int) -> None:
        """After summary.json and the figures: the final metrics, figures and files to the trackers."""
        metrics = summary.get("metrics", {})
        self.events.write("summary", evaluated_on=summary.get("evaluated_on"), metrics=metrics,
                          best_epoch=summary.get("best_epoch"))
        self._each_tracker(lambda t: t.finish(run_dir, summary, epochs_run))

    def _each_tracker(self, call) -> None:
        """A tracker that fails mid-run is dropped with one note: the training itself goes on."""
        for t in list(self.trackers):
            try:
                call(t)
            except Exception as e:  # noqa: BLE001 - any library error; the run matters more than its logging
                log.info(f"note: {type(t).__name__} stopped logging: {type(e).__name__}: {e}")
                self.trackers.remove(t)

    def __enter__(self) -> RunWatch:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        # Ctrl-C and SIGTERM reach here as run.py's Interrupted, raised while handling the KeyboardInterrupt, or
        # while handling the error a library raised when a second signal cut its call short (torch.save's zip
        # writer): any error after a signal is the signal's doing, as run.py's line says
        stopped = (isinstance(exc, KeyboardInterrupt)
                   or isinstance(getattr(exc, "__context__", None), KeyboardInterrupt)
                   or (exc is not None and last_signal() is not None))
        status = "finished" if kind is None else "interrupted" if stopped else "failed"
        self.events.write("end", status=status, total_steps=self.total_steps,
                          error=None if exc is None else f"{type(exc).__name__}: {exc}")
        self._each_tracker(lambda t: t.close(status))
        self.events.close()
