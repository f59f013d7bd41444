"""Word and character error rates (WER, CER) of transcripts, with ``jiwer`` after one normalisation.

Scoring raw text makes "Seven." against "seven" a substitution: a model is then judged on casing and
punctuation it was never asked to write (and most CTC vocabularies cannot write). So both sides are
normalised first, always the same way (``normalize``):

1. Unicode NFKC, then lower-case (``str.lower``);
2. apostrophes are removed (``don't`` -> ``dont``: one word either way); every other punctuation
   mark (Unicode category P*) and symbol (S*) becomes a space (``well-known`` -> ``well known``);
3. white space is collapsed to single spaces and stripped.

Rates are corpus-level, as jiwer and the field report them: the errors of every utterance (substitutions,
deletions, insertions) summed, over the reference words (characters for CER) summed, not a mean of
per-utterance rates. jiwer refuses an empty reference; an utterance whose reference is empty after
normalisation counts each hypothesis word (character) as an insertion and adds no reference words.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np

_APOSTROPHES = {"'", "\u2019", "\u02bc", "`"}


def normalize(text: str) -> str:
    """The text as it is scored (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text).lower()
    out = []
    for ch in text:
        if ch in _APOSTROPHES:
            continue
        out.append(" " if unicodedata.category(ch)[0] in "PS" else ch)
    return " ".join("".join(out).split())


def item_counts(references: Sequence[str], hypotheses: Sequence[str], *, unit: str = "word") -> np.ndarray:
    """Per utterance ``[errors, reference length]`` in words (``unit="word"``) or characters
    (``"char"``), after normalisation: ``[n, 2]``. Summed rows give corpus WER/CER (errors / length)."""
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    rows = np.zeros((len(references), 2), dtype=np.int64)
    process = jiwer.process_words if unit == "word" else jiwer.process_characters
    for i, (ref, hyp) in enumerate(zip(references, hypotheses)):
        ref, hyp = normalize(ref), normalize(hyp)
        if not ref:
            rows[i] = (len(hyp.split()) if unit == "word" else len(hyp), 0)
            continue
        out = process(ref, hyp)
        errors = out.substitutions + out.deletions + out.insertions
        rows[i] = (errors, out.hits + out.substitutions + out.deletions)
    return rows


def rate(counts: np.ndarray) -> float:
    """Errors over reference length of summed ``item_counts`` rows (0 for no reference and no errors)."""
    errors, length = (int(v) for v in np.asarray(counts).reshape(-1, 2).sum(axis=0))
    if length == 0:
        return 0.0 if errors == 0 else float("inf")
    return errors / length


def score_transcripts(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, Any]:
    """``wer``, ``cer`` (corpus level, normalised), ``exact`` (share of utterances whose normalised
    hypothesis equals the reference), the counts behind the rates, and ``utterances``."""
    words, chars = item_counts(references, hypotheses), item_counts(references, hypotheses, unit="char")
    exact = sum(normalize(r) == normalize(h) for r, h in zip(references, hypotheses))
    n = max(len(references), 1)
    return {"wer": rate(words), "cer": rate(chars), "exact": exact / n,
            "word_errors": int(words[:, 0].sum()), "reference_words": int(words[:, 1].sum()),
            "char_errors": int(chars[:, 0].sum()), "reference_chars": int(chars[:, 1].sum()),
            "utterances": len(references)}


def utterance_rates(references: Sequence[str], hypotheses: Sequence[str]) -> list[float]:
    """Each utterance's own WER (the report sorts by it to show the worst)."""
    return [rate(row) for row in item_counts(references, hypotheses)]


def corpus_rate_fn(sums: np.ndarray) -> np.ndarray:
    """For ``bootstrap.paired_bootstrap_counts``: summed ``[errors, length]`` rows ``[m, 2]`` -> rates ``[m]``."""
    sums = np.asarray(sums, dtype=np.float64)
    return sums[:, 0] / np.maximum(sums[:, 1], 1.0)
