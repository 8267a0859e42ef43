"""Studies run several runs at once (`--workers N`, `--ray`): each run compared with the same study run one run after
another (same seeds and subsets, train.threads=1: bit-identical), a worker really killed mid-run (SIGKILL after its
epoch-1 checkpoint), a run that always fails, and the scheduler's rules on a stand-in executor."""
from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sys
from pathlib import Path

import pytest
import torch
import yaml

import cnnlab.engine.checkpoint as engine_checkpoint
import cnnlab.engine.summary as engine_summary
from cnnlab.engine.checkpoint import load_checkpoint
from cnnlab.engine.tracking import scalar_tag
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.study import parallel
from cnnlab.study.parallel import eta_seconds, schedule
from cnnlab.study.plan import find_run_dir, load_study, read_failures
from cnnlab.study.ray_runner import RayBackend
from cnnlab.study.runner import run_study
from cnnlab.study.worker import DIED, DONE, FAILED, run_one
from conftest import tiny_recipe

KILLED = "base__seed1"      # the run whose worker is killed once, after writing its epoch-1 checkpoint
RUNS = ["stage__pre", "base__seed0", "init__seed0", "bad__seed0", "base__seed1", "init__seed1", "bad__seed1"]
TIMING = ("seconds", "images_per_s")


def _write_study(tmp: Path, root: Path) -> Path:
    """Stage 'pre'; variants base / init (from the stage) / bad (diverges in epoch 1); seeds 0 and 1; 2 epochs."""
    recipe = tiny_recipe(root, tmp / "unused")
    recipe["train"]["threads"] = 1  # bit-identical needs the same thread count in every executor
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    study = {"name": "par", "base": "tiny.yaml", "out": str(tmp / "studies"), "seeds": [0, 1],
             "stages": {"pre": []},
             "variants": {"base": [], "init": ["model.init={stage:pre}", "optim.lr=0.003"],
                          "bad": ["optim.lr=1e30", "loss.name=cross_entropy", "train.precision=fp32"]}}
    (tmp / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    return tmp / "study.yaml"


def _kill_once_after_epoch_1() -> None:
    """In a worker process: no per-run figures (time), and the KILLED run's process SIGKILLs itself right after its
    first last.pt is on disk, once per study (a marker file in the study folder remembers)."""
    engine_summary.write_run_figures = lambda *a, **k: []
    save = engine_checkpoint.atomic_save

    def save_then_die(obj: dict, path: Path) -> None:
        save(obj, path)
        path = Path(path)
        marker = path.parents[2] / "killed-once"
        if path.name == "last.pt" and path.parent.name.startswith(KILLED + "-") and obj["state"]["epoch"] == 1 \
                and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)

    engine_checkpoint.atomic_save = save_then_die


def _child_killed_once(study_dir, name, threads, gpu, conn) -> None:
    _kill_once_after_epoch_1()
    parallel.worker_process(study_dir, name, threads, gpu, conn)


@pytest.fixture(scope="module")
def study_file(endovis_root: Path, tmp_path_factory) -> Path:
    return _write_study(tmp_path_factory.mktemp("par"), endovis_root)


@pytest.fixture(scope="module")
def sequential(study_file: Path) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("cnnlab.engine.summary.write_run_figures", lambda *a, **k: [])
        return run_study(study_file)


@pytest.fixture(scope="module")
def by_workers(study_file: Path) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(parallel, "CHILD", _child_killed_once)
        return run_study(study_file, workers=2)


def _run_dir(study: Path, name: str) -> Path:
    d = find_run_dir(study / "runs", name)
    assert d is not None and (d / "summary.json").is_file(), name
    return d


def _metrics_rows(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(open(run_dir / "metrics.csv"))]


