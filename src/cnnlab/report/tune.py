"""tune.md of a tune folder: the best trial, the top trials, which parameters mattered (Optuna's fANOVA
importances) and the optimization history (figures in TUNE_DIR/figures), read from Optuna's storage and the
trials' run dirs. Written at the end of `cnnlab tune` and again by `cnnlab report` ... at any time, also mid-tune.
"""
from __future__ import annotations

import shlex
import warnings
from pathlib import Path

from matplotlib import pyplot

from cnnlab.engine.rundir import write_text_atomic
from cnnlab.figures.io import save_figure
from cnnlab.report.common import Doc, render_markdown, write_doc
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


def _figures(study, folder: Path, has_importances: bool, score: str) -> list[tuple[str, Path]]:
    """The optimization history and the importances as PNGs (Optuna's matplotlib plots)."""
    optuna = import_optuna()
    folder.mkdir(exist_ok=True)
    vis = optuna.visualization.matplotlib
    plots = [("optimization history: each trial's score and the best so far", "tune_history.png",
              vis.plot_optimization_history),
             ("each trial's validation score per epoch (a pruned trial's line ends early)", "tune_epochs.png",
              vis.plot_intermediate_values)]
    if has_importances:
        plots.append(("parameter importances (fANOVA)", "tune_importances.png", vis.plot_param_importances))
    out = []
    for title, name, plot in plots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            ax = plot(study)
        if name != "tune_importances.png":  # Optuna's generic labels, in the run's words
            ax.set_ylabel(score)
            ax.set_xlabel("epoch" if name == "tune_epochs.png" else "trial")
        fig = ax.figure
        fig.set_size_inches(7, 4)  # Optuna's plots draw through pyplot: closed once saved
        save_figure(fig, folder / name, dpi=100)
        pyplot.close(fig)
        out.append((title, folder / name))
    return out


def _table(study, keys: list[str]) -> tuple[list[str], list[list[str]]]:
    head = ["rank", "trial", "score", "epochs", *keys, "run dir"]
    rows = [[str(i), trial_name(t.number) + (" (base recipe)" if t.user_attrs.get("from") else ""),
             f"{t.value:.4f}", str(t.user_attrs.get("epochs", "")), *(_value(t.params.get(k, "")) for k in keys),
             f"runs/{t.user_attrs.get('run_dir', '')}"] for i, t in enumerate(ranked(study)[:TOP_ROWS], 1)]
    return head, rows


def _counts(study) -> str:
    optuna = import_optuna()
    states = [t.state for t in study.get_trials(deepcopy=False)]
    s = optuna.trial.TrialState
    return (f"{len(states)} trials: {states.count(s.COMPLETE)} finished, {states.count(s.PRUNED)} pruned, "
            f"{states.count(s.FAIL)} failed, {states.count(s.RUNNING) + states.count(s.WAITING)} unfinished")


def _honesty(meta: dict) -> str:
    """What the scores are, and what the confirmation can and cannot say on this data."""
    said = (f"Honesty: every trial was scored on the validation split only. Its score is the best epoch's "
            f"{meta['score']} (the number that picks best.pt), and trials ran without a test split "
            "(data.test=\"\"), so the search never read test images. The best score below is optimistic (the "
            "maximum over trials of a noisy number on the split the search chose by). ")
    if meta.get("test_split"):
        return said + (f"The confirmation study retrains the top trials with three seeds and is the first use of "
                       f"the test split ('{meta['test_split']}').")
    return said + ("This data has no test split: the confirmation study can only score validation again, with "
                   "three seeds, which tells whether the ranking survives seed noise but not how the winner does "
                   "on images the search never saw. Hold out a test split for that (e.g. data.val_fraction carves "
                   "validation from train, freeing the given validation split to serve as the test).")


def tune_doc(tune_dir: Path) -> Doc:
    """The report of a tune folder as a Doc (rendered to markdown and self-contained HTML)."""
    meta, study = read_meta(tune_dir), open_study(tune_dir)
    keys = list(dict.fromkeys(k for t in study.get_trials(deepcopy=False) for k in t.params))
    top, imp, q, st = ranked(study), importances(study), shlex.quote, meta["settings"]
    doc = Doc(f"Tune {tune_dir.name}")
    doc.p(f"Recipe {meta['recipe']} with {' '.join(meta['sets']) or 'no --set'}; space: space.yaml; sampler "
          f"{st['sampler']} (seed {st['seed']}), pruner {st['pruner']} (after {st['startup_trials']} finished trials "
          f"and {st['warmup_epochs']} warm-up epochs); budget {meta['trials'] or 'by minutes'} trials. "
          f"{_counts(study)}.")
    doc.p(_honesty(meta))
    if not top:
        doc.p("No trial has finished yet.")
        return doc
    best = top[0]
    doc.h("Best trial")
    doc.p(f"{trial_name(best.number)}: {meta['score']} {best.value:.4f} (runs/{best.user_attrs.get('run_dir', '')})")
    doc.items([f"{k}: {_value(v)}" for k, v in best.params.items()])
    doc.items([f"train it: cnnlab train {q(str(tune_dir / 'best.yaml'))}",
               f"confirm (top {min(3, len(top))} trials x 3 seeds, paired intervals, on "
               f"{'the test split' if meta.get('test_split') else 'validation again: no test split'}): "
               f"cnnlab study {q(str(tune_dir / 'confirm.yaml'))}"])
    doc.h(f"Top trials (by {meta['score']})")
    doc.table(*_table(study, keys))
    if imp:
        doc.h("Parameter importances (fANOVA over the finished trials)")
        doc.table(["parameter", "importance"], [[k, f"{v:.3f}"] for k, v in imp.items()])
    for title, path in _figures(study, tune_dir / "figures", bool(imp), meta["score"]):
        doc.figure(path, title)
    doc.p(f"Every trial and its per-epoch scores: optuna-dashboard sqlite:///{(tune_dir / 'optuna.db').resolve()}")
    return doc


def write_tune_report(tune_dir: Path) -> Path:
    """TUNE_DIR/tune.md, report.md and a self-contained report.html (figures in TUNE_DIR/figures); returns the
    tune.md path."""
    tune_dir = Path(tune_dir)
    doc = tune_doc(tune_dir)
    write_doc(doc, tune_dir)
    write_text_atomic(tune_dir / "tune.md", render_markdown(doc, tune_dir))
    return tune_dir / "tune.md"
