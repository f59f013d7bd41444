"""The task table. A new task is a module in this package plus one line in ``TASKS``, or a class
another package registers under the ``runassist.tasks`` entry-point group::

    [project.entry-points."runassist.tasks"]
    sentiment-span = "my_package.tasks:SpanTask"

Plugins are found when the table is first asked for (never at import time) and are treated
exactly like the built-in tasks: the same config, CLI, trainer, run folder, service and tests.
"""

from __future__ import annotations

import functools
import warnings
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from runassist import config
from runassist.config import Config, TaskSection
from runassist.errors import ConfigError, RunassistError
from runassist.tasks.asr import AsrTask
from runassist.tasks.audio import AudioTask
from runassist.tasks.base import Task
from runassist.tasks.chat import ChatTask
from runassist.tasks.classify import ClassifyTask
from runassist.tasks.image import ImageTask
from runassist.tasks.ner import NerTask
from runassist.tasks.qa import QATask
from runassist.tasks.relations import RelationsTask
from runassist.tasks.seq2seq import Seq2SeqTask

TASKS: dict[str, type] = {"ner": NerTask, "classify": ClassifyTask, "qa": QATask, "relations": RelationsTask,
                         "chat": ChatTask, "seq2seq": Seq2SeqTask, "image": ImageTask, "audio": AudioTask,
                         "asr": AsrTask}
ENTRY_POINTS = "runassist.tasks"


@functools.lru_cache(maxsize=1)
def _table() -> tuple[dict[str, type], dict[str, str]]:
    table, broken = dict(TASKS), {}
    for point in entry_points(group=ENTRY_POINTS):
        where = f"{point.value} (from {point.dist.name if point.dist else 'an unknown distribution'})"
        if point.name in table:
            broken[point.name] = f"the task name '{point.name}' of {where} is taken by {table[point.name].__module__}"
            continue
        try:
            cls = point.load()
            _check_task_class(point.name, cls)
        except Exception as exc:  # noqa: BLE001 -- one broken plugin must not take every task down
            broken[point.name] = f"{where}: {type(exc).__name__}: {exc}"
            warnings.warn(f"runassist task plugin '{point.name}' is not usable: {broken[point.name]}", stacklevel=2)
            continue
        table[point.name] = cls
    return table, broken


def _check_task_class(name: str, cls: Any) -> None:
    section = getattr(cls, "Section", None)
    if getattr(cls, "name", None) != name:
        raise TypeError(f"{cls!r}.name is {getattr(cls, 'name', None)!r}, but it is registered as '{name}'")
    if not (isinstance(section, type) and issubclass(section, TaskSection)):
        raise TypeError(f"{cls!r}.Section must be a runassist.config.TaskSection subclass")
    if section.model_fields["name"].default != name:
        raise TypeError(f"{section.__name__}.name must default to '{name}' (name: Literal['{name}'] = '{name}')")


def task_table() -> dict[str, type]:
    """Every task: the built-in ones and the plugins' (name -> task class)."""
    return dict(_table()[0])


def refresh() -> None:
    """Look for plugins again (after installing one into the running process)."""
    _table.cache_clear()


def task_class(name: str) -> type:
    table, broken = _table()
    if name in table:
        return table[name]
    if name in broken:
        raise RunassistError(f"task '{name}' could not be loaded: {broken[name]}")
    raise ConfigError(f"unknown task '{name}'; choose one of: {', '.join(sorted(table))}")


def sections() -> dict[str, type[TaskSection]]:
    return {name: cls.Section for name, cls in _table()[0].items()}


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """``config.load`` against the task table: the way every command reads a config."""
    return config.load(path, overrides, tasks=sections())


def validate_config(raw: dict[str, Any]) -> Config:
    return config.validate(raw, tasks=sections())


def make_task(cfg: Config) -> Task:
    return task_class(cfg.task.name)(cfg.task, cfg.data, cfg.model)
