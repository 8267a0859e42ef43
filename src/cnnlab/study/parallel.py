"""Several runs of a study at once: a scheduler over an executor of runs (worker processes here, Ray tasks in
cnnlab.study.ray_runner).

The scheduler starts runs in plan order (seed by seed) as slots free up; a run that takes a stage's output waits
for that stage, and fails with the sequential wording when the stage failed. Each outcome is recorded at once in
failures.json, so a study killed at any moment continues with `cnnlab study --resume STUDY_DIR`. A worker that
dies (killed, out of memory) is started again up to `retries` times; the new attempt finds the run's last.pt and
resumes from it (exact: same weights, optimizer state and random streams as if never stopped).

Worker processes come from the 'forkserver' start method, not from a ProcessPoolExecutor: when one process of a
pool dies the whole pool is broken (BrokenProcessPool) and with it every other run in flight, whereas here a death
costs only its own run's unfinished epoch. The fork server imports cnnlab once; each run is a fresh fork of it
(no state shared with this process, no CUDA context inherited, start-up in milliseconds rather than an import of
torch per run). Ctrl-C reaches the workers too (same process group): each ends its run as a Ctrl-C ends
`cnnlab train` (last.pt kept); the scheduler waits for them and prints how to resume.
"""
from __future__ import annotations

import heapq
import json
import multiprocessing
import os
import shlex
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_for
from pathlib import Path

import torch

from cnnlab.engine.run_files import has_summary
from cnnlab.engine.rundir import write_text_atomic
from cnnlab.interrupts import last_signal, second_signal_forces
from cnnlab.logs import console, get_logger
from cnnlab.study.plan import PlannedRun, StudyPlan, find_run_dir, read_failures
from cnnlab.study.worker import (
    DIED,
    DONE,
    FAILED,
    INTERRUPTED,
    StudyInterrupted,
    log_path,
    run_one,
    stage_missing_error,
    stage_needs,
)

# imported once by the fork server, so not by every run: torch's first optimizer step imports torch._dynamo (sympy
# and some 900 modules; measured 4-5 s per run on the 2-core machine, against 0.6 s for a tiny run's training)
log = get_logger(__name__)
PRELOAD = ["cnnlab.study.parallel", "torch._dynamo"]
STOP_GRACE_S = 60.0  # after Ctrl-C, how long a worker may take to write its last words before it is terminated


def eta_seconds(mean_s: float, running_elapsed: list[float], n_pending: int, slots: int) -> float:
    """When the study should end if every run takes `mean_s`: running runs finish at mean_s minus their elapsed
    time (at the earliest now), pending ones fill whichever slot frees first."""
    free = [max(mean_s - e, 0.0) for e in running_elapsed] + [0.0] * max(slots - len(running_elapsed), 0)
    heapq.heapify(free)
    for _ in range(n_pending):
        heapq.heappush(free, heapq.heappop(free) + mean_s)
    return max(free, default=0.0)


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"


@dataclass
class Progress:
    """Which runs are running, done and failed, with an ETA: one plain line per event, and on a terminal a live
    status line as well (plain lines alone when the output is a file or a pipe).

    The ETA assumes every run takes as long as this session's finished runs on average; before any has finished,
    as long as a running run whose epochs are known (`on_event`: a sequential study sees its run's events) will
    take at its pace so far."""

    total: int
    slots: int
    done: int = 0
    failed: int = 0
    durations: list[float] = field(default_factory=list)
    running: dict[str, float] = field(default_factory=dict)   # run name -> start time
    status: object = None
    epochs: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # run -> (first epoch, done, epochs)

    def on_event(self, name: str, row: dict) -> None:
        """One events.jsonl row of the running run `name`: its epochs (cnnlab.engine.progress.EVENT_HOOKS)."""
        first, done, total = self.epochs.get(name, (0, 0, 0))
        if row.get("event") == "start":
            self.epochs[name] = (0, 0, int(row.get("epochs") or 0))
        elif row.get("event") == "run_dir" and row.get("resumed_at_epoch"):
            self.epochs[name] = (row["resumed_at_epoch"], row["resumed_at_epoch"], total)
        elif row.get("event") == "epoch":
            self.epochs[name] = (first, int(row["epoch"]), total)

    def run_seconds(self, now: float) -> float | None:
        """What a run is expected to take (None: nothing to go by yet)."""
        if self.durations:  # runs of this session only: a run kept from earlier took no time now
            return sum(self.durations) / len(self.durations)
        paces = [(now - self.running[n]) * (total - first) / (done - first)
                 for n, (first, done, total) in self.epochs.items() if n in self.running and done > first]
        return max(paces) if paces else None

    def line(self, now: float, n_pending: int) -> str:
        mean_s = self.run_seconds(now)
        if mean_s is not None:
            eta = f"ETA {_clock(eta_seconds(mean_s, [now - t for t in self.running.values()], n_pending, self.slots))}"
        else:
            eta = "ETA after the first epoch" if any(n in self.epochs for n in self.running) else \
                "ETA after the first run"
        names = ", ".join(self._running_name(n) for n in self.running) or "none"
        return f"[{self.done}/{self.total} done, {self.failed} failed, running: {names}; {eta}]"

    def _running_name(self, name: str) -> str:
        """'base__seed0', or 'base__seed0 (epoch 2/5)' once its epochs are known."""
        _, done, total = self.epochs.get(name, (0, 0, 0))
        return f"{name} (epoch {min(done + 1, total)}/{total})" if total else name

    def event(self, text: str, n_pending: int) -> None:
        log.info(f"{self.line(time.time(), n_pending)} {text}")
        self.refresh(n_pending)

    def refresh(self, n_pending: int) -> None:
        if self.status is not None:
            self.status.update(self.line(time.time(), n_pending))


