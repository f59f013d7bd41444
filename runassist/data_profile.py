"""What a model's inputs and outputs look like, so that drift can be seen.

A profile holds, for a set of inputs and the model's predictions on them: the distribution of
input lengths (words, in fixed buckets), the share of sub-tokens the tokenizer does not know, the
distribution of predicted labels, and the share of predictions below a confidence of
``LOW_CONFIDENCE``. Training writes the reference profile, on dev with the kept model, to
``RUN/model/profile.json``; the service counts the same things in /metrics; `runassist drift`
profiles what the feedback store saw since a date and compares the two.

Shifts in a distribution are measured with the population stability index (PSI), the usual
measure for this in production ML: sum over buckets of (actual - expected) * ln(actual /
expected); by the common rule of thumb under 0.1 is stable, 0.1-0.25 a moderate shift, above
0.25 a large one. Shares are compared as differences.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

WORD_EDGES = (2, 4, 8, 16, 32, 64, 128, 256, 512)  # bucket upper bounds (inclusive); one more bucket above
LOW_CONFIDENCE = 0.5
PSI_MODERATE, PSI_LARGE = 0.1, 0.25
SHARE_SHIFT = 0.1  # a share (unknown tokens, low confidence) moving this much is reported as drift ...
SHARE_Z = 2.58  # ... when the move is also unlikely by chance (two-sided p < 0.01 over the examples counted)
_EPS = 1e-4


def input_words(example: Any) -> int:
    tokens = getattr(example, "tokens", None)
    if tokens is not None:
        return len(tokens)
    parts = [getattr(example, name, None) for name in ("text", "text_pair", "question", "context")]
    text = " ".join(p for p in parts if isinstance(p, str))
    return len(text.split()) if text else 0


def word_bucket(n: int) -> str:
    for edge in WORD_EDGES:
        if n <= edge:
            return f"<={edge}"
    return f">{WORD_EDGES[-1]}"


def _texts(example: Any) -> list[str]:
    tokens = getattr(example, "tokens", None)
    if tokens is not None:
        return [" ".join(tokens)]
    return [p for p in (getattr(example, n, None) for n in ("text", "text_pair", "question", "context"))
            if isinstance(p, str)]


def unknown_rate(processor: Any, examples: Sequence[Any]) -> float | None:
    """Share of sub-tokens that are the tokenizer's unknown token; None without a text tokenizer."""
    unk = getattr(processor, "unk_token_id", None)
    if unk is None or not callable(processor):
        return None
    texts = [t for ex in examples for t in _texts(ex)]
    if not texts:
        return None
    total = unknown = 0
    for start in range(0, len(texts), 256):
        for ids in processor(texts[start:start + 256], add_special_tokens=False)["input_ids"]:
            total += len(ids)
            unknown += sum(1 for i in ids if i == unk)
    return unknown / total if total else None


def build(task: Any, examples: Sequence[Any], outputs: Sequence[dict[str, Any]],
          confidences: Sequence[float | None], processor: Any = None) -> dict[str, Any]:
    """The profile of ``examples`` and the model's JSON ``outputs`` (and their confidences) on them."""
    n = len(examples)
    lengths: dict[str, float] = {}
    for ex in examples:
        b = word_bucket(input_words(ex))
        lengths[b] = lengths.get(b, 0) + 1
    labels: dict[str, float] = {}
    for out in outputs:
        for label in task.json_labels(out):
            labels[label] = labels.get(label, 0) + 1
    n_labels = sum(labels.values())
    known = [c for c in confidences if c is not None]
    return {
        "examples": n,
        "words_mean": round(sum(input_words(ex) for ex in examples) / n, 3) if n else None,
        "words": {k: v / n for k, v in sorted(lengths.items())} if n else {},
        "unknown_rate": unknown_rate(processor, examples) if processor is not None else None,
        "labels": {k: v / n_labels for k, v in sorted(labels.items())} if n_labels else {},
        "labels_per_example": round(n_labels / n, 4) if n else None,
        "low_confidence_share": (sum(1 for c in known if c < LOW_CONFIDENCE) / len(known)) if known else None,
    }


def psi(expected: dict[str, float], actual: dict[str, float]) -> float:
    keys = set(expected) | set(actual)
    total = 0.0
    for k in keys:
        e, a = max(expected.get(k, 0.0), _EPS), max(actual.get(k, 0.0), _EPS)
        total += (a - e) * math.log(a / e)
    return total


def share_z(ref: float, n_ref: int | None, cur: float, n_cur: int | None) -> float | None:
    """The two-proportion z statistic of a share moving from ``ref`` (over ``n_ref`` examples) to ``cur``;
    None without counts. A 0.15 share of 60 predictions against 0.05 of 40 is z = 1.6: a move that
    size happens by chance, so it is not called drift."""
    if not n_ref or not n_cur:
        return None
    pooled = (ref * n_ref + cur * n_cur) / (n_ref + n_cur)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n_ref + 1 / n_cur))
    return 0.0 if spread == 0 else (cur - ref) / spread


def compare(reference: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """Each measure of ``current`` against ``reference``, with whether it drifted."""
    rows = []
    for name, what in (("words", "input length (words)"), ("labels", "predicted labels")):
        if reference.get(name) and current.get(name):
            value = psi(reference[name], current[name])
            level = "large" if value > PSI_LARGE else "moderate" if value > PSI_MODERATE else "stable"
            rows.append({"measure": what, "kind": "psi", "value": round(value, 4), "level": level,
                         "drifted": value > PSI_MODERATE, "reference": reference[name], "current": current[name]})
    for name, what in (("unknown_rate", "unknown sub-tokens"), ("low_confidence_share",
                                                               f"predictions below confidence {LOW_CONFIDENCE}")):
        ref, cur = reference.get(name), current.get(name)
        if ref is not None and cur is not None:
            z = share_z(ref, reference.get("examples"), cur, current.get("examples"))
            shifted = abs(cur - ref) > SHARE_SHIFT and (z is None or abs(z) > SHARE_Z)
            rows.append({"measure": what, "kind": "share", "value": round(cur - ref, 4),
                         "z": None if z is None else round(z, 2), "level": "shifted" if shifted else "stable",
                         "drifted": shifted, "reference": round(ref, 4), "current": round(cur, 4)})
    return {"measures": rows, "drifted": any(r["drifted"] for r in rows),
            "examples": {"reference": reference.get("examples"), "current": current.get("examples")}}
