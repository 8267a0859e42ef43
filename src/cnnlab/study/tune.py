"""`cnnlab tune RECIPE --space SPACE.yaml --trials N`: which settings are best for this data, by Optuna's search
over a space of recipe keys (cnnlab.study.tune_space), each trial a normal run dir, hopeless trials pruned.

The tune folder (OUT/NAME-tune-YYYYmmdd-HHMMSS) is a study folder whose plan grows by one run per trial:

    tune.json      the recipe mapping, --set values, search settings and budget
    recipe.yaml    the base recipe as read;  space.yaml: the space file as given
    plan.json      one study run per trial asked so far (cnnlab.study.worker runs them in any executor)
    optuna.db      Optuna's sqlite storage: trials, their values and per-epoch scores (optuna-dashboard reads it)
    runs/trialNNNN-<timestamp>/   each trial's run dir
    best.yaml      the best trial's recipe (the base recipe with its values; the test split as the base has it)
    confirm.yaml   a study of the top 3 trials x 3 seeds, scored on the test split: the honest confirmation

Honesty: trials train with data.test="" (no test split is read), and their score is the best epoch's validation
score, the number that picks best.pt (the task's headline, or mean IoU with train.select: miou); the test split is
first touched by the confirmation study.

One scheduler for every executor: the tune process asks Optuna for a trial, adds its run to plan.json and hands
the run to a backend (in this process, cnnlab.study.parallel's worker processes or cnnlab.study.ray_runner's Ray
tasks); the trial's own process reports each epoch and prunes (cnnlab.study.tune_trial); the outcome is told to
Optuna here. The budget is a number of trials (all sessions together) and/or minutes (this session: no trial
starts after them). `--resume TUNE_DIR` continues a killed tune: finished trials are kept, a trial that was
running resumes from its run's last.pt in the same run dir, and new trials are asked until the budget.
"""
from __future__ import annotations

import copy
import json
import shlex
import shutil
import time
from dataclasses import asdict as dc_asdict
from pathlib import Path

import yaml

from cnnlab.config import asdict, dump_recipe, read_yaml, recipe_from_dict
from cnnlab.data.formats import FORMATS
from cnnlab.data.loading import list_splits
from cnnlab.engine.recipe_check import check_recipe
from cnnlab.engine.run import Interrupted
from cnnlab.engine.run_files import read_config, read_metrics
from cnnlab.engine.rundir import new_run_dir, write_text_atomic
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.logs import get_logger
from cnnlab.study.parallel import ProcessBackend
from cnnlab.study.plan import PlannedRun, StudyPlan, plan_to_dict, read_plan
from cnnlab.study.ray_runner import RayBackend, import_ray, ray_session
from cnnlab.study.tune_space import Param, Space, import_optuna, load_space, overrides
from cnnlab.study.tune_trial import (
    PRUNED_FILE,
    TUNE_FILE,
    make_pruner,
    make_sampler,
    open_study,
    pruning,
    read_meta,
    storage,
    trial_name,
    tune_child,
    tune_ray_task,
)
from cnnlab.study.worker import DIED, DONE, FAILED, INTERRUPTED, execute_one
from cnnlab.tasks import task_for

log = get_logger(__name__)
CONFIRM_TOP, CONFIRM_SEEDS = 3, [0, 1, 2]


class TuneInterrupted(CnnlabError):
    """Ctrl-C stopped the tune; finished trials are kept and `cnnlab tune --resume` continues it."""


def score_name(raw: dict) -> str:
    """What a trial's score is: the validation number that picks best.pt."""
    r = recipe_from_dict(copy.deepcopy(raw), check_name=False)
    name = "iou_mean" if r.train.select == "miou" else task_for(r.task).headline
    return f"validation {name}" if name else "validation -loss"


def epoch_scores(run_dir: Path) -> list[float]:
    """Each epoch's validation score of a run, as metrics.csv and config.yaml hold them (the task's selection)."""
    cfg = read_config(run_dir)
    task, select = task_for(cfg["task"]), cfg.get("train", {}).get("select", "auto")
    rows = read_metrics(run_dir)
    return [task.selection_score({k[4:]: float(v) for k, v in row.items() if k.startswith("val_") and v not in
                                  ("", None)}, select) for row in rows]