def worker_process(study_dir: str, name: str, threads: int, gpu: str | None, conn) -> None:
    """A worker process: one run, its outcome sent back through `conn` (nothing sent means the worker died).

    The first SIGINT (Ctrl-C reaches every process of the terminal's group, and the scheduler sends one too) ends
    the run like Ctrl-C ends `cnnlab train`; a second one must not cut that short, so it is ignored.
    """
    def interrupt_once(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if last_signal() is None:  # else the run already took a signal as its stop, and ended with its line
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt_once)
    second_signal_forces(False)  # inside a run's writes too: the scheduler's SIGINT and the terminal's are one stop
    if gpu is not None:  # before anything touches CUDA in this process: the run sees its one GPU as cuda:0
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    conn.send(run_one(study_dir, name, threads))
    conn.close()


CHILD = worker_process  # the worker's entry point, looked up at each start


def visible_gpus() -> list[str]:
    """The GPUs runs may use: CUDA_VISIBLE_DEVICES when set, else every device torch sees."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    return [str(i) for i in range(torch.cuda.device_count())]


@dataclass(eq=False)
class _Worker:
    name: str
    process: multiprocessing.Process
    conn: object
    slot: int


class ProcessBackend:
    """`--workers N`: N worker processes at once on this machine, cores divided between them (train.threads =
    cores // N for runs whose recipe leaves it at 0), one GPU per worker slot where GPUs exist (round robin when
    there are fewer GPUs than workers)."""

    child = None  # the worker's entry point where not CHILD (cnnlab tune's adds its pruning hook)

    def __init__(self, study_dir: Path, workers: int, retries: int = 2) -> None:
        self.study_dir, self.slots, self.retries = Path(study_dir).resolve(), workers, retries
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.threads = max(1, cores // workers)
        self.gpus = visible_gpus()
        self.free_slots = list(range(workers))
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(PRELOAD)
        self.flags = f" --workers {workers}"  # for the resume hint
        self.description = (f"{workers} worker processes, train.threads={self.threads} unless a recipe sets it"
                            + (f", GPUs {','.join(self.gpus)}" if self.gpus else ""))

    def submit(self, name: str) -> _Worker:
        slot = self.free_slots.pop(0)
        gpu = self.gpus[slot % len(self.gpus)] if self.gpus else None
        receive, send = self.context.Pipe(duplex=False)
        process = self.context.Process(target=self.child or CHILD,
                                       args=(str(self.study_dir), name, self.threads, gpu, send),
                                       name=f"cnnlab-study-{name}")
        process.start()
        send.close()
        return _Worker(name, process, receive, slot)

    def wait(self, handles: list[_Worker], timeout: float) -> list[tuple[_Worker, str, str]]:
        """The workers that ended within `timeout` seconds, each with its outcome."""
        ended = set(wait_for([h.process.sentinel for h in handles], timeout))
        out = []
        for h in handles:
            if h.process.sentinel in ended:
                outcome = _receive(h.conn)
                h.process.join()
                h.conn.close()
                self.free_slots.append(h.slot)
                out.append((h, *outcome) if outcome else (h, DIED, _death(h.process.exitcode)))
        return out

    def stop(self, handles: list[_Worker]) -> None:
        """Ctrl-C: each worker ends its run as Ctrl-C ends `cnnlab train` (last.pt kept); stragglers are
        terminated after STOP_GRACE_S."""
        for h in handles:
            if h.process.is_alive():
                os.kill(h.process.pid, signal.SIGINT)
        deadline = time.time() + STOP_GRACE_S
        for h in handles:
            h.process.join(max(deadline - time.time(), 0.1))
            if h.process.is_alive():
                h.process.terminate()
                h.process.join(5)
            if h.process.is_alive():
                h.process.kill()


def _receive(conn) -> tuple[str, str] | None:
    """The worker's outcome, or None when it died before sending one (the pipe then reads as closed)."""
    try:
        return conn.recv() if conn.poll() else None
    except (EOFError, OSError):
        return None


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"worker killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"worker killed by signal {-exitcode}"
    return f"worker exited with code {exitcode} without an outcome"


