"""Raw text -> words with character offsets, the way NER corpora are tokenised."""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Collection

# Words of raw text, the way NER corpora are tokenised (CoNLL, WNUT, OntoNotes): white space
# separates words; punctuation at a word's edges is peeled off ("Paris," -> "Paris" ","), and
# punctuation inside a word stays ("don't", "e-mail", "kayden_kross", "http://t.co/x"); a
# leading @ or # stays on a handle or hashtag; "U.S.", "...", ":)" and "&amp;" stay whole; English
# possessive 's is split off as in the Penn Treebank ("Obama's" -> "Obama" "'s"). CJK ideographs
# and kana are one token each, so Chinese/Japanese character-level NER needs no segmenter.
#
# Written by hand because the model's own pre-tokenizer is the wrong unit: BERT's splits at
# every punctuation mark, which is what transformers' NER pipeline uses. A model trained on
# corpus words ("@user", "don't") only learned tags for their first sub-token, so the extra
# "words" get untrained predictions. WNUT-16 test tweets joined into text, fully trained demo
# model: entity F1 0.375 with every-punctuation splits, 0.453 with this rule, 0.474 on the
# corpus's own words (the 3 tweets that differ have gold spans like "-Larry Bird").
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
# One token per character, like the ideographs: CJK symbols and punctuation (、。《》「」), full-width
# forms (１９９８, ，？！ＷＴＯ), and the marks Chinese text sets between ideographs: em dash and
# horizontal bar (——), ellipsis (……), double quotes (“”) and the middle dot of transliterated
# names (马克·吐温) and ×. Character-level Chinese corpora have one line per character, these included, so
# raw text must split the same way (972 of 2,000 People's Daily sentences split differently before).
# The single quotes stay out: ’ is the apostrophe of "don’t" in English text.
_SINGLE = _CJK + "\u3000-\u303f\uff00-\uffef\u2014\u2015\u2026\u201c\u201d\u00b7\u00d7"
_CHUNK = re.compile(rf"[{_SINGLE}]|[^\s{_SINGLE}]+")
_ABBREVIATION = re.compile(r"(?:[^\W\d_]\.){2,}")  # U.S. e.g. i.e.
_WHOLE = re.compile(r"[:;=][-o^']?[()\[\]dDpPoO/\\|*3]|&(?:[a-zA-Z]+|#\d+);|(?i:['’](?:s|m|d|ll|re|ve)|n['’]t)")
_CLITIC = re.compile(r"['’][sS]")  # possessive 's: entity corpora split it; "I'm", "don't" stay whole
# Marks that belong to the character before them without making it a letter: variation
# selectors (emoji presentation), the keycap, the zero-width joiner of emoji sequences.
_JOINERS = frozenset("\ufe00\ufe01\ufe02\ufe03\ufe04\ufe05\ufe06\ufe07\ufe08\ufe09\ufe0a\ufe0b\ufe0c\ufe0d\ufe0e"
                     "\ufe0f\u20e3\u200d")


def _is_word_char(ch: str) -> bool:
    # M: combining accents ("é" written as e + U+0301) belong to the word.
    return ch.isalnum() or ch == "_" or (ch not in _JOINERS and unicodedata.category(ch).startswith("M"))


def tokenize_with_offsets(text: str, cuts: Collection[int] = ()) -> tuple[list[str], list[tuple[int, int]]]:
    """Split raw text into words (rule above); offsets are ``[start, end)`` into ``text``.

    ``cuts``: character positions that must be word boundaries (entity edges of span-annotated
    data). A cut splits a word only where punctuation meets a letter or digit ("Paris|-based"):
    a cut between two letters is left alone, so a span ending mid-word is reported, not hidden.
    """
    cuts = sorted(set(cuts))
    spans: list[tuple[int, int]] = []
    for chunk in _CHUNK.finditer(text):
        start, end = chunk.span()
        inside = cuts[bisect.bisect_right(cuts, start):bisect.bisect_left(cuts, end)]
        edges = [start, *(c for c in inside if not (_is_word_char(text[c - 1]) and _is_word_char(text[c]))), end]
        for a, b in zip(edges, edges[1:]):
            spans.extend(_word_spans(text, a, b))
    return [text[a:b] for a, b in spans], spans


def _word_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """One white-space word (or a piece of one between cuts) -> leading punctuation, the core,
    trailing punctuation; a run of the same mark ("!!!", "...") is one token."""
    piece = text[start:end]
    if end - start == 1 or _WHOLE.fullmatch(piece) or _ABBREVIATION.fullmatch(piece) \
            or not any(map(_is_word_char, piece)):
        return [(start, end)]  # one character, an emoticon, a clitic, an abbreviation, all punctuation
    head: list[tuple[int, int]] = []
    while not _is_word_char(text[start]) and not (text[start] in "@#" and _is_word_char(text[start + 1])):
        run = start + 1
        while run < end and (text[run] == text[start] or text[run] in _JOINERS):
            run += 1
        head.append((start, run))
        start = run
    tail: list[tuple[int, int]] = []
    while not _is_word_char(text[end - 1]):
        run = end - 1
        while run > start and text[run] in _JOINERS:  # a joiner goes with the character before it
            run -= 1
        if _is_word_char(text[run]):
            break  # "b\ufe0f": the joiner stays on the word
        mark = text[run]
        while run > start and text[run - 1] == mark:
            run -= 1
        if text[run] == "." and _ABBREVIATION.fullmatch(text, start, run + 1):  # "U.S.," keeps its "."
            if run + 1 < end:
                tail.append((run + 1, end))
            end = run + 1
            break
        tail.append((run, end))
        end = run
    if end - start > 2 and _CLITIC.fullmatch(text, end - 2, end):
        tail.append((end - 2, end))
        end -= 2
    return [*head, (start, end), *reversed(tail)]
