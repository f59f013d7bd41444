"""Extractive QA scores by the reference rules: SQuAD v1.1/v2.0 exact match and F1, and the
character-level F1 of CMRC 2018 for Chinese.

SQuAD (``evaluate-v2.0.py``, which equals v1.1 on answerable questions): answers are normalised
(lower case, punctuation removed, the articles a/an/the removed, white space collapsed); F1 is
over the bag of normalised words; each prediction takes the best score over the gold answers.
A question without an answer has the gold answer ``""``: only an empty prediction scores 1.

CMRC 2018 (``cmrc2018_evaluate.py``): text is lower-cased and split into single CJK characters and
punctuation marks, with runs of other characters kept as words (the reference tokenises those
runs with NLTK; here a regex gives the same units for what such runs hold in Chinese text: Latin
words, numbers such as 1.5 and 1,000 kept whole, other marks one by one). F1 is over the longest common
*substring* of the two token lists, not a bag; EM compares the strings with punctuation removed.

Scores are fractions (0..1), like every other metric here, not the reference scripts' percents.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact(gold: str, pred: str) -> float:
    return float(normalize_answer(gold) == normalize_answer(pred))


def f1(gold: str, pred: str) -> float:
    gold_tokens, pred_tokens = normalize_answer(gold).split(), normalize_answer(pred).split()
    if not gold_tokens or not pred_tokens:
        return float(gold_tokens == pred_tokens)
    same = sum((Counter(gold_tokens) & Counter(pred_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_answers(answers: Sequence[str]) -> list[str]:
    """The gold answers a prediction is scored against: those that are not empty after
    normalisation, or ``[""]`` for a question without an answer."""
    kept = [a for a in answers if normalize_answer(a)]
    return kept or [""]


# -- CMRC 2018 (Chinese) ----------------------------------------------------------------------------

# The reference's list, element by element: it holds "……" as one two-character string, which no
# single character equals, so a lone "…" is kept, as the reference keeps it.
_CMRC_PUNCT = {"-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=", "，", "。", "：", "？", "！", "“", "”", "；", "’",
               "《", "》", "……", "·", "、", "「", "」", "（", "）", "－", "～", "『", "』"}
_CJK = re.compile(r"[\u4e00-\u9fa5]")
# NLTK's word_tokenize on what such runs hold: numbers with their decimal point or thousands
# separator whole (1.5, 1,000), words, then each other mark on its own.
_WORDS = re.compile(r"\d+(?:[.,]\d+)+|\w+|[^\w\s]", re.UNICODE)


def mixed_segmentation(text: str, *, remove_punctuation: bool = False) -> list[str]:
    out: list[str] = []
    run = ""
    for ch in text.lower().strip():
        if remove_punctuation and ch in _CMRC_PUNCT:
            continue
        if _CJK.match(ch) or ch in _CMRC_PUNCT:
            out += _WORDS.findall(run)
            run = ""
            out.append(ch)
        else:
            run += ch
    return out + _WORDS.findall(run)


def _without_punctuation(text: str) -> str:
    return "".join(ch for ch in text.lower().strip() if ch not in _CMRC_PUNCT)


def longest_common_substring(a: Sequence[str], b: Sequence[str]) -> int:
    best = 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            if x == y:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def char_f1(gold: str, pred: str) -> float:
    gold_tokens = mixed_segmentation(gold, remove_punctuation=True)
    pred_tokens = mixed_segmentation(pred, remove_punctuation=True)
    if not gold_tokens or not pred_tokens:
        # The reference scores 0 here; "no answer" against "no answer" (SQuAD v2 style) is right.
        return float(not gold.strip() and not pred.strip())
    same = longest_common_substring(gold_tokens, pred_tokens)
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def char_exact(gold: str, pred: str) -> float:
    return float(_without_punctuation(gold) == _without_punctuation(pred))


# -- a whole split --------------------------------------------------------------------------------

def score_answers(gold: Sequence[Sequence[str]], pred: Sequence[str], *, unit: str = "word") -> dict[str, float]:
    """Exact match and F1 over questions (``gold``: each question's answers, empty when it has
    none; ``pred``: the predicted answer, "" for no answer). ``unit``: ``word`` (SQuAD) or ``char``
    (CMRC 2018). With any unanswerable question, the HasAns_/NoAns_ breakdown too."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} questions but {len(pred)} predictions")
    em_fn, f1_fn = (char_exact, char_f1) if unit == "char" else (exact, f1)
    rows = []
    for answers, answer in zip(gold, pred):
        golds = scored_answers(answers, unit)
        # Whether a question has an answer is read from its answers as given (evaluate-v2.0.py's
        # qid_to_has_ans), not after normalisation.
        rows.append((bool(answers), max(em_fn(g, answer) for g in golds), max(f1_fn(g, answer) for g in golds)))
    out = _averages(rows, "")
    if any(not has for has, _, _ in rows):  # SQuAD v2 data: the breakdown, as the reference gives it
        if any(has for has, _, _ in rows):
            out.update(_averages([r for r in rows if r[0]], "HasAns_"))
        out.update(_averages([r for r in rows if not r[0]], "NoAns_"))
    return out


def scored_answers(answers: Sequence[str], unit: str = "word") -> list[str]:
    """The gold answers a prediction is scored against, for ``unit``."""
    return gold_answers(answers) if unit == "word" else ([a for a in answers if a.strip()] or [""])


def _averages(rows: list[tuple[bool, float, float]], prefix: str) -> dict[str, float]:
    n = len(rows)
    return {f"{prefix}exact": sum(r[1] for r in rows) / n if n else 0.0,
            f"{prefix}f1": sum(r[2] for r in rows) / n if n else 0.0,
            f"{prefix}total": n}


def best_null_threshold(diffs: Sequence[float], has_answer: Sequence[bool], answer_f1: Sequence[float]) -> float:
    """The no-answer threshold that maximises F1 on these questions (SQuAD v2's
    ``find_best_thresh``): a question is answered "" when ``null score - best span score`` is above
    the threshold. ``answer_f1``: each question's F1 if its best span were the answer."""
    # Start from "always no answer" (threshold below every diff); raising it past a question's diff
    # answers that question with its span instead.
    total = sum(1.0 for has in has_answer if not has)
    best_total, best = total, min(diffs, default=0.0) - 1.0
    for i in sorted(range(len(diffs)), key=lambda k: diffs[k]):
        total += answer_f1[i] if has_answer[i] else -1.0
        if total > best_total:
            best_total, best = total, diffs[i]
    return float(best)
