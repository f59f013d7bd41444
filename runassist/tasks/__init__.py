"""The task table. A new task is a module in this package plus one line here."""

from __future__ import annotations

from runassist.config import Config
from runassist.tasks.base import Task
from runassist.tasks.classify import ClassifyTask
from runassist.tasks.ner import NerTask

TASKS: dict[str, type] = {"ner": NerTask, "classify": ClassifyTask}


def make_task(cfg: Config) -> Task:
    return TASKS[cfg.task.name](cfg.task, cfg.data, cfg.model)
