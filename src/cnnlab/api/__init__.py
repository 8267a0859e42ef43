"""cnnlab's Python API (the names `import cnnlab` gives): train, resume, load_run, new_recipe, run_study, Run,
Prediction.

Sits just below the CLI: it calls report, study, new, inference and engine, and the CLI's commands call it.
"""
from cnnlab.api.calls import new_recipe, resume, run_study, train
from cnnlab.api.run import Prediction, Run, load_run

__all__ = ["Prediction", "Run", "load_run", "new_recipe", "resume", "run_study", "train"]
