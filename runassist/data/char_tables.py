"""Per-code-point tables that let a graph of plain ONNX operators split raw text the way
``data.words`` does and normalise it the way a BERT WordPiece tokenizer does.

A graph sees a text as its Unicode code points (int32); everything it needs to know about a
character is a row of ``CharTable`` (a lookup: ``rows[page[cp >> 8] * 256 + (cp & 255)]``; the
1,114,112 code points share a few hundred distinct 256-point pages). The classes are computed
here with the same regular expressions and ``unicodedata`` calls that ``data.words`` uses, and
the normalisation with the tokenizer's own normalizer, one code point at a time, so the tables
are the Python behaviour by construction rather than a re-implementation of it.

Columns (all int32): the flags in ``FLAGS`` (0/1), then how many code points the tokenizer's
normalizer turns this character into (lower-cased, accents stripped, control characters dropped,
spaces removed: 0 to ``NORM_WIDTH``), then those code points as differences from the character's
own (so that the pages of unchanged and of simply lower-cased blocks are alike and shared).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np

from runassist.data import words

N_CODEPOINTS = 0x110000
PAGE = 256
NORM_WIDTH = 3  # the longest normalisation of one code point, spaces removed (a Hangul syllable: 3 jamo)

# Flag columns, in order.
FLAGS = (
    "space",     # \s: separates words
    "single",    # a word by itself (CJK ideographs, full-width forms, ...): words._SINGLE
    "word",      # words._is_word_char: letters, digits, _, combining marks
    "joiner",    # words._JOINERS: variation selectors, keycap, zero-width joiner
    "letter",    # [^\W\d_]: the letters of an abbreviation (U.S.)
    "digit",     # \d
    "ci_s", "ci_m", "ci_d", "ci_l", "ci_r", "ci_e", "ci_v", "ci_n", "ci_t",  # (?i:x) of words._WHOLE's clitics
    "bert_punct",  # the pre-tokenizer isolates it (BertPreTokenizer: ASCII punctuation or Unicode P*)
    "bert_space",  # the normalizer turns it into white space: a sub-word boundary
    "isolated",    # the normalizer puts spaces around it (CJK ideographs): its own sub-word
)
COLUMN = {name: i for i, name in enumerate(FLAGS)}
COUNT = len(FLAGS)  # how many normalised code points
NORM = COUNT + 1  # first of the NORM_WIDTH normalised code points (minus the character's own)


@dataclass
class CharTable:
    page: np.ndarray   # [N_CODEPOINTS // PAGE] int32: page number of each block of 256 code points
    rows: np.ndarray   # [pages * PAGE, columns] int32

    def lookup(self, cps: np.ndarray) -> np.ndarray:
        """Rows for code points (what the graph does with two Gathers); for tests."""
        cps = np.asarray(cps, dtype=np.int64)
        return self.rows[self.page[cps >> 8].astype(np.int64) * PAGE + (cps & 255)]


def _all_chars() -> str:
    # Surrogates are code points Python strings can hold; no text a graph receives has them
    # unpaired, and they get the flags of nothing.
    return "".join(map(chr, range(N_CODEPOINTS)))


def _matches(pattern: str, text: str) -> np.ndarray:
    out = np.zeros(N_CODEPOINTS, dtype=np.int32)
    out[[m.start() for m in re.finditer(pattern, text)]] = 1
    return out


def _python_flags(text: str) -> dict[str, np.ndarray]:
    marks = np.array([unicodedata.category(ch)[0] == "M" for ch in text], dtype=np.int32)
    joiner = np.zeros(N_CODEPOINTS, dtype=np.int32)
    joiner[[ord(ch) for ch in words._JOINERS]] = 1
    alnum = _matches(r"[^\W_]", text)  # re's \w is isalnum() or _
    underscore = np.zeros(N_CODEPOINTS, dtype=np.int32)
    underscore[ord("_")] = 1
    flags = {
        "space": _matches(r"\s", text),
        "single": _matches(rf"[{words._SINGLE}]", text),
        "word": alnum | underscore | (marks & (1 - joiner)),
        "joiner": joiner,
        "letter": _matches(r"[^\W\d_]", text),
        "digit": _matches(r"\d", text),
    }
    for letter in "smdlrevnt":
        flags[f"ci_{letter}"] = _matches(f"(?i:{letter})", text)
    # The rule in data.words must agree with the flags: check the definition it uses.
    probe = [ord(c) for c in "a_1é\u0301\ufe0f!"]
    assert [bool(flags["word"][c]) for c in probe] == [words._is_word_char(chr(c)) for c in probe]
    return flags


def _bert_punct(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


_BUILT: dict[str, CharTable] = {}


def build(normalizer: Any) -> CharTable:
    """The table for a tokenizer whose normalizer (a ``tokenizers`` normalizer, or None) is
    ``normalizer``; the word-split columns do not depend on it. Kept per normalizer (its repr
    names every setting): building one takes ~8 s."""
    key = repr(normalizer)
    if key not in _BUILT:
        _BUILT[key] = _build(normalizer)
    return _BUILT[key]


def _build(normalizer: Any) -> CharTable:
    text = _all_chars()
    flags = _python_flags(text)
    columns = np.zeros((N_CODEPOINTS, NORM + NORM_WIDTH), dtype=np.int32)
    for name, values in flags.items():
        columns[:, COLUMN[name]] = values
    columns[:, COUNT] = 1  # by default a character stays itself (difference 0)
    punct = np.array([_bert_punct(ch) for ch in text], dtype=np.int32)
    for cp, ch in enumerate(text):
        if 0xD800 <= cp < 0xE000:
            continue
        out = normalizer.normalize_str(ch) if normalizer is not None else ch
        if out == ch and not ch.isspace():
            continue
        kept = [c for c in out if not c.isspace()]
        if len(kept) > NORM_WIDTH:
            raise ValueError(f"U+{cp:04X} normalises to {len(kept)} characters; the graph keeps {NORM_WIDTH}")
        columns[cp, COUNT] = len(kept)
        columns[cp, NORM:NORM + len(kept)] = [ord(c) - cp for c in kept]
        if out and not kept:
            columns[cp, COLUMN["bert_space"]] = 1
        elif len(kept) < len(out):
            columns[cp, COLUMN["isolated"]] = 1
    columns[:, COLUMN["bert_punct"]] = punct
    return _paged(columns)


def _paged(columns: np.ndarray) -> CharTable:
    blocks = columns.reshape(N_CODEPOINTS // PAGE, PAGE * columns.shape[1])
    unique, page = np.unique(blocks, axis=0, return_inverse=True)
    rows = unique.reshape(-1, columns.shape[1])
    return CharTable(page=page.astype(np.int32).ravel(), rows=rows.astype(np.int32))
