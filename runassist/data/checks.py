"""The library side of ``runassist check-data``: read every split and say what is wrong.

Errors stop a run from being meaningful (a broken tag sequence, a dev label the model
can never predict, an empty split); warnings are worth knowing (train/dev overlap,
imbalance, text the model will cut or cannot read). Each names ``file:line`` when a
line applies. Rendering is the CLI's job; this module returns plain data.

The driver here does what is the same for every task (reading, overlap between splits, the
unknown-token share); the task (passed in, never named) counts its labels, fills the
statistics and adds its own checks through its check-data hooks (``tasks.default.BaseTask``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from runassist.config import DataConfig
from runassist.errors import DataError, RunassistError

SPLIT_NAMES = ("train", "dev", "test")
UNK_WARN = 0.05
MAX_LISTED = 100  # problems listed per split; the rest are counted  # share of [UNK] sub-tokens past which the model cannot read the text


@dataclass
class SplitStats:
    """What one split holds. ``labels`` counts what the task's label_units give (entity types,
    labels); ``length`` is in the task's unit (words, characters)."""

    spec: str
    examples: int = 0
    words: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    length: dict[str, int] = field(default_factory=dict)  # p50/p90/p99/max
    subtokens: dict[str, int] = field(default_factory=dict)  # same percentiles in sub-tokens, with a processor
    over_max_length: int | None = None  # words / texts past model.max_length (with a processor)
    unk_share: float | None = None  # share of sub-tokens that are the unknown token (with a processor)


@dataclass
class CheckReport:
    task: str
    splits: dict[str, SplitStats] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}


def percentiles(values: Sequence[int]) -> dict[str, int]:
    """Nearest-rank p50/p90/p99/max, so every number is a real example's length."""
    if not values:
        return {}
    ordered = sorted(values)

    def rank(q: float) -> int:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {"p50": rank(0.5), "p90": rank(0.9), "p99": rank(0.99), "max": ordered[-1]}


def label_sources(examples: Sequence[Any], units: Callable[[Any], Iterable[str]]) -> dict[str, tuple[int, str]]:
    """label -> (count, source of its first example)."""
    found: dict[str, tuple[int, str]] = {}
    for ex in examples:
        for label in units(ex):
            count, source = found.get(label, (0, ex.source))
            found[label] = (count + 1, source)
    return found


def overlap_warning(name: str, examples: Sequence[Any], other: str, seen: dict[Hashable, str],
                    key: Callable[[Any], Hashable]) -> str | None:
    hits = [(ex.source, seen[k]) for ex in examples if (k := key(ex)) in seen]
    if not hits:
        return None
    where, there = hits[0]
    return (f"{where}: {len(hits)} of {len(examples)} {name} examples also appear in {other} "
            f"(e.g. this one, as {there}); scores on {name} are optimistic")


def check_data(task: Any, data: DataConfig, *, processor: Any = None) -> CheckReport:
    """Read the configured splits with ``task`` and check them; see the module docstring."""
    report = CheckReport(task.name)
    read: dict[str, list[Any]] = {}
    if not data.train:
        report.errors.append("data.train is not set")
    if not data.dev:
        report.warnings.append("data.dev is not set: no early stopping or best-checkpoint choice without a dev split")
    for name in SPLIT_NAMES:
        spec = getattr(data, name)
        if not spec:
            continue
        try:
            split = task.scan(spec, lenient=True)
        except DataError as exc:  # includes "no examples" for an empty split; already names the file
            report.errors.append(str(exc))
            continue
        except RunassistError as exc:  # an alias or config problem: say which split
            report.errors.append(f"data.{name}: {exc}")
            continue
        # As many as training will read (data.max_train_examples / max_eval_examples).
        limit = data.max_train_examples if name == "train" else data.max_eval_examples
        read[name] = split.examples[:limit]
        report.errors += [str(p) for p in split.problems[:MAX_LISTED]]
        if len(split.problems) > MAX_LISTED:
            report.errors.append(f"{spec}: {len(split.problems) - MAX_LISTED} more problems like these "
                                 f"({len(split.problems)} in all)")
        report.splits[name] = task.split_stats(spec, read[name])

    task.check_labels(read, report)
    for name, other in (("dev", "train"), ("test", "train"), ("test", "dev")):
        if name in read and other in read:
            seen: dict[Hashable, str] = {}
            for ex in read[other]:
                seen.setdefault(task.overlap_key(ex), ex.source)
            message = overlap_warning(name, read[name], other, seen, task.overlap_key)
            if message:
                report.warnings.append(message)
    if processor is not None:
        for name, examples in read.items():
            stats = report.splits[name]
            task.check_processor(name, examples, processor, stats, report)
            if stats.unk_share is not None and stats.unk_share > UNK_WARN:
                report.warnings.append(
                    f"{name}: {stats.unk_share:.0%} of sub-tokens are the unknown token; this model's vocabulary "
                    "does not cover the text (wrong language or casing?)"
                )
    return report
