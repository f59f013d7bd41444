"""The run configuration: pydantic models, validated once at the edge.

``load(path, overrides, tasks=...)`` is the only place that reads YAML or ``section.key=value``
overrides. Everything below the CLI receives a frozen, validated section.

The ``task`` section belongs to the task: each task defines a ``TaskSection`` subclass whose
``name`` is a ``Literal`` of its own name, and ``Config.task`` is the discriminated union of the
sections of the task table the caller passes (``runassist.tasks.load_config`` passes the built-in
and plugin tasks). This module knows no task by name; an unknown key in a task's section still
fails at once with that task's allowed keys.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from runassist.errors import ConfigError

TaskSections = Mapping[str, "type[TaskSection]"]  # task name -> its section class


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskSection(_Section):
    """What every task's section has: its name. A task subclasses this with
    ``name: Literal["its-name"] = "its-name"`` and its own keys, each a ``Field(description=...)``:
    ``runassist init`` writes the description as the key's comment."""

    name: str


class ModelConfig(_Section):
    source: str = "minilm"  # packaged asset name, a local model folder, or a hub name
    max_length: int = Field(128, ge=8, le=8192)  # sub-tokens per window, special tokens included
    stride: int | None = Field(None, ge=0)  # sub-tokens shared by neighbouring windows; None: max_length // 4

    @model_validator(mode="after")
    def _stride_fits(self) -> "ModelConfig":
        if self.stride is not None and self.stride >= self.max_length // 2:
            raise ValueError(f"model.stride ({self.stride}) must be under half of model.max_length "
                             f"({self.max_length}), or windows would barely advance")
        return self

    @property
    def window_stride(self) -> int:
        return self.stride if self.stride is not None else self.max_length // 4


class DataConfig(_Section):
    train: str | None = None  # path or asset alias, e.g. wnut16:train
    dev: str | None = None
    test: str | None = None
    format: Literal["auto", "conll", "jsonl", "csv", "tsv"] = "auto"
    scheme: Literal["auto", "iob1", "iob2", "bioes"] = "auto"  # NER tag scheme of the files
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    label_separator: str | None = None  # multi-label in CSV: labels joined by this string
    max_train_examples: int | None = Field(None, ge=1)  # use the first N training examples (quick experiments)
    max_eval_examples: int | None = Field(None, ge=1)  # and the first N of dev and of test
    train_fraction: float | None = Field(None, gt=0, le=1)  # a seeded sample of training examples (search's --budget)
    # Retraining without forgetting: earlier training data replayed beside data.train (the new data),
    # replay_ratio old examples per new one (a seeded sample; all of them when there are fewer).
    replay: str | None = None
    replay_ratio: float = Field(1.0, ge=0.0)


class LoraConfig(_Section):
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | None = None  # None: the attention's query and value projections, by the model's names
    merge: bool = True  # save merged weights (plain model) or the adapter only


class EarlyStoppingConfig(_Section):
    metric: str | None = None  # None: the task's headline metric
    mode: Literal["max", "min"] | None = None  # None: the headline's own direction (the task says), else max
    patience: int = Field(3, ge=1)  # evaluations without improvement before stopping
    min_delta: float = Field(0.0, ge=0.0)


_FREEZE = re.compile(r"^(none|embeddings|head_only|bottom:\d+)$")


