"""Ctrl-C and SIGTERM that never cut a write in half.

A signal lands between two Python bytecodes, wherever the main thread is: inside `torch.save` (whose zip writer
then raises its own RuntimeError while unwinding), between moving the epoch counter and writing last.pt, half-way
through a cache entry. Two pieces keep a run's files whole and its last line true:

- `handled()` (around a whole run): SIGINT raises KeyboardInterrupt and SIGTERM raises `Terminated` (a
  KeyboardInterrupt), so both end a run the same way, with its resume line, instead of SIGTERM's silent death.
- `protected()` (around each write of a run's files: an epoch's checkpoints and metrics, the decoded cache,
  summary.json, a report, a study's table, an export): a signal that arrives inside is noted, the step completes,
  and the signal is raised as the step ends. A second signal inside the same step stops at once, as users
  expect of a second Ctrl-C (the atomic writes keep the previous files), unless `second_signal_forces(False)`
  was said (a study worker: the scheduler and the terminal each send one SIGINT, and both mean "stop cleanly").

`protected()` also works without `handled()` (in the main thread it defers the signal the same way and hands it to
the handler that was there before, after the step), and does nothing in other threads, where Python delivers
no signals. Nothing here imports the rest of cnnlab, so every part can use it.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is so that it ends like Ctrl-C."""


class _State:
    """The process's one signal state (signals reach the main thread only, so no lock is needed)."""
    depth = 0                      # how many protected() steps are open
    pending: int | None = None     # a signal that arrived inside a step, raised when the step ends
    handling = False               # our handlers are installed
    second_forces = True           # a second signal inside a step stops at once
    received: int | None = None    # the last signal seen while our handlers were installed
    forced = False                 # a second signal cut a step short


def _raise(signum: int) -> None:
    raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt


def _on_signal(signum: int, frame) -> None:
    first = _State.received is None
    _State.received = signum
    if _State.depth == 0:
        if first or _State.second_forces:
            _raise(signum)
        return  # a worker told not to force: later signals add nothing
    if _State.pending is None and first:
        _State.pending = signum  # the step completes, then the signal is raised
        return
    if _State.second_forces:
        _State.pending, _State.forced = None, True
        _raise(signum)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _install() -> dict[int, object]:
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _on_signal)
    _State.handling = True
    return previous


def _restore(previous: dict[int, object]) -> None:
    for s, handler in previous.items():
        signal.signal(s, handler if handler is not None else signal.SIG_DFL)
    _State.handling = False


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """SIGINT and SIGTERM raise (KeyboardInterrupt, `Terminated`) outside protected steps and wait for the end of
    one inside; the handlers there before come back afterwards. Outside the main thread, or nested, it does
    nothing more."""
    if not _in_main_thread() or _State.handling:
        yield
        return
    previous = _install()
    _State.received, _State.forced = None, False
    try:
        yield
    finally:
        _restore(previous)


@contextlib.contextmanager
def protected() -> Iterator[None]:
    """A step that a signal does not cut: the signal is raised when the step ends (a second one cuts it short).

    Without `handled()` around it, the signal goes, after the step, to the handler that was there before (the
    default SIGTERM still ends the process, the default SIGINT raises KeyboardInterrupt).
    """
    if not _in_main_thread():
        yield
        return
    own = None if _State.handling or _State.depth else _install()
    if own is not None:
        _State.received, _State.forced = None, False
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
        if own is not None:
            _restore(own)
    if _State.depth == 0 and _State.pending is not None:
        signum, _State.pending = _State.pending, None
        if own is not None:
            signal.raise_signal(signum)  # the old handler decides, as if the signal came now
        else:
            _raise(signum)


def second_signal_forces(forces: bool) -> None:
    """Whether a second signal inside a protected step stops at once (the default) or is ignored (a study
    worker, whose first signal already means 'stop cleanly')."""
    _State.second_forces = forces


def last_signal() -> int | None:
    """The last SIGINT/SIGTERM seen under `handled()` (None if none): an error that surfaces after one is the
    interrupt's doing, not a fault of its own."""
    return _State.received


def was_forced() -> bool:
    """Whether a second signal cut a protected step short."""
    return _State.forced