@dataclass
class _State:
    """What the scheduler knows: runs not started, runs in flight, outcomes so far."""

    pending: list[PlannedRun]
    failures: dict[str, str]
    running: dict = field(default_factory=dict)          # handle -> run
    stage_ok: dict[str, bool] = field(default_factory=dict)
    attempts: Counter = field(default_factory=Counter)


def schedule(study_dir: Path, plan: StudyPlan, backend) -> dict[str, str]:
    """Run every planned run through `backend` (submit / wait / stop, `slots` at once, `retries` restarts of a dead
    worker); returns the failures (also in failures.json). Ctrl-C: the workers stop, then one CnnlabError line."""
    st = _State(list(plan.runs), read_failures(study_dir))
    progress = Progress(len(plan.runs), backend.slots)
    log.info(f"study {plan.name}: {len(plan.runs)} runs, {backend.description}; each run's output: "
             f"{log_path(study_dir, 'RUN')}")
    status = console.status("starting") if console.is_terminal else None
    try:
        if status is not None:
            status.start()
            progress.status = status
        while st.pending or st.running:
            _start_ready(st, plan, backend, progress, study_dir)
            for handle, kind, text in backend.wait(list(st.running), timeout=1.0) if st.running else []:
                _record(st, st.running.pop(handle), kind, text, backend, progress, study_dir)
            progress.refresh(len(st.pending))
    except KeyboardInterrupt:
        if status is not None:
            status.stop()
        log.info(f"stopping: {len(st.running)} running run(s) save their last epoch ...")
        backend.stop(list(st.running))
        raise StudyInterrupted("study interrupted; finished runs are kept, interrupted ones resume from their last "
                          "epoch", f"resume with: cnnlab study --resume {shlex.quote(str(study_dir))}"
                          f"{getattr(backend, 'flags', '')}") from None
    except BaseException:  # a fault of the scheduler itself: no worker may outlive it unseen
        backend.stop(list(st.running))
        raise
    finally:
        if status is not None:
            status.stop()
    return st.failures


def _save_failures(study_dir: Path, failures: dict[str, str]) -> None:
    write_text_atomic(Path(study_dir) / "failures.json", json.dumps(failures, indent=1))


def _start_ready(st: _State, plan: StudyPlan, backend, progress: Progress, study_dir: Path) -> None:
    """Start pending runs in plan order while slots are free; a run waits for the stages it needs."""
    for run in list(st.pending):
        if len(st.running) >= backend.slots:
            return
        needs = stage_needs(plan, run)
        if any(s not in st.stage_ok for s in needs):
            continue
        st.pending.remove(run)
        failed = [s for s in needs if not st.stage_ok[s]]
        kept = find_run_dir(study_dir / "runs", run.name)
        if kept is not None and has_summary(kept):  # --resume: no worker needed to skip it
            _record(st, run, DONE, f"finished earlier ({kept.name}); kept", backend, progress, study_dir)
            continue
        if failed:
            _record(st, run, FAILED, stage_missing_error(failed[0]).line(), backend, progress, study_dir)
            continue
        st.running[backend.submit(run.name)] = run
        progress.running[run.name] = time.time()
        st.attempts[run.name] += 1
        again = f" (attempt {st.attempts[run.name]})" if st.attempts[run.name] > 1 else ""
        progress.event(f"started {run.name}{again}", len(st.pending))


def _record(st: _State, run: PlannedRun, kind: str, text: str, backend, progress: Progress, study_dir: Path) -> None:
    """One outcome: done, failed, or a dead/interrupted worker (started again while retries last)."""
    started = progress.running.pop(run.name, None)
    if kind in (DIED, INTERRUPTED) and st.attempts[run.name] <= backend.retries:
        st.pending.insert(0, run)  # first in line: its slot was its own
        progress.event(f"{run.name}: {text}; starting it again, from its last checkpoint", len(st.pending))
        return
    if kind in (DIED, INTERRUPTED):
        n = st.attempts[run.name]
        text = f"{text} ({n} attempt{'s' * (n > 1)}; output: {log_path(study_dir, run.name)})"
    if kind == DONE:
        st.failures.pop(run.name, None)
        progress.done += 1
        if started is not None:
            progress.durations.append(time.time() - started)
    else:
        st.failures[run.name] = text
        progress.failed += 1
    if run.kind == "stage":
        st.stage_ok[run.group] = kind == DONE
    _save_failures(study_dir, st.failures)
    said = f"{run.name}: {text}" if kind == DONE and started is None else f"{run.name} done"
    progress.event(said if kind == DONE else f"{run.name} FAILED: {text}", len(st.pending))