class TrainConfig(_Section):
    epochs: float = Field(5, gt=0)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-4, gt=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.01, ge=0.0)
    dropout: float | None = Field(None, ge=0.0, lt=1.0)
    grad_clip: float | None = Field(1.0, gt=0)
    grad_accum: int = Field(1, ge=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    seed: int = 42
    eval_every: Literal["epoch"] | int = "epoch"
    log_every: int = Field(20, ge=1)
    checkpoint_every: int | None = Field(None, ge=1)
    class_weights: Literal["none", "balanced"] | dict[str, float] = "none"
    freeze: str = "none"
    lora: LoraConfig | None = None
    early_stopping: EarlyStoppingConfig | None = EarlyStoppingConfig()
    # how inputs make up a training batch: packed (random batches, several sentences per row, little
    # padding), grouped (similar lengths together), random (padded random batches); auto packs
    # per-token tasks whose model can (grouping cost F1 on WNUT-16) and groups the others (it cost
    # no accuracy on Rotten Tomatoes); bench/README.md, "Batching"
    batching: Literal["auto", "packed", "grouped", "random"] = "auto"
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% slower
    # torch.compile: slower on CPU (0.89-0.96x eager, fp32 and bf16, packed batches) and 25-180 s to compile
    compile: bool = False
    threads: int | None = Field(None, ge=1)  # None: one per free core
    # model.source is a trained run's model: keep its labels in their order, with their head rows
    # as trained, and add the training data's new labels after them (retraining; see retrain.py)
    extend_labels: bool = False

    @model_validator(mode="before")
    @classmethod
    def _old_grouping_key(cls, data: Any) -> Any:
        """Runs trained before ``batching`` existed say ``group_by_length``; retraining reads their config."""
        if isinstance(data, dict) and "group_by_length" in data and "batching" not in data:
            data = dict(data)
            data["batching"] = "grouped" if data.pop("group_by_length") else "random"
        return data

    @field_validator("freeze")
    @classmethod
    def _freeze_form(cls, value: str) -> str:
        if not _FREEZE.match(value):
            raise ValueError(f"'{value}' is not allowed; choose one of: none, embeddings, head_only, bottom:N")
        return value

    @field_validator("eval_every")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be 'epoch' or a positive step count")
        return value


TrackerName = Literal["none", "mlflow", "tensorboard"]


class OutputConfig(_Section):
    dir: str = "runs"
    name: str | None = None  # None: a timestamp plus the task name
    track: list[TrackerName] = []  # where metrics also go: mlflow, tensorboard (RUN/tb/), or both
    tracking_uri: str | None = None  # MLflow: None is sqlite:///<output.dir>/mlflow.db
    experiment: str = "runassist"  # MLflow experiment name

    @field_validator("track", mode="before")
    @classmethod
    def _track_list(cls, value: Any) -> Any:
        # `track: mlflow` is the common case; `track: [mlflow, tensorboard]` for both; none is an empty list.
        if value is None:
            return []
        items = [value] if isinstance(value, str) else value
        return [v for v in items if v != "none"] if isinstance(items, list) else items


class SearchParam(_Section):
    """One key of the search space: a range (``low``, ``high``, ``log``, ``step``) or ``choices``."""

    low: int | float | None = None
    high: int | float | None = None
    log: bool = False  # sample the range on a log scale (learning rates, weight decay)
    step: int | float | None = None  # a grid step inside the range
    choices: list[Any] | None = None  # a categorical choice instead of a range

    @model_validator(mode="after")
    def _one_kind(self) -> "SearchParam":
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("choices: give at least one value")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (a range) or choices")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale range needs low > 0")
        return self

    @property
    def integer(self) -> bool:
        return self.choices is None and all(isinstance(v, int) for v in (self.low, self.high)) \
            and (self.step is None or isinstance(self.step, int))


class SearchConfig(_Section):
    space: dict[str, SearchParam] = {}  # "section.key" -> a range or choices, e.g. train.lr: {low: 1e-5, high: 1e-3}
    metric: str | None = None  # None: the task's headline
    direction: Literal["max", "min"] | None = None  # None: the headline's own direction, else max
    seed: int = 0  # the sampler's seed: the same seed repeats the same trials
    pruner: Literal["auto", "median", "hyperband", "none"] = "auto"  # auto: median, Hyperband from 30 trials
    prune_after: int = Field(3, ge=0)  # complete trials before the pruner judges any
    keep: int = Field(2, ge=1)  # trials whose model weights are kept (the best ones)

    @field_validator("space", mode="before")
    @classmethod
    def _empty_space(cls, value: Any) -> Any:
        return {} if value is None else value


class Config(_Section):
    """The whole config. Instances come from ``load``/``validate``, whose classes narrow ``task``
    to the union of the task table's sections."""

    task: TaskSection
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    output: OutputConfig = OutputConfig()
    search: SearchConfig = SearchConfig()  # read only by `runassist search`

    @field_validator("task", mode="before")
    @classmethod
    def _task_shorthand(cls, value: Any) -> Any:
        # `task: ner` is the common case; `task: {name: classify, multi_label: true}` the full form.
        return {"name": value} if isinstance(value, str) else value


SECTIONS: dict[str, type[BaseModel]] = {
    "task": TaskSection,
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "output": OutputConfig,
    "search": SearchConfig,
}


