"""The tasks cnnlab trains, one object each: segmentation, classification, colorization.

`task_for` finds a task by its name (a recipe's `task`, summary.json's, a trained run's); everything that differs
between the tasks is a method of that object (tasks/base.py says which). A run looks its task up once and carries it
(engine.context.RunContext); nothing asks a split which task it belongs to. Adding a task: a module here with a
Task subclass, its entry in TASKS, and its name in cnnlab.config.TASKS (the recipe check).
"""
from __future__ import annotations

from cnnlab.errors import lookup
from cnnlab.tasks.base import Task
from cnnlab.tasks.classification import Classification
from cnnlab.tasks.colorization import Colorization
from cnnlab.tasks.segmentation import Segmentation

TASKS: dict[str, Task] = {t.name: t for t in (Segmentation(), Classification(), Colorization())}


def task_for(name: str) -> Task:
    """The task of a name; an unknown name is one ConfigError listing the valid ones."""
    return lookup(TASKS, name, "task")


__all__ = ["TASKS", "Task", "task_for"]
