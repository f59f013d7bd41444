"""The library side of ``runassist check-data``: read every split and say what is wrong.

Errors stop a run from being meaningful (a broken tag sequence, a dev label the model
can never predict, an empty split); warnings are worth knowing (train/dev overlap,
imbalance, text the model will cut or cannot read). Each names ``file:line`` when a
line applies. Rendering is the CLI's job; this module returns plain data.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from runassist.config import DataConfig, ModelConfig
from runassist.data.conll import spans_from_iob2
from runassist.data.load import load_split
from runassist.data.records import TextExample, TokenExample
from runassist.errors import DataError, RunassistError

SPLIT_NAMES = ("train", "dev", "test")
IMBALANCE_WARN = 10.0  # most/least frequent label in train; past this, plain accuracy misleads
UNK_WARN = 0.05  # share of [UNK] sub-tokens past which the model cannot read the text
_BATCH = 512


@dataclass
class SplitStats:
    """What one split holds. NER ``labels`` counts entities by type; classify counts labels."""

    spec: str
    examples: int = 0
    words: int = 0  # NER tokens; classify white-space words
    labels: dict[str, int] = field(default_factory=dict)
    length: dict[str, int] = field(default_factory=dict)  # p50/p90/p99/max: NER words, classify characters
    subtokens: dict[str, int] = field(default_factory=dict)  # same percentiles in sub-tokens, with a tokenizer
    over_max_length: int | None = None  # NER words / classify texts past model.max_length (tokenizer only)
    unk_share: float | None = None  # share of sub-tokens that are the unknown token (tokenizer only)


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


def _label_sources(task: str, examples: Sequence[Any]) -> dict[str, tuple[int, str]]:
    """label -> (count, source of its first example)."""
    found: dict[str, tuple[int, str]] = {}
    for ex in examples:
        if task == "ner":
            labels = [kind for _, _, kind in spans_from_iob2(ex.tags or ())]
        else:
            labels = list(ex.labels)
        for label in labels:
            count, source = found.get(label, (0, ex.source))
            found[label] = (count + 1, source)
    return found


def _key(task: str, ex: Any) -> tuple[Any, ...]:
    if task == "ner":
        return ex.tokens
    return (" ".join(ex.text.split()), " ".join(ex.text_pair.split()) if ex.text_pair else None)


def _overlap(task: str, name: str, examples: Sequence[Any], other: str, seen: dict[tuple[Any, ...], str]) -> str | None:
    hits = [(ex.source, seen[_key(task, ex)]) for ex in examples if _key(task, ex) in seen]
    if not hits:
        return None
    where, there = hits[0]
    return (f"{where}: {len(hits)} of {len(examples)} {name} examples also appear in {other} "
            f"(e.g. this one, as {there}); scores on {name} are optimistic")


def _ner_tokens(
    split: SplitStats, examples: Sequence[TokenExample], tokenizer: Any, max_length: int
) -> tuple[int, str]:
    """Fill sub-token stats; count words past max_length. Returns words that become no sub-token
    at all (zero-width spaces, control characters: never tagged) and the first such example."""
    specials = tokenizer.num_special_tokens_to_add()
    room = max_length - specials
    lengths, cut, unk, total, missing, first = [], 0, 0, 0, 0, ""
    for i in range(0, len(examples), _BATCH):
        chunk = examples[i : i + _BATCH]
        enc = tokenizer([list(ex.tokens) for ex in chunk], is_split_into_words=True, add_special_tokens=False,
                        truncation=False, verbose=False)
        for n, (ex, ids) in enumerate(zip(chunk, enc["input_ids"])):
            word_ids = enc.word_ids(n)
            lengths.append(len(ids) + specials)
            cut += len({w for pos, w in enumerate(word_ids) if pos >= room and w is not None})
            unk += sum(1 for t in ids if t == tokenizer.unk_token_id)
            total += len(ids)
            lost = len(ex.tokens) - len({w for w in word_ids if w is not None})
            if lost and not first:
                first = ex.source
            missing += lost
    split.subtokens = percentiles(lengths)
    split.over_max_length = cut
    split.unk_share = unk / total if total else 0.0
    return missing, first


def _text_tokens(split: SplitStats, examples: Sequence[TextExample], tokenizer: Any, max_length: int) -> None:
    lengths, unk, total = [], 0, 0
    for i in range(0, len(examples), _BATCH):
        chunk = examples[i : i + _BATCH]
        texts = [ex.text for ex in chunk]
        pairs = [ex.text_pair or "" for ex in chunk] if any(ex.text_pair for ex in chunk) else None
        enc = tokenizer(texts, pairs, truncation=False, verbose=False)
        for ids in enc["input_ids"]:
            lengths.append(len(ids))
            unk += sum(1 for t in ids if t == tokenizer.unk_token_id)
            total += len(ids)
    split.subtokens = percentiles(lengths)
    split.over_max_length = sum(1 for n in lengths if n > max_length)
    split.unk_share = unk / total if total else 0.0


def check_data(
    task_name: str,
    data: DataConfig,
    model: ModelConfig,
    *,
    tokenizer: Any = None,
    multi_label: bool = False,
) -> CheckReport:
    """Read the configured splits and check them; see the module docstring for what counts as an error."""
    report = CheckReport(task_name)
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
            split = load_split(spec, task=task_name, data=data, multi_label=multi_label)
        except DataError as exc:  # includes "no examples" for an empty split; already names the file
            report.errors.append(str(exc))
            continue
        except RunassistError as exc:  # an alias or config problem: say which split
            report.errors.append(f"data.{name}: {exc}")
            continue
        read[name] = split.examples
        report.errors += [str(p) for p in split.problems]
        report.splits[name] = _stats(task_name, spec, split.examples)

    _label_checks(report, task_name, read)
    _overlap_checks(report, task_name, read)
    if tokenizer is not None:
        _tokenizer_checks(report, task_name, read, tokenizer, model)
    return report


def _stats(task: str, spec: str, examples: Sequence[Any]) -> SplitStats:
    stats = SplitStats(spec, examples=len(examples))
    if task == "ner":
        stats.words = sum(len(ex.tokens) for ex in examples)
        stats.length = percentiles([len(ex.tokens) for ex in examples])
    else:
        stats.words = sum(len(ex.text.split()) + len((ex.text_pair or "").split()) for ex in examples)
        stats.length = percentiles([len(ex.text) + len(ex.text_pair or "") for ex in examples])
    stats.labels = dict(sorted(Counter({k: v[0] for k, v in _label_sources(task, examples).items()}).items()))
    return stats


def _label_checks(report: CheckReport, task: str, read: dict[str, list[Any]]) -> None:
    if "train" not in read:
        return
    train = _label_sources(task, read["train"])
    what = "entity type" if task == "ner" else "label"
    if not train:
        report.errors.append(f"train: no {what}s at all; the model would have nothing to learn")
    for name in ("dev", "test"):
        for label, (count, source) in _label_sources(task, read.get(name, [])).items():
            if label not in train:
                report.errors.append(f"{source}: {what} '{label}' ({count} in {name}) never appears in train")
    if task == "classify" and len(train) >= 2:
        counts = sorted(count for count, _ in train.values())
        ratio = counts[-1] / counts[0]
        if ratio >= IMBALANCE_WARN:
            rare = min(train, key=lambda k: train[k][0])
            report.warnings.append(
                f"train: labels are imbalanced {ratio:.0f}:1 (rarest '{rare}', {train[rare][0]} examples); "
                "consider train.class_weights: balanced and read per-label F1, not accuracy"
            )
    if task == "classify" and len(train) == 1:
        report.errors.append(f"train: only one label ('{next(iter(train))}'); a classifier needs two or more")


def _overlap_checks(report: CheckReport, task: str, read: dict[str, list[Any]]) -> None:
    for name, other in (("dev", "train"), ("test", "train"), ("test", "dev")):
        if name in read and other in read:
            seen: dict[tuple[Any, ...], str] = {}
            for ex in read[other]:
                seen.setdefault(_key(task, ex), ex.source)
            message = _overlap(task, name, read[name], other, seen)
            if message:
                report.warnings.append(message)


def _tokenizer_checks(
    report: CheckReport, task: str, read: dict[str, list[Any]], tokenizer: Any, model: ModelConfig
) -> None:
    for name, examples in read.items():
        stats = report.splits[name]
        if task == "ner":
            missing, first = _ner_tokens(stats, examples, tokenizer, model.max_length)
            if stats.over_max_length:
                report.warnings.append(
                    f"{name}: {stats.over_max_length} of {stats.words} words fall past model.max_length="
                    f"{model.max_length} sub-tokens; they are only tagged through windows (model.stride="
                    f"{model.window_stride}); a larger max_length sees more context"
                )
            if missing:
                report.warnings.append(
                    f"{first}: {missing} words in {name} become no sub-token at all (e.g. zero-width or control "
                    "characters) and are predicted O"
                )
        else:
            _text_tokens(stats, examples, tokenizer, model.max_length)
            if stats.over_max_length:
                fate = ("cut at the end (model.long_text: windows reads them whole)" if model.long_text == "truncate"
                        else "read as averaged windows")
                report.warnings.append(
                    f"{name}: {stats.over_max_length} of {stats.examples} texts are longer than model.max_length="
                    f"{model.max_length} sub-tokens and will be {fate}"
                )
        if stats.unk_share is not None and stats.unk_share > UNK_WARN:
            report.warnings.append(
                f"{name}: {stats.unk_share:.0%} of sub-tokens are the unknown token; this model's vocabulary "
                "does not cover the text (wrong language or casing?)"
            )
