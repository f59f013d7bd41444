"""Tokenisation cache: a split's features, encoded once and reused by later runs.

A new run gets a new folder, so the cache lives beside the runs, in
``<output.dir>/.cache/features/<key>.jsonl``, where every run under the same output folder
finds it. The key is a SHA-256 of everything the features depend on:

- the examples themselves (tokens, tags, text, labels, offsets: what ``task.encode`` reads;
  hashing the content instead of the file means an edited file, a changed reader option
  or a new tag-scheme repair all miss, while a renamed or copied file still hits);
- the tokenizer: its full ``tokenizer.json`` state (vocabulary, normalizer, pre-tokenizer,
  post-processor), class, input names and special tokens;
- the task: name, its config sections (max_length, stride, long_text, multi_label, ...)
  and the label list (label ids are baked into the targets);
- the code: the source of the task's module and of ``tasks/base.py``, plus FORMAT below,
  so an edit of the encoding code never reads features the old code made;
- ``key_parts`` from the caller, for anything else it knows matters.

Storage is JSON lines (a header line, then one ``[example, inputs, target, meta]`` line per
feature), written to a temporary file and renamed. Loading parses JSON only: nothing in a
cache file can execute code. Tuples are kept as tuples (tagged), so a cached feature is
equal to a freshly encoded one. A file that does not parse, or whose header does not match
its name and length, counts as a miss and is rewritten.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

from runassist.tasks.base import Feature, TaskState

FORMAT = 1  # bump when the file layout or the key recipe changes
_TUPLE = "__tuple__"
# Attributes a task's encode() sets as a side effect, restored on a hit (classify counts truncations).
_SIDE_EFFECTS = ("last_truncated",)


def cached_encode(task: Any, examples: Sequence[Any], tokenizer: Any, state: TaskState, *, cache_dir: Path | None,
                  key_parts: dict[str, Any] | None = None) -> list[Feature]:
    """``task.encode(examples, tokenizer, state)``, read from ``cache_dir`` when encoded before.

    ``cache_dir=None`` switches the cache off. A cache that cannot be written (read-only
    folder, full disk) is skipped silently: the cache is an optimisation, never a failure.
    """
    if cache_dir is None or not examples:
        return task.encode(examples, tokenizer, state)
    key = cache_key(task, examples, tokenizer, state, key_parts or {})
    path = Path(cache_dir) / "features" / f"{key}.jsonl"
    loaded = _load(path, key)
    if loaded is not None:
        features, side = loaded
        for name, value in side.items():
            if name in _SIDE_EFFECTS and hasattr(task, name):  # a cache file may not set anything else
                setattr(task, name, value)
        return features
    features = task.encode(examples, tokenizer, state)
    side = {name: getattr(task, name) for name in _SIDE_EFFECTS if _plain(getattr(task, name, None))}
    try:
        _save(path, key, features, side, n_examples=len(examples))
    except OSError:
        pass
    return features


def cache_key(task: Any, examples: Sequence[Any], tokenizer: Any, state: TaskState, key_parts: dict[str, Any]) -> str:
    digest = hashlib.sha256()

    def add(label: str, data: bytes | str) -> None:
        data = data.encode("utf-8") if isinstance(data, str) else data
        digest.update(f"{label}:{len(data)}:".encode())
        digest.update(data)

    add("format", str(FORMAT))
    add("task", str(getattr(task, "name", type(task).__name__)))
    add("settings", _json({name: _dump(getattr(task, name)) for name in ("task_cfg", "model_cfg")
                           if hasattr(task, name)}))
    add("labels", _json(list(state.labels)))
    add("caller", _json(key_parts))
    add("tokenizer", tokenizer_fingerprint(tokenizer))
    add("code", code_fingerprint(task))
    add("examples", examples_fingerprint(examples))
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    state = backend.to_str() if backend is not None else repr(tokenizer)
    extra = {"class": type(tokenizer).__name__,
             "inputs": list(getattr(tokenizer, "model_input_names", []) or []),
             "specials": {k: str(v) for k, v in (getattr(tokenizer, "special_tokens_map", {}) or {}).items()},
             "pad": getattr(tokenizer, "pad_token_id", None)}
    return hashlib.sha256((state + _json(extra)).encode("utf-8")).hexdigest()


def code_fingerprint(task: Any) -> str:
    from runassist.tasks import base

    digest = hashlib.sha256()
    for module in (inspect.getmodule(type(task)), base):
        source = inspect.getsourcefile(module) if module is not None else None
        if source and os.path.isfile(source):
            digest.update(Path(source).read_bytes())
    return digest.hexdigest()


def examples_fingerprint(examples: Sequence[Any]) -> str:
    digest = hashlib.sha256()
    for ex in examples:
        if dataclasses.is_dataclass(ex):
            # ``source`` (file:line) only names where the example came from; encode never reads it.
            fields = {f.name: getattr(ex, f.name) for f in dataclasses.fields(ex) if f.name != "source"}
        else:
            fields = {"repr": repr(ex)}
        digest.update(_json(_dump(fields)).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


# -- files ----------------------------------------------------------------------------------------

def _save(path: Path, key: str, features: Sequence[Feature], side: dict[str, Any], *, n_examples: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            header = {"format": FORMAT, "key": key, "features": len(features), "examples": n_examples,
                      "side": side}
            handle.write(json.dumps(header) + "\n")
            for f in features:
                handle.write(json.dumps([f.example, f.inputs, _tag(f.target), _tag(f.meta)],
                                        separators=(",", ":"), ensure_ascii=False) + "\n")
        os.replace(tmp, path)  # readers see the whole file or none of it
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load(path: Path, key: str) -> tuple[list[Feature], dict[str, Any]] | None:
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            header = json.loads(handle.readline())
            if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("key") != key:
                return None
            features = []
            for line in handle:
                example, inputs, target, meta = json.loads(line)
                features.append(Feature(example=example, inputs=inputs, target=_untag(target), meta=_untag(meta)))
    except (OSError, ValueError, TypeError):
        return None
    if len(features) != header.get("features"):
        return None  # a truncated file: encode again
    side = header.get("side") if isinstance(header.get("side"), dict) else {}
    return features, side


# -- JSON helpers ---------------------------------------------------------------------------------

def _tag(value: Any) -> Any:
    """JSON that keeps tuples apart from lists (NER meta is a list of (word, position, context))."""
    if isinstance(value, tuple):
        return {_TUPLE: [_tag(v) for v in value]}
    if isinstance(value, list):
        return [_tag(v) for v in value]
    if isinstance(value, dict):
        return {k: _tag(v) for k, v in value.items()}
    return value


def _untag(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and _TUPLE in value:
            return tuple(_untag(v) for v in value[_TUPLE])
        return {k: _untag(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_untag(v) for v in value]
    return value


def _dump(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _dump(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _dump(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_dump(v) for v in value]
    return value


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _plain(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool)) and value is not None