def _assert_same_runs(study: Path, reference: Path) -> None:
    """Every finished run: the same summary metrics, epoch rows and best weights, bit for bit; the same failures."""
    for name in RUNS:
        if name.startswith("bad"):
            continue
        a, b = _run_dir(study, name), _run_dir(reference, name)
        sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
        assert (sa["metrics"], sa["validation"]) == (sb["metrics"], sb["validation"]), name
        assert _metrics_rows(a) == _metrics_rows(b), name
        wa, wb = (load_checkpoint(d / "best.pt")["model"] for d in (a, b))
        assert all(torch.equal(wa[k], wb[k]) for k in wb) and wa.keys() == wb.keys(), name
    fa, fb = read_failures(study), read_failures(reference)
    assert set(fa) == set(fb) == {"bad__seed0", "bad__seed1"}
    assert all(fa[k].split(";")[0] == fb[k].split(";")[0] == "loss became nan at epoch 1, step 2" for k in fa)


def _table(study: Path) -> list[dict]:
    rows = json.loads((study / "study.json").read_text())["rows"]
    return [{k: v for k, v in r.items() if k not in ("run_dirs", "failed")} for r in rows]


def test_workers_give_the_sequential_results_run_by_run(by_workers: Path, sequential: Path):
    _assert_same_runs(by_workers, sequential)
    assert _table(by_workers) == _table(sequential)


def test_a_killed_worker_is_started_again_and_resumes_from_its_last_epoch(by_workers: Path, sequential: Path):
    assert (by_workers / "killed-once").is_file()                   # the SIGKILL happened
    killed = _run_dir(by_workers, KILLED)
    resumes = yaml.safe_load((killed / "history.yaml").read_text())["resumes"]
    assert [r["from_epoch"] for r in resumes] == [1]                 # continued in its own folder after epoch 1
    log = (by_workers / "logs" / f"{KILLED}.log").read_text()
    assert log.count(f"== {KILLED}: started") == 2
    assert len(list((by_workers / "runs").glob(f"{KILLED}-*"))) == 1
    assert _metrics_rows(killed) == _metrics_rows(_run_dir(sequential, KILLED))   # exact resume


def test_a_failing_run_is_recorded_and_the_others_finish(by_workers: Path):
    failures = read_failures(by_workers)
    assert set(failures) == {"bad__seed0", "bad__seed1"}
    rows = {r["variant"]: r for r in json.loads((by_workers / "study.json").read_text())["rows"]}
    assert rows["bad"]["n_finished"] == 0 and set(rows["bad"]["failed"]) == {"0", "1"}
    assert rows["base"]["n_finished"] == rows["init"]["n_finished"] == 2
    assert "0/2 (2 FAILED)" in (by_workers / "table.md").read_text()


def test_the_stage_ends_before_the_runs_that_need_it_start(by_workers: Path):
    stage = _run_dir(by_workers, "stage__pre")
    for seed in (0, 1):
        run = _run_dir(by_workers, f"init__seed{seed}")
        assert yaml.safe_load((run / "config.yaml").read_text())["model"]["init"] == str(stage / "best.pt")
        assert (run / "env.json").stat().st_mtime_ns >= (stage / "summary.json").stat().st_mtime_ns
        assert yaml.safe_load((run / "config.yaml").read_text())["train"]["threads"] == 1


@pytest.mark.slow
def test_ray_gives_the_sequential_results_and_retries_a_killed_worker(study_file: Path, sequential: Path,
                                                                     tmp_path: Path):
    """The Ray runs also log to MLflow (one Ray start serves both checks): MLflow must not change a metric, and
    every run Ray ran, the retried one included, is nested under the study's parent run."""
    ray = pytest.importorskip("ray")
    store = f"sqlite:///{tmp_path / 'store.db'}"
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import this test module
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": _kill_once_after_epoch_1})
    try:
        study = run_study(study_file, ['train.log_to=["mlflow"]', f"train.mlflow_uri={store}"], ray="")
        # (a Ray already started in this process is used, and left running)
    finally:
        ray.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert (study / "killed-once").is_file()
    assert [r["from_epoch"] for r in yaml.safe_load((_run_dir(study, KILLED) / "history.yaml").read_text())
            ["resumes"]] == [1]
    _assert_same_runs(study, sequential)
    assert _table(study) == _table(sequential)
    _assert_nested_in_mlflow(study, store)