def _distribution(optuna, p: Param):
    d = optuna.distributions
    if p.kind == "choice":
        return d.CategoricalDistribution([json.dumps(list(c)) if isinstance(c, tuple) else c for c in p.choices])
    if p.kind == "int":
        return d.IntDistribution(int(p.low), int(p.high), step=int(p.step or 1))
    return d.FloatDistribution(p.low, p.high, log=p.kind == "log", step=p.step)


def recipe_values(space: Space, params: dict) -> dict:
    """Optuna's parameter values -> recipe values (a list choice is stored as its JSON text)."""
    out = {}
    for p in space.params:
        v = params[p.key]
        out[p.key] = json.loads(v) if p.kind == "choice" and any(isinstance(c, tuple) for c in p.choices) else v
    return out


def _encoded(p: Param, value):
    """A recipe value as Optuna holds it for `p`, or None when the space does not contain it."""
    if p.kind == "choice":
        hit = next((c for c in p.choices if (list(c) if isinstance(c, tuple) else c) == value), None)
        return None if hit is None else json.dumps(list(hit)) if isinstance(hit, tuple) else hit
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and p.low <= value <= p.high
    return (int(value) if p.kind == "int" else float(value)) if ok else None


def base_values(space: Space, base: dict, sets: list[str]) -> dict:
    """The base recipe's own values of the searched keys that lie in the space (Optuna's encoding): trial 0 runs
    them, so the search starts from the recipe (e.g. what `cnnlab new` wrote) and the table shows it beside the
    rest."""
    resolved, out = asdict(recipe_from_dict(copy.deepcopy(base), sets, check_name=False)), {}
    for p in space.params:
        node = resolved
        for part in p.key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        value = _encoded(p, node) if node is not None else None
        if value is not None:
            out[p.key] = value
    return out


def held_out_test(raw: dict, sets: list[str]) -> str | None:
    """The base recipe's test split where the data has one (the confirmation's split), else None: then the
    confirmation can only score validation again, and the report says so."""
    r = recipe_from_dict(copy.deepcopy(raw), sets, check_name=False)
    try:
        present = list_splits(FORMATS[r.data.format], Path(r.data.root).expanduser(), r.data.options)
    except (CnnlabError, OSError):
        return None
    return r.data.test if r.data.test and r.data.test in present else None


def _check_budget(trials: int | None, minutes: float | None) -> None:
    if trials is None and minutes is None:
        raise CnnlabError("cnnlab tune needs a budget", "e.g. cnnlab tune RECIPE.yaml --space SPACE.yaml --trials 12")
    if trials is not None and trials < 1:
        raise CnnlabError(f"--trials must be 1 or more, got {trials}", "e.g. --trials 12")
    if minutes is not None and minutes <= 0:
        raise CnnlabError(f"--minutes must be above 0, got {minutes}", "e.g. --minutes 30")


