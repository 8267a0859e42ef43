"""The tasks cnnlab trains, one object each: segmentation, classification, colorization.

`task_for` finds a task from its recipe name or from a split's data type; everything that differs between the
tasks is a method of that object (tasks/base.py says which). Adding a task: a module here with a Task subclass,
its entry in TASKS, and its name in cnnlab.config.TASKS (the recipe check).
"""
from __future__ import annotations

from cnnlab.errors import lookup
from cnnlab.tasks.base import Task
from cnnlab.tasks.classification import Classification
from cnnlab.tasks.colorization import Colorization
from cnnlab.tasks.segmentation import Segmentation

TASKS: dict[str, Task] = {t.name: t for t in (Segmentation(), Classification(), Colorization())}


def task_for(data_or_name: object) -> Task:
    """The task of a recipe's task name, or of a split (SegData, ClsData, ColorData)."""
    if isinstance(data_or_name, str):
        return lookup(TASKS, data_or_name, "task")
    for task in TASKS.values():
        if task.fits(data_or_name):
            return task
    raise TypeError(f"no task holds {type(data_or_name).__name__} samples")


__all__ = ["TASKS", "Task", "task_for"]