def _assert_nested_in_mlflow(study: Path, store: str) -> None:
    """One parent run for the study; each run of the study one child with the parent's id and its own metrics."""
    from mlflow import MlflowClient  # an optional extra, installed by `make test`

    client = MlflowClient(tracking_uri=store)
    parent = client.get_run(json.loads((study / "tracking.json").read_text())["mlflow"]["run_id"])
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_name = {c.info.run_name.rsplit("-", 2)[0]: c for c in children}
    assert sorted(by_name) == sorted(RUNS)
    for name in RUNS:
        if name.startswith("bad"):
            assert by_name[name].info.status == "FAILED", name
            continue
        rows = _metrics_rows(_run_dir(study, name))
        history = client.get_metric_history(by_name[name].info.run_id, scalar_tag("val_loss"))
        history = sorted(history, key=lambda m: m.step)
        assert [m.value for m in history] == pytest.approx([float(r["val_loss"]) for r in rows], rel=1e-12), name


def test_without_ray_installed_ray_is_one_line_naming_the_extra(study_file: Path, monkeypatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "ray", None)   # `import ray` raises ImportError
    with pytest.raises(ConfigError, match=r"--ray needs Ray.*pip install 'cnnlab\[ray\]'"):
        run_study(study_file, out=tmp_path / "s", ray="")
    assert not (tmp_path / "s").exists()


def test_a_worker_that_cannot_see_the_study_folder_fails_the_run_in_one_line(tmp_path: Path):
    kind, line = run_one(str(tmp_path / "elsewhere"), "base__seed0")
    assert kind == FAILED and "cannot see the study folder" in line and "\n" not in line
    assert not (tmp_path / "elsewhere").exists()


def test_resources_come_from_the_study_file_and_set(study_file: Path, tmp_path: Path):
    plan = load_study(study_file)
    assert plan.resources == {"cpus": 1, "gpus": 0}
    plan = load_study(study_file, ["resources.cpus=2", "resources.gpus=0.5", "train.batch_size=2"])
    assert plan.resources == {"cpus": 2, "gpus": 0.5}
    assert all(not any(o.startswith("resources") for o in r.overrides) for r in plan.runs)
    assert "train.batch_size=2" in plan.runs[0].overrides
    with pytest.raises(ConfigError, match="resources.cpu'.*did you mean 'cpus'"):
        load_study(study_file, ["resources.cpu=2"])
    with pytest.raises(ConfigError, match="resources.gpus' must be a number >= 0"):
        load_study(study_file, ["resources.gpus=-1"])


class _FakeRay:
    """What RayBackend asks of Ray before any task runs: remote() and the cluster's resources."""

    def __init__(self, have: dict) -> None:
        self.have, self.asked = have, {}

    def remote(self, **request):
        self.asked = request
        return lambda fn: fn

    def cluster_resources(self) -> dict:
        return self.have


def test_ray_runs_ask_for_the_study_resources_and_fill_the_cluster(study_file: Path, tmp_path: Path):
    plan = load_study(study_file, ["resources.cpus=2", "resources.gpus=0.5"])
    ray = _FakeRay({"CPU": 16.0, "GPU": 2.0})
    backend = RayBackend(ray, tmp_path, plan, None, 3)
    assert ray.asked == {"num_cpus": 2, "num_gpus": 0.5, "max_retries": 3}
    assert backend.slots == 4 and backend.threads == 2         # GPUs bound it: 2 / 0.5; CPUs would allow 8
    assert RayBackend(ray, tmp_path, plan, 3, 3).slots == 3    # --workers caps it
    with pytest.raises(CnnlabError, match=r"asks Ray for 0.5 GPU\(s\) and the cluster has 0.*resources.gpus=0"):
        RayBackend(_FakeRay({"CPU": 16.0}), tmp_path, plan, None, 3)