def start_tune(recipe_path: str | Path, space_path: str | Path, trials: int | None, minutes: float | None = None,
               sets: list[str] | None = None, out: str | Path | None = None, workers: int | None = None,
               ray: str | None = None, retries: int = 2) -> Path:
    """A new tune folder under `out` (default: tunes) and the search in it; returns the folder."""
    _check_budget(trials, minutes)
    optuna = import_optuna()
    if ray is not None:
        import_ray()
    sets = list(sets or [])
    for o in sets:  # each trial's name and folder are the tune's
        if o.split("=", 1)[0].strip() in ("out", "name"):
            raise ConfigError(f"--set {o}: cnnlab tune places and names its trials itself",
                              "use `cnnlab tune ... --out FOLDER` for where the tune folder goes")
    base = read_yaml(recipe_path)
    try:
        check_recipe(recipe_from_dict(copy.deepcopy(base), sets))
    except ConfigError as e:
        raise ConfigError(f"{recipe_path}: {e.message}", e.hint) from None
    space = load_space(space_path, base, sets)
    name = f"{base.get('name') or Path(recipe_path).stem}-tune"
    plan = StudyPlan(name, str(Path(recipe_path).resolve()), str(out or "tunes"), [], {}, [], ["trial"], "trial",
                     None, "validation", sets, f"cnnlab tune over {Path(space_path).name}", [])
    with ray_session(ray, plan, workers):
        tune_dir = new_run_dir(out or "tunes", name)
        meta = {"recipe": str(Path(recipe_path).resolve()), "base": base, "sets": sets, "settings": space.settings,
                "study_name": tune_dir.name, "trials": trials, "score": score_name(base),
                "test_split": held_out_test(base, sets)}
        write_text_atomic(tune_dir / TUNE_FILE, json.dumps(meta, indent=1))
        shutil.copyfile(space_path, tune_dir / "space.yaml")
        (tune_dir / "recipe.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
        write_text_atomic(tune_dir / "plan.json", json.dumps(plan_to_dict(plan), indent=1))
        study = optuna.create_study(study_name=tune_dir.name, storage=storage(tune_dir), direction="maximize",
                                    sampler=make_sampler(space.settings, 0), pruner=make_pruner(space.settings))
        start = base_values(space, base, sets)
        if start and space.settings["start_from_recipe"]:
            study.enqueue_trial(start, user_attrs={"from": "the base recipe"})
        return _run(tune_dir, trials, minutes, workers, ray, retries)


def resume_tune(tune_dir: str | Path, trials: int | None = None, minutes: float | None = None,
                workers: int | None = None, ray: str | None = None, retries: int = 2) -> Path:
    """Continue a tune folder (its trial budget may be raised with `trials`)."""
    tune_dir = Path(tune_dir)
    if not (tune_dir / TUNE_FILE).is_file():
        raise CnnlabError(f"{tune_dir}: no {TUNE_FILE} here", "give the folder cnnlab tune made: cnnlab tune "
                          "--resume tunes/NAME-tune-YYYYmmdd-HHMMSS")
    import_optuna()
    meta = read_meta(tune_dir)
    if trials is not None:
        _check_budget(trials, minutes)
        meta["trials"] = trials
        write_text_atomic(tune_dir / TUNE_FILE, json.dumps(meta, indent=1))
    if meta["trials"] is None and minutes is None:  # a tune budgeted by minutes alone: this session's minutes
        raise CnnlabError("this tune was budgeted in minutes: say how many for this session (or a trial count)",
                          f"e.g. cnnlab tune --resume {shlex.quote(str(tune_dir))} --minutes 30")
    with ray_session(ray, read_plan(tune_dir), workers):
        return _run(tune_dir, meta["trials"], minutes, workers, ray, retries)


def load_tune_space(tune_dir: Path) -> Space:
    meta = read_meta(tune_dir)
    return load_space(tune_dir / "space.yaml", meta["base"], meta["sets"])


class InProcessBackend:
    """One trial after another in the tune process (its epochs on this terminal); the pruning hook is the tune
    process's own."""

    slots, retries, flags = 1, 0, ""
    description = "one trial after another in this process"

    def __init__(self, tune_dir: Path) -> None:
        self.tune_dir, self.ended = tune_dir, []

    def submit(self, name: str) -> object:
        run = next(r for r in read_plan(self.tune_dir).runs if r.name == name)
        handle = object()
        try:
            self.ended.append((handle, DONE, str(execute_one(run, self.tune_dir, {}))))
        except Interrupted as e:
            raise TuneInterrupted(f"tune interrupted during {name}: {e.message}",
                                  f"resume with: cnnlab tune --resume {shlex.quote(str(self.tune_dir))}") from None
        except CnnlabError as e:
            self.ended.append((handle, FAILED, e.line()))
        return handle

    def wait(self, handles: list, timeout: float) -> list:
        out, self.ended = self.ended, []
        return out

    def stop(self, handles: list) -> None:
        pass


class TuneProcessBackend(ProcessBackend):
    child = staticmethod(tune_child)


def _backend(tune_dir: Path, workers: int | None, ray: str | None, retries: int):
    if workers is not None and workers < 1:
        raise CnnlabError(f"--workers must be 1 or more, got {workers}", "e.g. cnnlab tune ... --workers 2")
    if ray is not None:
        backend = RayBackend(import_ray(), tune_dir, read_plan(tune_dir), workers, retries)
        backend.task = backend.ray.remote(num_cpus=1, max_retries=retries)(tune_ray_task)
        backend.flags = " --ray" + (f" {shlex.quote(ray)}" if ray else "")
        return backend
    if (workers or 1) > 1:
        return TuneProcessBackend(tune_dir, workers, retries)
    return InProcessBackend(tune_dir)


def _ask(study, tune_dir: Path, space: Space) -> int:
    """A new trial from the sampler, its run added to plan.json; returns its number."""
    optuna = import_optuna()
    trial = study.ask({p.key: _distribution(optuna, p) for p in space.params})
    trial.set_user_attr("run", trial_name(trial.number))
    _plan_trial(tune_dir, space, trial.number, trial.params)
    return trial.number


def _plan_trial(tune_dir: Path, space: Space, number: int, params: dict) -> dict:
    """The trial's run in plan.json (added once: a tune killed between Optuna's ask and this write adds it on
    resume); returns its recipe values."""
    meta, plan = read_meta(tune_dir), read_plan(tune_dir)
    values = recipe_values(space, params)
    if all(r.name != trial_name(number) for r in plan.runs):
        run = PlannedRun(trial_name(number), "variant", "trial", values, None, meta["base"],
                         [*meta["sets"], *overrides(values), 'data.test=""'])
        plan = StudyPlan(**{**dc_asdict(plan), "runs": [*plan.runs, run]})
        write_text_atomic(tune_dir / "plan.json", json.dumps(plan_to_dict(plan), indent=1))
    return values


def _tell(study, tune_dir: Path, number: int, kind: str, text: str) -> str:
    """One trial's outcome to Optuna; returns the line that says it."""
    optuna = import_optuna()
    states = optuna.trial.TrialState
    rdb = storage(tune_dir)
    trial_id = rdb.get_trial_id_from_study_id_trial_number(rdb.get_study_id_from_name(study.study_name), number)
    if kind != DONE:
        rdb.set_trial_user_attr(trial_id, "error", text)
        study.tell(number, state=states.FAIL)
        return f"{trial_name(number)} FAILED: {text} (the tune goes on)"
    run_dir = Path(text)
    scores = epoch_scores(run_dir)
    rdb.set_trial_user_attr(trial_id, "run_dir", run_dir.name)
    rdb.set_trial_user_attr(trial_id, "epochs", len(scores))
    if (run_dir / PRUNED_FILE).is_file() or not scores:
        study.tell(number, state=states.PRUNED)
        return f"{trial_name(number)} pruned after epoch {len(scores)}: best {max(scores, default=float('nan')):.4f}"
    study.tell(number, max(scores))
    return f"{trial_name(number)} done: {max(scores):.4f} (best epoch {scores.index(max(scores)) + 1}/{len(scores)})"


def _unfinished(study) -> list[int]:
    """Trials started but never told (a tune killed mid-trial): run again, resuming their run dirs. (A trial
    still waiting in Optuna's queue is what the next ask returns.)"""
    optuna = import_optuna()
    return sorted(t.number for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING)


def _run(tune_dir: Path, trials: int | None, minutes: float | None, workers: int | None, ray: str | None,
         retries: int) -> Path:
    """The search: trials until the budget, through one backend, then best.yaml and confirm.yaml."""
    space = load_tune_space(tune_dir)
    study = open_study(tune_dir, n_before=len(open_study(tune_dir).get_trials(deepcopy=False)))
    backend = _backend(tune_dir, workers, ray, retries)
    pending, running, attempts = _unfinished(study), {}, {}
    deadline = time.time() + minutes * 60 if minutes else float("inf")
    log.info(f"tune {tune_dir.name}: {trials or 'unlimited'} trials{f', {minutes:g} minutes' if minutes else ''}, "
             f"{backend.description}; storage {tune_dir / 'optuna.db'}")

    def can_ask() -> bool:  # a trial waiting in Optuna's queue (trial 0: the recipe's values) is in the count
        made = study.get_trials(deepcopy=False)
        waiting = any(t.state == import_optuna().trial.TrialState.WAITING for t in made)
        return time.time() < deadline and (waiting or trials is None or len(made) < trials)

    with pruning():
        try:
            while True:
                while len(running) < backend.slots and (pending or can_ask()):
                    number = pending.pop(0) if pending else _ask(study, tune_dir, space)
                    attempts[number] = attempts.get(number, 0) + 1
                    values = _plan_trial(tune_dir, space, number, study.trials[number].params)
                    log.info(f"{trial_name(number)} started: " + ", ".join(f"{k}={v}" for k, v in values.items()))
                    running[backend.submit(trial_name(number))] = number
                if not running:
                    break
                for handle, kind, text in backend.wait(list(running), timeout=1.0):
                    number = running.pop(handle)
                    if kind in (DIED, INTERRUPTED) and attempts[number] <= backend.retries:
                        pending.insert(0, number)
                        log.info(f"{trial_name(number)}: {text}; starting it again, from its last checkpoint")
                        continue
                    log.info(_tell(study, tune_dir, number, kind, text) + _best_line(study))
        except KeyboardInterrupt:
            log.info(f"stopping: {len(running)} running trial(s) save their last epoch ...")
            backend.stop(list(running))
            raise TuneInterrupted("tune interrupted; finished trials are kept, interrupted ones resume from their "
                                  "last epoch", f"resume with: cnnlab tune --resume {shlex.quote(str(tune_dir))}"
                                  f"{backend.flags}") from None
        except BaseException:
            backend.stop(list(running))
            raise
    write_answer(tune_dir)
    return tune_dir


def _best_line(study) -> str:
    try:
        best = study.best_trial
    except ValueError:  # no finished trial yet
        return ""
    return f"; best so far {trial_name(best.number)}: {best.value:.4f}"


def ranked(study) -> list:
    """Finished trials, best first (ties: the earlier trial)."""
    optuna = import_optuna()
    done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    return sorted(done, key=lambda t: (-t.value, t.number))


def write_answer(tune_dir: Path) -> tuple[Path, Path] | None:
    """best.yaml (the best trial's recipe, whole, with the base recipe's test split) and confirm.yaml (a study of
    the top trials x seeds, on the test split); None while no trial has finished."""
    meta, space = read_meta(tune_dir), load_tune_space(tune_dir)
    top = ranked(open_study(tune_dir))[:CONFIRM_TOP]
    if not top:
        return None
    base, sets = meta["base"], meta["sets"]
    best = recipe_from_dict(copy.deepcopy(base), [*sets, *overrides(recipe_values(space, top[0].params)),
                                                  f"name={base.get('name') or 'run'}-best"])
    header = (f"# cnnlab tune {tune_dir.name}: {trial_name(top[0].number)}, {meta['score']} {top[0].value:.4f}\n"
              f"# train it: cnnlab train {shlex.quote(str(tune_dir / 'best.yaml'))}\n")
    write_text_atomic(tune_dir / "best.yaml", header + dump_recipe(best))
    study = {"name": f"{tune_dir.name}-confirm", "base": "recipe.yaml", "seeds": CONFIRM_SEEDS, "common": sets,
             "evaluate": "test", "out": str(tune_dir.parent),
             "description": f"the top {len(top)} trials of {tune_dir.name}, retrained with {len(CONFIRM_SEEDS)} seeds "
                            + ("and scored on the test split, which the search never read" if meta.get("test_split")
                               else "and scored on validation again: the data has no test split"),
             "variants": {trial_name(t.number): overrides(recipe_values(space, t.params)) for t in top}}
    write_text_atomic(tune_dir / "confirm.yaml", yaml.safe_dump(study, sort_keys=False))
    return tune_dir / "best.yaml", tune_dir / "confirm.yaml"
