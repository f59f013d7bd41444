"""The one entry point the tasks use to read a split: an asset alias or a file.

Format: ``data.format`` when set, else the extension. NER reads CoNLL (any extension
but ``.jsonl``/``.json``, since CoNLL files come as .conll, .txt, .bio, .iob, .tsv ...)
or token JSONL; classification reads CSV, TSV, JSONL, plain lines (.txt, unlabelled)
or a ``<label>/<file>.txt`` folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from runassist import assets
from runassist.config import DataConfig
from runassist.data.conll import Problem, scan_conll, scan_token_jsonl
from runassist.data.records import TextExample, TokenExample
from runassist.data.tabular import read_texts, text_format
from runassist.errors import ConfigError, DataError

_JSON = (".jsonl", ".json", ".ndjson")


@dataclass(frozen=True)
class Split:
    """One split as read: examples plus the tag problems that were repaired on the way (NER)."""

    spec: str
    examples: list[TokenExample] | list[TextExample]
    problems: list[Problem] = field(default_factory=list)


def resolve_format(path: Path, *, task: str, fmt: str) -> str:
    """The reader to use: conll / jsonl for ner; csv / tsv / jsonl / lines / folder for classify."""
    if task == "ner":
        if fmt == "csv":
            raise ConfigError("data.format: csv is for classify; NER reads conll (token and tag columns) or jsonl")
        if fmt == "auto":
            return "jsonl" if path.suffix.lower() in _JSON else "conll"
        return "conll" if fmt == "tsv" else fmt  # a two-column TSV is CoNLL
    if task == "classify":
        if fmt == "conll":
            raise ConfigError("data.format: conll is for ner; classify reads csv, tsv or jsonl")
        if fmt != "auto":
            return fmt
        found = text_format(path)
        if found is None:
            raise DataError(
                path, None, f"cannot tell the format from '{path.suffix}'; set data.format (csv, tsv or jsonl)"
            )
        return found
    raise ConfigError(f"task '{task}': expected ner or classify")


def load_split(
    spec: str, *, task: str, data: DataConfig, multi_label: bool = False, require_labels: bool = True
) -> Split:
    """Read one split (alias or path), keeping the repaired tag problems for check-data."""
    if assets.is_alias(spec):
        kind = assets.alias_task(spec)
        if kind != task:
            raise ConfigError(f"'{spec}' is {kind} data but the task is {task}")
        # Packaged data is checked by the tests to have no tag problems.
        split = Split(spec, assets.read_alias(spec))
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise DataError(spec, None, "file not found")
        if path.is_dir() and task == "ner":
            raise DataError(spec, None, "is a folder; NER reads one CoNLL or JSONL file")
        fmt = resolve_format(path, task=task, fmt=data.format)
        if task == "ner":
            scan = (scan_conll if fmt == "conll" else scan_token_jsonl)(
                path, scheme=data.scheme, require_tags=require_labels
            )
            split = Split(spec, scan.examples, scan.problems)
        else:
            examples = read_texts(
                path,
                text_column=data.text_column,
                label_column=data.label_column,
                text_pair_column=data.text_pair_column,
                label_separator=data.label_separator,
                multi_label=multi_label,
                fmt=fmt,
                require_labels=require_labels,
            )
            split = Split(spec, examples)
    if not split.examples:
        raise DataError(spec, None, "no examples")
    return split


def read_examples(
    spec: str, *, task: str, data: DataConfig, multi_label: bool = False, require_labels: bool = True
) -> list[TokenExample] | list[TextExample]:
    """Examples of one split: NER as TokenExample in IOB2, classify as TextExample."""
    return load_split(spec, task=task, data=data, multi_label=multi_label, require_labels=require_labels).examples
