"""Tokenisation cache: a split's features, encoded once and reused by later runs.

A new run gets a new folder, so the cache lives beside the runs, in
``<output.dir>/.cache/features/<key>.jsonl``, where every run under the same output folder
finds it. The key is a SHA-256 of everything the features depend on:

- the examples themselves (tokens, tags, text, labels, offsets: what ``task.encode`` reads;
  hashing the content instead of the file means an edited file, a changed reader option
  or a new tag-scheme repair all miss, while a renamed or copied file still hits);
- the processor: a tokenizer's full ``tokenizer.json`` state (vocabulary, normalizer,
  pre-tokenizer, post-processor), class, input names and special tokens; an image processor's
  or feature extractor's JSON settings;
- the task: name, its config sections (its task section, max_length, stride, ...)
  and the label list (label ids are baked into the targets);
- the code: the source of the task's module and of ``tasks/base.py``, plus FORMAT below,
  so an edit of the encoding code never reads features the old code made;
- ``key_parts`` from the caller, for anything else it knows matters.

Storage is JSON lines (a header line, then one ``[example, inputs, target, meta, size]`` line
per feature), written to a temporary file and renamed. Loading parses JSON only: nothing in a
cache file can execute code (numpy arrays are stored as dtype, shape and base64 bytes, never
pickled). Tuples are kept as tuples (tagged), so a cached feature is equal to a freshly encoded
one. A file that does not parse, or whose header does not match its name and length, counts as
a miss and is rewritten.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import inspect
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from runassist.atomic import atomic_open
from runassist.tasks.base import Feature, TaskState

FORMAT = 3  # bump when the file layout or the key recipe changes
_TUPLE = "__tuple__"
_ARRAY = "__ndarray__"


def cached_encode(task: Any, examples: Sequence[Any], processor: Any, state: TaskState, *, cache_dir: Path | None,
                  key_parts: dict[str, Any] | None = None) -> list[Feature]:
    """``task.encode(examples, processor, state)``, read from ``cache_dir`` when encoded before.

    ``cache_dir=None`` switches the cache off. A cache that cannot be written (read-only
    folder, full disk) is skipped silently: the cache is an optimisation, never a failure.
    """
    if cache_dir is None or not examples or getattr(task, "media", None):
        # Media features are decoded pixels or samples: megabytes of base64 per split in a JSON-lines
        # file would cost more to write and parse than decoding the files again.
        return task.encode(examples, processor, state)
    key = cache_key(task, examples, processor, state, key_parts or {})
    path = Path(cache_dir) / "features" / f"{key}.jsonl"
    loaded = _load(path, key)
    if loaded is not None:
        return loaded
    features = task.encode(examples, processor, state)
    try:
        _save(path, key, features, n_examples=len(examples))
    except OSError:
        pass
    return features


def cache_key(task: Any, examples: Sequence[Any], processor: Any, state: TaskState, key_parts: dict[str, Any]) -> str:
    digest = hashlib.sha256()

    def add(label: str, data: bytes | str) -> None:
        data = data.encode("utf-8") if isinstance(data, str) else data
        digest.update(f"{label}:{len(data)}:".encode())
        digest.update(data)

    add("format", str(FORMAT))
    add("task", str(getattr(task, "name", type(task).__name__)))
    add("settings", _json({name: _dump(getattr(task, name)) for name in ("task_cfg", "model_cfg")
                           if hasattr(task, name)}))
    add("labels", _json(state.labels))
    add("extras", _json(state.extras))  # what encode may read besides the labels (a relation run's mention types)
    add("caller", _json(key_parts))
    add("processor", processor_fingerprint(processor))
    add("code", code_fingerprint(task))
    add("examples", examples_fingerprint(examples))
    return digest.hexdigest()


def processor_fingerprint(processor: Any) -> str:
    backend = getattr(processor, "backend_tokenizer", None)
    if backend is not None:
        state = backend.to_str()
    elif hasattr(processor, "to_json_string"):  # image processors, feature extractors
        state = processor.to_json_string()
    else:
        state = repr(processor)
    extra = {"class": type(processor).__name__,
             "inputs": list(getattr(processor, "model_input_names", []) or []),
             "specials": {k: str(v) for k, v in (getattr(processor, "special_tokens_map", {}) or {}).items()},
             "pad": getattr(processor, "pad_token_id", None)}
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

def _save(path: Path, key: str, features: Sequence[Feature], *, n_examples: int) -> None:
    with atomic_open(path) as handle:  # readers see the whole file or none of it
        header = {"format": FORMAT, "key": key, "features": len(features), "examples": n_examples}
        handle.write(json.dumps(header) + "\n")
        for f in features:
            handle.write(json.dumps([f.example, _tag(f.inputs), _tag(f.target), _tag(f.meta), f.size],
                                    separators=(",", ":"), ensure_ascii=False) + "\n")


def _load(path: Path, key: str) -> list[Feature] | None:
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            header = json.loads(handle.readline())
            if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("key") != key:
                return None
            features = []
            for line in handle:
                example, inputs, target, meta, size = json.loads(line)
                features.append(Feature(example=example, inputs=_untag(inputs), target=_untag(target),
                                        meta=_untag(meta), size=size))
    except (OSError, ValueError, TypeError):
        return None
    if len(features) != header.get("features"):
        return None  # a truncated file: encode again
    return features


# -- JSON helpers ---------------------------------------------------------------------------------

def _tag(value: Any) -> Any:
    """JSON that keeps tuples apart from lists (NER meta is a list of (word, position, context)) and
    numpy arrays exact (dtype, shape, raw bytes in base64)."""
    if isinstance(value, np.ndarray):
        data = base64.b64encode(np.ascontiguousarray(value).tobytes()).decode("ascii")
        return {_ARRAY: [value.dtype.str, list(value.shape), data]}
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
        if len(value) == 1 and _ARRAY in value:
            dtype, shape, data = value[_ARRAY]
            if np.dtype(dtype).hasobject:  # only plain numbers: an object array would need pickle
                raise ValueError("object arrays are not cached")
            return np.frombuffer(base64.b64decode(data), dtype=np.dtype(dtype)).reshape(shape).copy()
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