def test_eta_by_hand():
    # 2 slots, runs take 10 s: the running one has 6 s left; 3 pending start at 0, 6 and 10 -> the last ends at 20
    assert eta_seconds(10.0, [4.0], 3, 2) == 20.0
    assert eta_seconds(10.0, [12.0, 3.0], 0, 2) == 7.0       # an overdue run counts as ending now
    assert eta_seconds(5.0, [], 4, 4) == 5.0


class _StandIn:
    """An executor whose outcomes are scripted per run name (a list: one outcome per attempt)."""

    def __init__(self, script: dict[str, list[tuple[str, str]]], slots: int = 2, retries: int = 2,
                 interrupt_after: int | None = None) -> None:
        self.script, self.slots, self.retries, self.description = script, slots, retries, "stand-in"
        self.submitted: list[str] = []
        self.stopped: list[str] = []
        self.interrupt_after = interrupt_after

    def submit(self, name: str) -> str:
        self.submitted.append(name)
        return f"{name}#{len(self.submitted)}"

    def wait(self, handles: list[str], timeout: float):
        if self.interrupt_after is not None and len(self.submitted) >= self.interrupt_after:
            raise KeyboardInterrupt
        h = handles[0]
        name = h.split("#")[0]
        return [(h, *(self.script.get(name) or [(DONE, "run dir")]).pop(0))]

    def stop(self, handles: list[str]) -> None:
        self.stopped = list(handles)


def _plan_dir(study_file: Path, tmp_path: Path) -> tuple[Path, object]:
    plan = load_study(study_file)
    (tmp_path / "runs").mkdir()
    return tmp_path, plan


def test_a_worker_dying_every_time_fails_its_run_after_the_retries(study_file: Path, tmp_path: Path):
    study, plan = _plan_dir(study_file, tmp_path)
    backend = _StandIn({"base__seed0": [(DIED, "worker killed by SIGKILL")] * 3}, retries=2)
    failures = schedule(study, plan, backend)
    assert backend.submitted.count("base__seed0") == 3 and len(backend.submitted) == 3 + len(RUNS) - 1
    assert set(failures) == {"base__seed0"}
    assert failures["base__seed0"].startswith("worker killed by SIGKILL (3 attempts; output: ")
    assert read_failures(study) == failures


def test_runs_needing_a_failed_stage_fail_without_starting(study_file: Path, tmp_path: Path):
    study, plan = _plan_dir(study_file, tmp_path)
    backend = _StandIn({"stage__pre": [(FAILED, "stage broke")]})
    failures = schedule(study, plan, backend)
    assert "init__seed0" not in backend.submitted and "init__seed1" not in backend.submitted
    assert failures["init__seed0"] == "needs stage 'pre', which did not finish — see that stage's failure"
    assert set(failures) == {"stage__pre", "init__seed0", "init__seed1"}
    assert backend.submitted == ["stage__pre", "base__seed0", "bad__seed0", "base__seed1", "bad__seed1"]


def test_finished_runs_are_kept_without_a_worker(study_file: Path, tmp_path: Path):
    study, plan = _plan_dir(study_file, tmp_path)
    kept = study / "runs" / "base__seed0-20260101-000000"
    kept.mkdir()
    (kept / "summary.json").write_text("{}")
    backend = _StandIn({})
    schedule(study, plan, backend)
    assert "base__seed0" not in backend.submitted and len(backend.submitted) == len(RUNS) - 1


def test_ctrl_c_stops_the_workers_and_says_how_to_resume(study_file: Path, tmp_path: Path):
    study, plan = _plan_dir(study_file, tmp_path)
    backend = _StandIn({}, interrupt_after=2)
    backend.flags = " --workers 2"
    with pytest.raises(CnnlabError) as e:
        schedule(study, plan, backend)
    assert backend.stopped == ["stage__pre#1", "base__seed0#2"]
    assert e.value.hint == f"resume with: cnnlab study --resume {study} --workers 2"


