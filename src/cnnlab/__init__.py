"""cnnlab: train, compare and explain CNNs on small image data sets.

From Python (docs/python.md)::

    import cnnlab
    run = cnnlab.train("recipes/endovis/a_baseline.yaml", train__epochs=2)
    run.metrics                      # the best checkpoint's test metrics
    pred = run.predict(image_array)  # pred.mask in the data set's own mask encoding
    cnnlab.load_run(run.dir).report()

`import cnnlab` stays cheap (no torch): the API below is imported from cnnlab.api on first use, so that
`cnnlab --help` answers at once.
"""
from __future__ import annotations

from importlib import metadata as _metadata
from typing import TYPE_CHECKING, Any

try:
    __version__: str = _metadata.version("cnnlab")
except _metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from cnnlab.api import Prediction, Run, load_run, new_recipe, resume, run_study, train

__all__ = ["Prediction", "Run", "__version__", "load_run", "new_recipe", "resume", "run_study", "train"]
_API = frozenset(__all__) - {"__version__"}


def __getattr__(name: str) -> Any:
    """cnnlab.train, cnnlab.load_run ...: imported from cnnlab.api (torch and all) on first use."""
    if name in _API:
        from cnnlab import api

        return getattr(api, name)
    raise AttributeError(f"module 'cnnlab' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _API)
