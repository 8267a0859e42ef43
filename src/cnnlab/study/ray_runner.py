"""`cnnlab study --ray [ADDRESS]`: a study's runs as Ray tasks, on this machine or across a cluster.

Without an address a Ray instance is started in this process (no dashboard; all cores, or room for N runs with
`--workers N`) and shut down at the end; with `auto`
or `ray://HOST:PORT` (or a head's HOST:PORT) the study joins a running cluster, e.g. one started inside a SLURM
allocation (docs/scaling.md). A Ray already started in this process (a notebook, a test) is used and left running.

Each run is one task asking for the study's `resources` (default {cpus: 1, gpus: 0}; Ray sets the task's
CUDA_VISIBLE_DEVICES); a run whose recipe leaves train.threads at 0 trains with `cpus` threads. The scheduler is
cnnlab.study.parallel's, so the order, stage dependencies, failures.json and Ctrl-C behave as with `--workers`;
a task whose worker process or node dies is retried by Ray (`max_retries`) and resumes from the run's last.pt.
Every node must see the study folder at the same path: each task checks it first and fails its run with one line
if it cannot.
"""
from __future__ import annotations

import contextlib
import math
import os
import shlex
from collections.abc import Iterator
from pathlib import Path

from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.study.plan import StudyPlan
from cnnlab.study.worker import DIED, run_one

STOP_GRACE_S = 60.0  # after Ctrl-C, how long cancelled tasks may take to save their last epoch


def ray_task(study_dir: str, name: str, threads: int) -> tuple[str, str]:
    """What one Ray task runs (wrapped by ray.remote at start-up, with the study's resource request)."""
    return run_one(study_dir, name, threads)


def import_ray():
    """Ray, or one line naming the extra that installs it (checked before a study folder is made)."""
    try:
        import ray  # optional heavy dependency (`pip install 'cnnlab[ray]'`): only `--ray` needs it
    except ImportError:
        raise ConfigError("--ray needs Ray, which is not installed", "pip install 'cnnlab[ray]'") from None
    return ray


class RayBackend:
    """Submit / wait / stop over Ray tasks, for cnnlab.study.parallel.schedule."""

    retries = 0  # a dead worker is Ray's to retry (max_retries); an outcome reaching the scheduler is final

    def __init__(self, ray, study_dir: Path, plan: StudyPlan, workers: int | None, retries: int) -> None:
        self.ray, self.study_dir = ray, Path(study_dir).resolve()  # a worker's current folder is not ours
        cpus, gpus = plan.resources["cpus"], plan.resources["gpus"]
        self.threads = max(1, int(cpus))
        self.task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=retries)(ray_task)
        have = ray.cluster_resources()
        for key, want in (("CPU", cpus), ("GPU", gpus)):
            if want > have.get(key, 0):  # Ray would queue the tasks forever
                raise CnnlabError(f"each run asks Ray for {want:g} {key}(s) and the cluster has {have.get(key, 0):g}",
                                  f"ask for less: --set resources.{key.lower()}s={have.get(key, 0):g}")
        fits = [have.get("CPU", 0) / cpus] + ([have.get("GPU", 0) / gpus] if gpus else [])
        self.slots = max(1, math.floor(min(fits) + 1e-9))  # more would only queue inside Ray, hiding who runs
        if workers:
            self.slots = min(self.slots, workers)
        self.description = (f"Ray tasks of {cpus:g} CPU{', %g GPU' % gpus if gpus else ''} each, {self.slots} at "
                            f"once (cluster: {have.get('CPU', 0):g} CPUs, {have.get('GPU', 0):g} GPUs), up to "
                            f"{retries} retries of a dead worker")

    def submit(self, name: str):
        return self.task.remote(str(self.study_dir), name, self.threads)

    def wait(self, handles: list, timeout: float) -> list[tuple[object, str, str]]:
        """The tasks that ended within `timeout` seconds, each with its outcome."""
        if not handles:
            return []
        ready, _ = self.ray.wait(handles, num_returns=1, timeout=timeout)
        if ready:  # and whatever else is ready now
            ready, _ = self.ray.wait(handles, num_returns=len(handles), timeout=0)
        out = []
        for ref in ready:
            try:
                out.append((ref, *self.ray.get(ref)))
            except self.ray.exceptions.RayError as e:  # the worker (or its node) died on every attempt
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                out.append((ref, DIED, f"{type(e).__name__}: {first}"))
        return out

    def stop(self, handles: list) -> None:
        """Ctrl-C: each task gets a KeyboardInterrupt and ends its run like Ctrl-C (last.pt kept)."""
        for ref in handles:
            self.ray.cancel(ref)
        if handles:
            self.ray.wait(handles, num_returns=len(handles), timeout=STOP_GRACE_S)


@contextlib.contextmanager
def ray_session(address: str | None, plan: StudyPlan, workers: int | None) -> Iterator[None]:
    """Start (address '') or join (an address) Ray for the block; nothing when address is None. Entered before the
    study folder is made, so that a wrong address leaves no empty study behind."""
    if address is None:
        yield
        return
    ray = import_ray()
    started = not ray.is_initialized()
    if started and address:
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            first = (str(e).strip().splitlines() or [""])[0]
            raise CnnlabError(f"cannot join the Ray cluster at '{address}': {first}",
                              "start a head first (ray start --head), or run without an address for a local Ray: "
                              "cnnlab study STUDY.yaml --ray") from None
    elif started:  # each run's output goes to STUDY_DIR/logs, not interleaved on this terminal
        cpus = workers * plan.resources["cpus"] if workers else os.cpu_count()  # --workers N: room for N runs
        ray.init(num_cpus=math.ceil(cpus), include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def ray_backend(study_dir: Path, plan: StudyPlan, address: str, workers: int | None, retries: int) -> RayBackend:
    """The backend over the Ray of the enclosing ray_session (or one started by the caller)."""
    backend = RayBackend(import_ray(), study_dir, plan, workers, retries)
    backend.flags = " --ray" + (f" {shlex.quote(address)}" if address else "")  # for the resume hint
    return backend