def test_cli_takes_workers_ray_and_retries(study_file: Path, tmp_path: Path):
    from cnnlab.cli.study import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    a = parser.parse_args(["study", str(study_file), "--ray"])
    assert (a.ray, a.workers, a.retries) == ("", None, 2)
    a = parser.parse_args(["study", str(study_file), "--ray", "auto", "--workers", "4", "--retries", "0"])
    assert (a.ray, a.workers, a.retries) == ("auto", 4, 0)
    a = parser.parse_args(["study", str(study_file), "--workers", "0", "--out", str(tmp_path / "s")])
    with pytest.raises(CnnlabError, match="--workers must be 1 or more"):
        a.func(a)
    assert not (tmp_path / "s").exists()


def _child_reports_its_gpus(study_dir, name, threads, gpu, conn) -> None:
    """A worker whose 'run' reports the CUDA devices it was given: the real worker_process sets them, then run_one (a
    stand-in, no training) reads them back from the environment, as torch would on a GPU machine."""
    parallel.run_one = lambda folder, run, n: (DONE, f"{run}:{os.environ.get('CUDA_VISIBLE_DEVICES')}:{n}")
    parallel.worker_process(study_dir, name, threads, gpu, conn)


@pytest.mark.parametrize("visible, workers, distinct", [
    ("3,5", 2, True),    # one GPU per worker slot: runs that overlap never share one, freed slots are reused
    ("7", 2, False),     # fewer GPUs than workers: shared round robin
])
def test_each_worker_gets_its_own_gpu_from_the_visible_ones(tmp_path: Path, monkeypatch, visible: str, workers: int,
                                                             distinct: bool):
    """Issue 21: one GPU per run where GPUs exist. No GPU here, so the devices are named by CUDA_VISIBLE_DEVICES
    (what a GPU node's scheduler sets) and each worker process reports the one it was handed. Which worker finishes
    first is up to the OS, so the check is the invariant: a run submitted while others run gets a GPU none of them
    holds (when there are enough), the first `workers` runs take the GPUs in order, and every GPU is a visible one."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.setattr(parallel, "CHILD", _child_reports_its_gpus)
    (tmp_path / "plan.json").write_text("{}")
    backend = parallel.ProcessBackend(tmp_path, workers)
    names = ["r0", "r1", "r2", "r3", "r4", "r5"]
    seen, running, overlapping = {}, [], {}
    for name in names:   # two at a time: each submit takes a free slot, each finished worker frees its slot
        if len(running) == workers:
            while not (done := backend.wait(running, 30)):
                pass
            for handle, outcome, detail in done:
                running.remove(handle)
                seen[handle.name] = (outcome, detail)
        overlapping[name] = [h.name for h in running]
        running.append(backend.submit(name))
    while running:
        for handle, outcome, detail in backend.wait(running, 30):
            running.remove(handle)
            seen[handle.name] = (outcome, detail)
    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    got = {}
    for name, (outcome, detail) in seen.items():
        assert outcome == DONE, detail
        run, gpu, n = detail.split(":")
        assert run == name and int(n) == threads
        got[name] = gpu
    gpus = visible.split(",")
    assert sorted(got) == names and set(got.values()) <= set(gpus)
    assert [got[n] for n in names[:workers]] == [gpus[i % len(gpus)] for i in range(workers)]
    for name in names:
        held = {got[other] for other in overlapping[name]}
        assert (got[name] not in held) if distinct else (got[name] == gpus[0]), (name, got, overlapping)


def test_hidden_gpus_are_no_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert parallel.visible_gpus() == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", " 2, 0 ")
    assert parallel.visible_gpus() == ["2", "0"]