@functools.lru_cache(maxsize=8)
def _config_class(sections: tuple[tuple[str, type[TaskSection]], ...]) -> type[Config]:
    """Config with ``task`` narrowed to the union of these sections, told apart by ``name``."""
    members = tuple(cls for _, cls in sections)
    if not members:
        raise ConfigError("no tasks are registered")
    union = members[0] if len(members) == 1 else Annotated[Union[members], Field(discriminator="name")]
    return create_model("Config", __base__=Config, task=(union, ...))


def config_class(tasks: TaskSections) -> type[Config]:
    return _config_class(tuple(sorted(tasks.items())))


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), *,
         tasks: TaskSections) -> Config:
    """Read a YAML config (or start from nothing), apply overrides, validate once against the
    sections of ``tasks`` (``runassist.tasks.load_config`` passes the task table's)."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping with sections {', '.join(SECTIONS)}")
    for item in overrides:
        apply_override(raw, item)
    return validate(raw, tasks=tasks)


def validate(raw: dict[str, Any], *, tasks: TaskSections) -> Config:
    task = raw.get("task") if isinstance(raw, dict) else None
    name = task.get("name") if isinstance(task, dict) else task
    if task is None:
        raise ConfigError(f"task: not set; choose one of: {', '.join(sorted(tasks))} (e.g. task: {next(iter(sorted(tasks)))})")
    if not isinstance(name, str) or name not in tasks:
        raise ConfigError(f"task.name: {name!r} is not a known task; choose one of: {', '.join(sorted(tasks))}")
    try:
        return config_class(tasks).model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, tasks)) from None


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``section.key=value`` override in place; the value is parsed as YAML."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override '{item}': expected section.key=value, e.g. train.lr=3e-5")
    parts = key.strip().split(".")
    if parts[0] not in SECTIONS:
        raise ConfigError(f"override '{item}': unknown section '{parts[0]}'; valid sections: {', '.join(SECTIONS)}")
    value = _parse_value(text)
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str) and part == "task":
            child = {"name": child}
        if not isinstance(child, dict):
            child = {}
        node[part] = child
        node = child
    node[parts[-1]] = value


def _parse_value(text: str) -> Any:
    """YAML for numbers, booleans, lists and mappings; the raw text when YAML would eat it
    (`|` and `>` start block scalars, `a: b` would turn a path into a mapping by accident)."""
    stripped = text.strip()
    if not stripped:
        return None
    try:
        value = yaml.safe_load(stripped)
    except yaml.YAMLError:
        return stripped
    if value in (None, "") and stripped not in ("null", "~", "None", "''", '""'):
        return stripped
    return value


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _explain(exc: ValidationError, tasks: TaskSections) -> str:
    """One line per problem, naming the key and the allowed keys or values."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not str(p).startswith(("function-", "literal[", "int", "str", "dict["))]
        if len(loc) > 1 and loc[0] == "task" and loc[1] in tasks:
            loc = [loc[0], *loc[2:]]  # the discriminated union puts the task's name in the location
        # pydantic puts union member names in the location; keep the user's own key path.
        key = ".".join(p for p in loc if not p.startswith(("Literal", "constrained")))
        kind = err["type"]
        if kind == "extra_forbidden":
            parent = _model_at(loc[:-1], tasks, err)
            valid = ", ".join(parent.model_fields) if parent else ""
            lines.append(f"{key}: unknown key '{loc[-1]}'; valid keys of {'.'.join(loc[:-1]) or 'the config'}: {valid}")
        elif kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            lines.append(f"{key}: {err['input']!r} is not allowed; choose one of: {expected.replace(' or ', ', ')}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{key}: {msg} (got {err.get('input')!r})")
    # A union (e.g. eval_every: 'epoch' | int) reports one error per member; say each key once.
    seen: dict[str, str] = {}
    for line in lines:
        seen.setdefault(line.split(":", 1)[0], line)
    return "; ".join(seen.values())


def _model_at(loc: list[str], tasks: TaskSections, err: Any) -> type[BaseModel] | None:
    model: type[BaseModel] = Config
    if loc and loc[0] == "task":
        tagged = [str(p) for p in err["loc"]]
        name = tagged[1] if len(tagged) > 1 and tagged[1] in tasks else None
        if name is None and len(tasks) == 1:
            name = next(iter(tasks))
        if name is None:
            return None
        model, loc = tasks[name], loc[1:]
    for part in loc:
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        candidates = getattr(ann, "__args__", (ann,))
        nxt = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nxt is None:
            return None
        model = nxt
    return model
