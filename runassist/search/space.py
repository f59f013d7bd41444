"""The search space of a config's ``search:`` section: checked against the config schema before any
trial, the config's own values (trial 0), and sampling a trial's values with Optuna."""

from __future__ import annotations

from typing import Any

from runassist.config import Config, SearchParam, apply_override
from runassist.errors import ConfigError
from runassist.tasks import task_table, validate_config


def check(raw: dict[str, Any], space: dict[str, SearchParam]) -> None:
    """Every key names a config key, and every end of its range (each choice) is a valid value for it:
    ``search.space.train.lrr: unknown key 'lrr'; valid keys of train: ...`` before any compute."""
    if not space:
        raise ConfigError("search.space: empty; give at least one key, e.g. "
                          "search.space: {train.lr: {low: 1e-5, high: 1e-3, log: true}}")
    for key, param in space.items():
        if key.split(".")[0] in ("search", "output"):
            raise ConfigError(f"search.space.{key}: the search cannot vary its own settings or where runs go")
        values = param.choices if param.choices is not None else [param.low, param.high]
        for value in values:
            trial = strip(raw)
            try:
                apply_override(trial, f"{key}={_text(value)}")
                validate_config(trial)
            except ConfigError as exc:
                raise ConfigError(f"search.space.{key}: {exc}") from None
        if not _leaf_exists(raw, key):
            raise ConfigError(f"search.space.{key}: not a key of the config")


def strip(raw: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of the raw config without its search section (trials and best.yaml do not search)."""
    import copy

    out = copy.deepcopy(raw)
    out.pop("search", None)
    return out


def baseline(cfg: Config, space: dict[str, SearchParam]) -> dict[str, Any]:
    """The config's own value of each searched key: trial 0 measures it, so the study's best is never
    worse than what the user started from without the user seeing it."""
    dumped = cfg.model_dump(mode="json")
    values = {}
    for key in space:
        node: Any = dumped
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:  # an optional key left empty (train.dropout): the search's low end stands in
            param = space[key]
            node = param.choices[0] if param.choices is not None else param.low
        values[key] = node
    return values


def suggest(trial: Any, space: dict[str, SearchParam]) -> dict[str, Any]:
    values = {}
    for key, p in space.items():
        if p.choices is not None:
            values[key] = trial.suggest_categorical(key, p.choices)
        elif p.integer:
            values[key] = trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            values[key] = trial.suggest_float(key, float(p.low), float(p.high), step=p.step, log=p.log)
    return values


def overrides(values: dict[str, Any]) -> list[str]:
    return [f"{key}={_text(value)}" for key, value in values.items()]


def _text(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)


def _leaf_exists(raw: dict[str, Any], key: str) -> bool:
    """The key is a field of its section (validation alone would accept a key pydantic drops)."""
    from pydantic import BaseModel

    from runassist.config import SECTIONS

    parts = key.split(".")
    if parts[0] == "task":
        name = raw.get("task") if isinstance(raw.get("task"), str) else (raw.get("task") or {}).get("name")
        model: type[BaseModel] | None = task_table()[name].Section if name in task_table() else None
    else:
        model = SECTIONS.get(parts[0])
    for part in parts[1:]:
        if model is None or part not in model.model_fields:
            return False
        ann = model.model_fields[part].annotation
        model = next((c for c in getattr(ann, "__args__", (ann,)) if isinstance(c, type) and issubclass(c, BaseModel)),
                     None)
    return True
