"""`runassist queue`: which unlabelled inputs a person should label next.

Inputs are ranked by how unsure the model is of them:

* ``margin``: the smallest gap between the top two logits anywhere in the input (for NER, the
  least certain token of the sentence: one unsure token is one likely wrong entity);
* ``entropy``: the largest entropy of the predicted distribution anywhere in the input;
* ``random``: no model opinion (the baseline any active-learning claim should beat).

A share of random picks is mixed into the uncertain ones (``random_share``): ranking by
uncertainty alone keeps picking the same kind of hard or noisy input and drifts away from the
data's real distribution. Near-duplicates (the same words up to case, digits and punctuation,
or 80% of their word trigrams shared) are dropped, so a person never labels one tweet twice.
The picks come out with the model's own prediction as a pre-annotation, in a format a person
corrects (CoNLL for NER, JSONL otherwise).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from runassist.atomic import atomic_write
from runassist.errors import DataError, RunassistError

STRATEGIES = ("margin", "entropy", "random")
NEAR_DUPLICATE = 0.8


def uncertainty(task: Any, predictor: Any, examples: Sequence[Any], strategy: str) -> list[float]:
    """One number per example, higher = less sure (margins are negated so every strategy sorts the same)."""
    from runassist.inference import outputs_for

    if strategy == "random":
        return [0.0] * len(examples)
    features = task.encode(examples, predictor.processor, predictor.state)
    outputs = outputs_for(task, predictor.model, features, predictor.processor, predictor.state,
                          batch_size=predictor.batch_size)
    per_feature: list[float]
    if strategy == "margin":
        if not hasattr(task, "margins"):
            raise RunassistError(f"--strategy margin: a {task.name} model gives no margins; use entropy or random")
        per_feature = [-m for m in task.margins(features, outputs, predictor.state)]
    else:
        per_feature = [_entropy(np.asarray(out, dtype=np.float64)) for out in outputs]
    scores = [-np.inf] * len(examples)
    for feature, value in zip(features, per_feature):
        scores[feature.example] = max(scores[feature.example], value)
    return [float(s) for s in scores]


def _entropy(logits: np.ndarray) -> float:
    if logits.ndim == 0 or logits.shape[-1] < 2:
        return 0.0
    z = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    h = -(p * np.log(np.clip(p, 1e-12, 1))).sum(axis=-1)
    return float(np.max(h))


def _words(example: Any) -> list[str]:
    tokens = getattr(example, "tokens", None)
    text = " ".join(tokens) if tokens else str(getattr(example, "text", example))
    return re.sub(r"[\d\W_]+", " ", text.lower()).split()


def _shingles(words: list[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + 3]) for i in range(max(1, len(words) - 2))}


def pick(examples: Sequence[Any], scores: Sequence[float], k: int, *, random_share: float = 0.1,
         seed: int = 0) -> list[tuple[int, str]]:
    """Indices of the examples to label, with why: the most uncertain first, then random picks; near-
    duplicates of an earlier pick skipped."""
    if k < 1:
        raise RunassistError(f"-k {k}: ask for at least one input")
    if not 0 <= random_share <= 1:
        raise RunassistError(f"--random-share {random_share}: give a share from 0 to 1")
    rng = random.Random(seed)
    n_random = round(k * random_share)
    ranked = sorted(range(len(examples)), key=lambda i: (-scores[i], i))
    shuffled = list(range(len(examples)))
    rng.shuffle(shuffled)
    chosen: list[tuple[int, str]] = []
    taken: set[int] = set()
    seen_keys: set[str] = set()
    seen_shingles: list[set] = []

    def take(i: int, why: str) -> bool:
        words = _words(examples[i])
        key = " ".join(words)
        if i in taken or key in seen_keys:
            return False
        sh = _shingles(words)
        if any(len(sh & other) / max(1, len(sh | other)) >= NEAR_DUPLICATE for other in seen_shingles):
            return False
        taken.add(i)
        seen_keys.add(key)
        seen_shingles.append(sh)
        chosen.append((i, why))
        return True

    for i in ranked:
        if len(chosen) >= k - n_random:
            break
        take(i, "uncertain")
    for i in shuffled:
        if len(chosen) >= k:
            break
        take(i, "random")
    return chosen


def read_pool(task: Any, source: str) -> list[Any]:
    """Unlabelled inputs: plain text (one a line) or a file the task reads (labels, if any, ignored)."""
    path = Path(source)
    if not path.is_file():
        raise DataError(source, None, "file not found")
    if path.suffix.lower() in (".txt", ".text", ""):
        lines = [line for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        examples = []
        for n, line in enumerate(lines, 1):
            try:
                examples.append(task.example_from_input(line))
            except ValueError as exc:
                raise DataError(source, n, str(exc)) from None
        return examples
    return [task.unlabelled(ex) for ex in task.read(source, require_labels=False)]


def build_queue(predictor: Any, examples: Sequence[Any], *, k: int, strategy: str = "margin",
                random_share: float = 0.1, seed: int = 0) -> list[dict[str, Any]]:
    """The picks, each with its index in the pool, score, reason and the model's prediction."""
    if strategy not in STRATEGIES:
        raise RunassistError(f"--strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if not examples:
        raise RunassistError("the pool is empty")
    task = predictor.task
    scores = uncertainty(task, predictor, examples, strategy)
    chosen = pick(examples, scores, k, random_share=random_share if strategy != "random" else 1.0, seed=seed)
    picked = [examples[i] for i, _ in chosen]
    predictions = predictor.predict_examples(picked)
    return [{"index": i, "score": scores[i], "reason": why, "example": ex, "prediction": p}
            for (i, why), ex, p in zip(chosen, picked, predictions)]


def write_queue(task: Any, rows: Sequence[dict[str, Any]], output: str | Path) -> Path:
    """CoNLL (the model's tags to correct) when the output ends in .conll and the task writes it, else
    JSON lines: the input, the model's prediction, the score and why it was picked."""
    output = Path(output)
    if output.suffix.lower() == ".conll":
        if "conll" not in task.output_formats:
            raise RunassistError(f"{output}: a {task.name} run writes its queue as .jsonl")
        text = task.format_output("conll", [r["example"] for r in rows], [r["prediction"] for r in rows])
    else:
        text = "".join(json.dumps({"pool_index": r["index"], "score": r["score"], "reason": r["reason"],
                                   **task.to_json(r["example"], r["prediction"])}, ensure_ascii=False) + "\n"
                       for r in rows)
    atomic_write(output, text)
    return output
