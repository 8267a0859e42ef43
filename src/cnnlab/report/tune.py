"""tune.md of a tune folder: the best trial, the top trials, which parameters mattered (Optuna's fANOVA
importances) and the optimization history (figures in TUNE_DIR/figures), read from Optuna's storage and the
trials' run dirs. Written at the end of `cnnlab tune` and again by `cnnlab report` ... at any time, also mid-tune.
"""
from __future__ import annotations

import shlex
import warnings
from pathlib import Path

from matplotlib import pyplot

from cnnlab.figures.io import save_figure
from cnnlab.study.tune import ranked
from cnnlab.study.tune_space import import_optuna
from cnnlab.study.tune_trial import open_study, read_meta, trial_name

TOP_ROWS = 10


def _value(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def importances(study) -> dict[str, float]:
    """Each parameter's share of the variance of the score over finished trials (fANOVA, seeded); {} while fewer
    than two trials have finished or the scores do not vary."""
    optuna = import_optuna()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}


def _figures(study, folder: Path, has_importances: bool) -> list[tuple[str, str]]:
    """The optimization history and the importances as PNGs (Optuna's matplotlib plots)."""
    optuna = import_optuna()
    folder.mkdir(exist_ok=True)
    plots = [("optimization history", "tune_history.png", optuna.visualization.matplotlib.plot_optimization_history)]
    if has_importances:
        plots.append(("parameter importances", "tune_importances.png",
                      optuna.visualization.matplotlib.plot_param_importances))
    out = []
    for title, name, plot in plots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            ax = plot(study)
        fig = ax.figure
        fig.set_size_inches(7, 4)  # Optuna's plots draw through pyplot: closed once saved
        save_figure(fig, folder / name, dpi=100)
        pyplot.close(fig)
        out.append((title, f"figures/{name}"))
    return out


def _table(study, keys: list[str]) -> list[str]:
    rows = ranked(study)[:TOP_ROWS]
    head = ["rank", "trial", "score", "epochs", *keys, "run dir"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, t in enumerate(rows, 1):
        cells = [str(i), trial_name(t.number), f"{t.value:.4f}", str(t.user_attrs.get("epochs", "")),
                 *(_value(t.params.get(k, "")) for k in keys), f"`runs/{t.user_attrs.get('run_dir', '')}`"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _counts(study) -> str:
    optuna = import_optuna()
    states = [t.state for t in study.get_trials(deepcopy=False)]
    s = optuna.trial.TrialState
    return (f"{len(states)} trials: {states.count(s.COMPLETE)} finished, {states.count(s.PRUNED)} pruned, "
            f"{states.count(s.FAIL)} failed, {states.count(s.RUNNING) + states.count(s.WAITING)} unfinished")


def write_tune_report(tune_dir: Path) -> Path:
    """TUNE_DIR/tune.md (and its figures); returns its path."""
    tune_dir = Path(tune_dir)
    meta, study = read_meta(tune_dir), open_study(tune_dir)
    keys = list(dict.fromkeys(k for t in study.get_trials(deepcopy=False) for k in t.params))
    top, imp = ranked(study), importances(study)
    q = shlex.quote
    lines = [f"# Tune {tune_dir.name}", "",
             f"Recipe `{meta['recipe']}`, space `space.yaml`; sampler {meta['settings']['sampler']} "
             f"(seed {meta['settings']['seed']}), pruner {meta['settings']['pruner']}; budget "
             f"{meta['trials'] or 'by minutes'} trials. {_counts(study)}.", "",
             f"**Honesty.** Every trial was scored on the validation split only: its score is the best epoch's "
             f"{meta['score']} (the number that picks best.pt), and trials ran without a test split (data.test=\"\"), "
             "so the search never read the test images. The best score here is optimistic (it is the maximum over "
             "trials of a noisy number): the confirmation study below retrains the top trials with three seeds and "
             "is the first and only use of the test split.", ""]
    if top:
        best = top[0]
        lines += ["## Best trial", "",
                  f"{trial_name(best.number)}: {meta['score']} **{best.value:.4f}** "
                  f"(run dir `runs/{best.user_attrs.get('run_dir', '')}`)", "",
                  *[f"- `{k}`: {_value(v)}" for k, v in best.params.items()], "",
                  f"- train it: `cnnlab train {q(str(tune_dir / 'best.yaml'))}`",
                  f"- confirm on the test split (top {min(3, len(top))} trials x 3 seeds, paired): "
                  f"`cnnlab study {q(str(tune_dir / 'confirm.yaml'))}`", "",
                  f"## Top trials (by {meta['score']})", "", *_table(study, keys), ""]
    else:
        lines += ["No trial has finished yet.", ""]
    if imp:
        lines += ["## Parameter importances (fANOVA over the finished trials)", "",
                  "| parameter | importance |", "|---|---|", *[f"| `{k}` | {v:.3f} |" for k, v in imp.items()], ""]
    if top:
        for title, rel in _figures(study, tune_dir / "figures", bool(imp)):
            lines += [f"![{title}]({rel})", ""]
    lines += ["Browse every trial and its per-epoch scores: "
              f"`optuna-dashboard sqlite:///{(tune_dir / 'optuna.db').resolve()}`", ""]
    (tune_dir / "tune.md").write_text("\n".join(lines))
    return tune_dir / "tune.md"
