"""Scores of generated text against one reference text each: ROUGE (``rouge-score``, Google's
reimplementation of the original Perl ROUGE) and BLEU and chrF (``sacrebleu``).

Three traps are closed here, each with a test:

- ``rougeLsum`` is the summary-level LCS over *sentences*, and ``rouge-score`` finds the sentences
  only at newlines. Text without newlines gives rougeLsum == rougeL (the mistake transformers PR
  #7410 fixed in the examples). Both texts are split into one sentence a line first
  (:func:`split_sentences`), by punctuation: the same rule on every machine, where nltk's punkt
  would need a data download.
- ``sacrebleu`` takes references as a list of *streams*, one stream per reference set:
  ``corpus_score(hyps, [refs])``. Passing ``refs`` unwrapped reads each reference text as a stream
  of characters (sacrebleu #272) and gives a wrong score without an error.
- English ROUGE stems (Porter, as the Perl script's -m) and drops non-alphanumerics; that
  tokenizer would throw every Chinese character away, so Chinese is scored on characters (Latin
  and digit runs stay words), and BLEU uses sacrebleu's ``zh`` tokenizer. Other languages are
  scored on Unicode words, unstemmed.

Scales are the libraries' own: ROUGE 0-1 (``rouge-score``), BLEU and chrF 0-100 (``sacrebleu``).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import numpy as np

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
METRICS = (*ROUGE_TYPES, "bleu", "chrf")
LANGUAGES = ("en", "zh", "other")

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RE = re.compile(f"[{_CJK}]")
_ZH_TOKEN = re.compile(f"[{_CJK}]|[^\\W_{_CJK}]+")  # one CJK character, or a run of other letters/digits
_WORD = re.compile(r"[^\W_]+")
# A sentence ends at . ! ? (and their full-width forms) followed by space, or at 。！？ followed by anything.
_SENTENCE_END = re.compile(r"(?<=[.!?！？。])\s+|(?<=[。！？])(?=\S)")


def detect_language(texts: Sequence[str]) -> str:
    """``zh`` when most letters are Chinese characters, ``en`` when most are ASCII, else ``other``
    (from the first 500 texts)."""
    sample = "".join(texts[:500])
    letters = [ch for ch in sample if ch.isalpha()]
    if not letters:
        return "en"
    cjk = sum(1 for ch in letters if _CJK_RE.match(ch))
    if cjk / len(letters) > 0.5:
        return "zh"
    ascii_letters = sum(1 for ch in letters if ch.isascii())
    return "en" if ascii_letters / len(letters) > 0.9 else "other"


def split_sentences(text: str) -> str:
    """The text with one sentence a line, as ``rougeLsum`` needs it. Existing line breaks stay breaks."""
    lines = []
    for paragraph in text.splitlines():
        lines += [s.strip() for s in _SENTENCE_END.split(paragraph.strip()) if s.strip()]
    return "\n".join(lines)


class ChineseTokenizer:
    """``rouge-score`` tokenizer: each Chinese character a token, Latin and digit runs lowercased words,
    punctuation dropped (as the default tokenizer drops it)."""

    def tokenize(self, text: str) -> list[str]:
        return _ZH_TOKEN.findall(text.lower())


class WordTokenizer:
    """``rouge-score`` tokenizer for languages other than English and Chinese: Unicode words, lowercased,
    unstemmed (the default tokenizer keeps only a-z and 0-9, which would drop every accented letter)."""

    def tokenize(self, text: str) -> list[str]:
        return _WORD.findall(text.lower())


def rouge_scorer(language: str, types: Sequence[str] = ROUGE_TYPES) -> Any:
    from rouge_score import rouge_scorer as rs

    if language == "en":
        return rs.RougeScorer(list(types), use_stemmer=True)
    return rs.RougeScorer(list(types), tokenizer=ChineseTokenizer() if language == "zh" else WordTokenizer())


def rouge_items(golds: Sequence[str], preds: Sequence[str], *, language: str,
                types: Sequence[str] = ROUGE_TYPES) -> np.ndarray:
    """Per-example ROUGE F-measures, ``[examples, types]``; both texts one sentence a line."""
    scorer = rouge_scorer(language, types)
    rows = []
    for gold, pred in zip(golds, preds):
        scores = scorer.score(split_sentences(gold), split_sentences(pred))
        rows.append([scores[t].fmeasure for t in types])
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(types))


def _sacrebleu_metric(name: str, language: str) -> Any:
    from sacrebleu.metrics import BLEU, CHRF

    if name == "bleu":
        return BLEU(tokenize="zh" if language == "zh" else "13a")
    return CHRF()


def corpus_score(name: str, golds: Sequence[str], preds: Sequence[str], *, language: str) -> tuple[float, str]:
    """Corpus BLEU or chrF (0-100) and sacrebleu's signature for it."""
    metric = _sacrebleu_metric(name, language)
    if not golds:
        return 0.0, str(metric.get_signature())
    # One reference stream holding every example's reference, wrapped in a list (sacrebleu #272).
    result = metric.corpus_score(list(preds), [list(golds)])
    return float(result.score), str(metric.get_signature())


def score_texts(golds: Sequence[str], preds: Sequence[str], *, language: str) -> dict[str, Any]:
    """ROUGE-1/2/L/Lsum (mean F-measure over examples), corpus BLEU and chrF, exact matches."""
    if language not in LANGUAGES:
        raise ValueError(f"language {language!r}: choose one of {', '.join(LANGUAGES)}")
    out: dict[str, Any] = {}
    items = rouge_items(golds, preds, language=language)
    for i, name in enumerate(ROUGE_TYPES):
        out[name] = float(items[:, i].mean()) if len(items) else 0.0
    out["bleu"], out["bleu_signature"] = corpus_score("bleu", golds, preds, language=language)
    out["chrf"], out["chrf_signature"] = corpus_score("chrf", golds, preds, language=language)
    same = [" ".join(g.split()) == " ".join(p.split()) for g, p in zip(golds, preds)]
    out["exact"] = float(np.mean(same)) if same else 0.0
    out["language"] = language
    return out


# -- paired bootstrap (runs compare) -----------------------------------------------------------------

def item_stats(name: str, golds: Sequence[str], preds: Sequence[str], *, language: str) -> np.ndarray:
    """Per-example statistics whose column sums give the corpus score back through :func:`stat_fn`:
    the F-measure for ROUGE (a mean), sacrebleu's match counts for BLEU and chrF."""
    if name in ROUGE_TYPES:
        return rouge_items(golds, preds, language=language, types=(name,))
    metric = _sacrebleu_metric(name, language)
    stats = metric._extract_corpus_statistics(list(preds), [list(golds)])  # sacrebleu's own bootstrap input
    return np.asarray(stats, dtype=np.float64).reshape(len(golds), -1)


def stat_fn(name: str, n_items: int, *, language: str) -> Callable[[np.ndarray], np.ndarray]:
    """Summed :func:`item_stats` rows ``[m, k]`` -> the metric of each row ``[m]``."""
    if name in ROUGE_TYPES:
        return lambda sums: sums[:, 0] / n_items
    metric = _sacrebleu_metric(name, language)

    def score(sums: np.ndarray) -> np.ndarray:
        return np.array([metric._compute_score_from_stats([int(round(v)) for v in row]).score for row in sums])

    return score
