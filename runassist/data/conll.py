"""CoNLL and token-JSONL readers for NER, the CoNLL writer, and tag-scheme helpers.

Everything leaves this module in IOB2, whatever the file used, so the tasks and the
metrics only ever see one scheme.

CoNLL layout: one token per line, the token in the first column and the tag in the
LAST column (extra columns in between, such as POS or chunk tags, are ignored);
columns split on tabs when the line has a tab (so a token may contain a space),
otherwise on any white space; blank lines end a sentence; ``-DOCSTART-`` lines are
skipped. There is no comment syntax: ``#`` is a real token in tweets.

Scheme detection (``scheme="auto"``), over the whole file, not per sentence:

* any ``S-`` or ``E-`` tag: BIOES;
* else, when some ``I-`` tag starts an entity (after ``O``, at the start of a
  sentence, or after a different type) and no ``B-`` tag does (``B-`` appears only
  between two adjacent entities of one type): IOB1;
* else IOB2. A file that mixes both (some entities start with ``B-``, some with
  ``I-``) is read as IOB2 with one problem per stray ``I-``.

Invalid sequences (``I-PER`` after ``B-LOC`` in IOB2, an unfinished ``B-`` in BIOES)
do not stop reading: they are repaired the lenient conlleval way (a stray ``I-X``
starts a new entity, i.e. becomes ``B-X``) and reported as :class:`Problem` records
by the ``scan_*`` functions, for ``check-data`` to list as errors. ``read_*`` return
the examples only. Malformed lines and tags (one column, ``PER``, ``B-``) are not
repairable and raise :class:`DataError` with the file line.
"""

from __future__ import annotations

import bisect
import os
import re
import tempfile
import unicodedata
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runassist.data.records import TokenExample
from runassist.data.io import iter_jsonl, read_text_file, split_lines
from runassist.errors import DataError

SCHEMES = ("auto", "iob1", "iob2", "bioes")

_TAG = re.compile(r"^(?:O|([BIES])-(\S+))$")
_DOCSTART = "-DOCSTART-"
_WHITE = re.compile(r"\s")


@dataclass(frozen=True)
class Problem:
    """A repaired tag-sequence error, located at one line of one file."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}" if self.line is not None else f"{self.path}: {self.message}"


@dataclass(frozen=True)
class TokenScan:
    """What a scan found: the examples (IOB2), the scheme used, and the repaired problems."""

    examples: list[TokenExample]
    scheme: str
    problems: list[Problem]


# --------------------------------------------------------------------------- tags


def split_tag(tag: str) -> tuple[str, str | None]:
    """``'B-geo-loc'`` -> ``('B', 'geo-loc')``; ``'O'`` -> ``('O', None)``. The type may hold hyphens."""
    if tag == "O":
        return "O", None
    prefix, _, kind = tag.partition("-")
    return prefix, kind


def tag_error(tag: str, scheme: str = "auto") -> str | None:
    """Why a tag is malformed for ``scheme``, or None when it is fine."""
    match = _TAG.match(tag)
    if not match:
        return f"tag '{tag}' is not O or a prefix and a type such as B-PER"
    if scheme in ("iob1", "iob2") and match.group(1) in ("E", "S"):
        return f"tag '{tag}' is BIOES but data.scheme is {scheme}; set data.scheme: bioes (or auto)"
    return None


def detect_scheme(sequences: Iterable[Sequence[str]]) -> str:
    """Guess iob1, iob2 or bioes for a whole file (rules in the module docstring)."""
    i_starts = b_starts = 0
    for tags in sequences:
        prev_type: str | None = None
        for tag in tags:
            prefix, kind = split_tag(tag)
            if prefix in ("E", "S"):
                return "bioes"
            if prefix == "I" and kind != prev_type:
                i_starts += 1
            elif prefix == "B" and kind != prev_type:
                b_starts += 1
            prev_type = kind
    return "iob1" if i_starts and not b_starts else "iob2"


def validate_iob2(tags: Sequence[str]) -> list[tuple[int, str]]:
    """Invalid IOB2 positions: ``[(index, "tag 'I-PER' follows 'B-LOC'"), ...]``."""
    found = []
    prev = "O"
    for i, tag in enumerate(tags):
        bad = tag_error(tag, "iob2")
        if bad:
            found.append((i, bad))
        else:
            prefix, kind = split_tag(tag)
            if prefix == "I" and prev not in (f"B-{kind}", f"I-{kind}"):
                found.append((i, f"tag '{tag}' starts the sentence" if i == 0 else f"tag '{tag}' follows '{prev}'"))
        prev = tag
    return found


def validate_bioes(tags: Sequence[str]) -> list[tuple[int, str]]:
    """Invalid BIOES positions: an I-/E- that continues nothing, a B-/I- that never ends."""
    found = []
    for i, tag in enumerate(tags):
        bad = tag_error(tag, "bioes")
        if bad:
            found.append((i, bad))
            continue
        prefix, kind = split_tag(tag)
        prev = tags[i - 1] if i else "O"
        if prefix in ("I", "E") and prev not in (f"B-{kind}", f"I-{kind}"):
            found.append((i, f"tag '{tag}' starts the sentence" if i == 0 else f"tag '{tag}' follows '{prev}'"))
        if prefix in ("B", "I"):
            nxt = tags[i + 1] if i + 1 < len(tags) else None
            # An I-/E- of another type after us gets its own message; say the missing end only once.
            if nxt is None or split_tag(nxt)[0] in ("O", "B", "S"):
                after = "ends the sentence" if nxt is None else f"is followed by '{nxt}'"
                found.append((i, f"tag '{tag}' {after}; expected I-{kind} or E-{kind}"))
    return found


def _repair_iob2(tags: Sequence[str]) -> list[str]:
    """A stray I-X (after O, at the start, after another type) becomes B-X, as conlleval reads it."""
    out = []
    prev_type: str | None = None
    for tag in tags:
        prefix, kind = split_tag(tag)
        out.append(f"B-{kind}" if prefix == "I" and kind != prev_type else tag)
        prev_type = kind
    return out


def convert_tags(tags: Sequence[str], scheme: str) -> tuple[list[str], list[tuple[int, str]]]:
    """Tags in ``scheme`` -> (IOB2 tags, problems found on the way). Tags must be well formed."""
    if scheme == "auto":
        scheme = detect_scheme([tags])
    if scheme == "iob1":
        # In IOB1 an I- may start an entity; B- only separates two adjacent same-type entities.
        return _repair_iob2(tags), []
    if scheme == "iob2":
        return _repair_iob2(tags), validate_iob2(tags)
    if scheme == "bioes":
        mapped = [("B" + t[1:] if t[0] == "S" else "I" + t[1:] if t[0] == "E" else t) for t in tags]
        return _repair_iob2(mapped), validate_bioes(tags)
    raise ValueError(f"unknown scheme '{scheme}'; choose one of: {', '.join(SCHEMES)}")


def to_iob2(tags: Sequence[str], scheme: str) -> list[str]:
    """Tags in ``scheme`` (iob1, iob2, bioes or auto) as IOB2, stray I- repaired to B-."""
    return convert_tags(tags, scheme)[0]


def to_bioes(tags: Sequence[str]) -> list[str]:
    """IOB2 tags (repaired first if invalid) as BIOES."""
    iob2 = _repair_iob2(tags)
    out = []
    for i, tag in enumerate(iob2):
        prefix, kind = split_tag(tag)
        continues = i + 1 < len(iob2) and iob2[i + 1] == f"I-{kind}"
        if prefix == "B":
            out.append(f"B-{kind}" if continues else f"S-{kind}")
        elif prefix == "I":
            out.append(f"I-{kind}" if continues else f"E-{kind}")
        else:
            out.append(tag)
    return out


def spans_from_iob2(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Entities as ``(first_token, end_token_exclusive, type)`` from (repaired) IOB2 tags."""
    spans: list[tuple[int, int, str]] = []
    start, kind = -1, None
    for i, tag in enumerate([*_repair_iob2(tags), "O"]):
        prefix, tkind = split_tag(tag)
        if kind is not None and not (prefix == "I" and tkind == kind):
            spans.append((start, i, kind))
            kind = None
        if prefix == "B":
            start, kind = i, tkind
    return spans


# --------------------------------------------------------------------------- files


def _columns(line: str) -> list[str]:
    # Tabs win when present, so "New York<TAB>B-LOC" keeps its token whole.
    if "\t" in line:
        return [c.strip() for c in line.split("\t") if c.strip()]
    return line.split()


Raw = tuple[tuple[str, ...], tuple[str, ...] | None, list[int]]  # tokens, tags as read, line of each token


def _finish(
    path: str,
    raw: list[Raw],
    scheme: str,
    *,
    texts: list[tuple[str | None, tuple[tuple[int, int], ...] | None]] | None = None,
    from_spans: Collection[int] = (),
) -> TokenScan:
    """Convert raw sentences to IOB2 examples plus problems.

    Rows in ``from_spans`` were built from character spans, are IOB2 by construction,
    and take no part in detecting the scheme of the rest.
    """
    if scheme == "auto":
        used = detect_scheme(tags for n, (_, tags, _) in enumerate(raw) if tags and n not in from_spans)
    else:
        used = scheme
    examples, problems = [], []
    for n, (tokens, tags, lines) in enumerate(raw):
        text, offsets = texts[n] if texts else (None, None)
        if tags is not None:
            iob2, found = convert_tags(tags, "iob2" if n in from_spans else used)
            problems += [Problem(path, lines[i], message) for i, message in found]
            tags = tuple(iob2)
        examples.append(TokenExample(tokens, tags, text, offsets, source=f"{path}:{lines[0]}"))
    return TokenScan(examples, used, problems)


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme '{scheme}'; choose one of: {', '.join(SCHEMES)}")


def scan_conll(path: str | Path, *, scheme: str = "auto", require_tags: bool = True) -> TokenScan:
    """Read a CoNLL file into IOB2 examples and list the tag problems that were repaired.

    With ``require_tags=False`` a file of bare tokens (one column) is read as unlabelled;
    a file must be all tagged or all bare.
    """
    _check_scheme(scheme)
    path = str(path)
    raw: list[Raw] = []
    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []
    tagged: bool | None = None  # decided by the first token line

    def flush() -> None:
        if tokens:
            raw.append((tuple(tokens), tuple(tags) if tagged else None, list(lines)))
            tokens.clear()
            tags.clear()
            lines.clear()

    for number, line in enumerate(split_lines(read_text_file(path)), start=1):
        cols = _columns(line)
        if not cols or cols[0] == _DOCSTART:
            flush()
            continue
        has_tag = len(cols) >= 2
        if tagged is None:
            tagged = has_tag or require_tags
        if tagged and not has_tag:
            raise DataError(
                path, number, f"expected a token and a tag separated by a tab or spaces, got {line.strip()!r}"
            )
        if not tagged and has_tag:
            raise DataError(path, number, "this line has a tag but the file's first token line has none")
        if tagged:
            bad = tag_error(cols[-1], scheme)
            if bad:
                raise DataError(path, number, bad)
            tags.append(cols[-1])
        tokens.append(cols[0])
        lines.append(number)
    flush()
    return _finish(path, raw, scheme)


def read_conll(path: str | Path, *, scheme: str = "auto", require_tags: bool = True) -> list[TokenExample]:
    """CoNLL file -> IOB2 examples (source ``path:line``); problems repaired silently, see scan_conll."""
    return scan_conll(path, scheme=scheme, require_tags=require_tags).examples


def write_conll(path: str | Path, examples: Sequence[TokenExample], predicted_tags: Sequence[Sequence[str]]) -> None:
    """Write ``token gold pred`` lines (gold ``-`` when unlabelled), conlleval style.

    Written to a temporary file in the same folder and renamed, so a crash never
    leaves half a predictions file. White space inside a token becomes ``_`` to keep
    three columns.
    """
    if len(examples) != len(predicted_tags):
        raise ValueError(f"{len(examples)} examples but {len(predicted_tags)} tag sequences")
    path = Path(path)
    chunks = []
    for example, predicted in zip(examples, predicted_tags):
        if len(predicted) != len(example.tokens):
            raise ValueError(f"{example.source}: {len(example.tokens)} tokens but {len(predicted)} predicted tags")
        gold = example.tags or ("-",) * len(example.tokens)
        rows = (f"{_WHITE.sub('_', tok)} {g} {p}" for tok, g, p in zip(example.tokens, gold, predicted))
        chunks.append("\n".join(rows) + "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            out.write("\n".join(chunks))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- raw text

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
_CHUNK = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")
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


def _entity_fields(entity: Any) -> tuple[Any, Any, Any]:
    if isinstance(entity, dict):
        return entity.get("start"), entity.get("end"), entity.get("label")
    if isinstance(entity, (list, tuple)) and len(entity) == 3:  # spaCy-style [start, end, label]
        return tuple(entity)
    return None, None, None


def tags_from_spans(
    text: str, offsets: Sequence[tuple[int, int]], entities: Sequence[Any], *, path: str, line: int
) -> list[str]:
    """Character-span entities -> IOB2 tags over the tokens at ``offsets``."""
    starts = {s: i for i, (s, _) in enumerate(offsets)}
    ends = {e: i for i, (_, e) in enumerate(offsets)}
    tags = ["O"] * len(offsets)
    for entity in entities:
        start, end, label = _entity_fields(entity)
        if not (isinstance(start, int) and isinstance(end, int) and isinstance(label, str) and label):
            raise DataError(path, line, f"entity {entity!r}: expected {{\"start\": int, \"end\": int, \"label\": str}}")
        if not 0 <= start < end <= len(text):
            raise DataError(path, line, f"entity {entity!r} lies outside the text (length {len(text)})")
        # Annotation tools often include a neighbouring space; drop it rather than fail.
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if start not in starts or end not in ends or starts[start] > ends[end]:
            raise DataError(
                path, line,
                f"entity '{label}' [{start}:{end}] {text[start:end]!r} does not align with token boundaries "
                f"(words split on white space, with punctuation peeled off their edges)",
            )
        first, last = starts[start], ends[end]
        if any(tag != "O" for tag in tags[first : last + 1]):
            raise DataError(path, line, f"entity '{label}' [{start}:{end}] overlaps another entity")
        if tag_error(f"B-{label}"):
            raise DataError(path, line, f"entity label '{label}' may not contain white space")
        tags[first : last + 1] = [f"B-{label}"] + [f"I-{label}"] * (last - first)
    return tags


def scan_token_jsonl(path: str | Path, *, scheme: str = "auto", require_tags: bool = True) -> TokenScan:
    """Read token JSONL: one object a line, any of

    ``{"tokens": [...], "tags": [...]}`` (tags in ``scheme``),
    ``{"text": "...", "entities": [{"start", "end", "label"}, ...]}`` (character spans),
    ``{"text": "..."}`` or ``{"tokens": [...]}`` (unlabelled; only with ``require_tags=False``).
    Blank lines are skipped.
    """
    _check_scheme(scheme)
    path = str(path)
    raw: list[Raw] = []
    from_spans: set[int] = set()
    texts: list[tuple[str | None, tuple[tuple[int, int], ...] | None]] = []
    for number, obj in iter_jsonl(path):
        text, offsets, tags = None, None, None
        if "tokens" in obj:
            tokens = obj["tokens"]
            if not isinstance(tokens, list) or not all(isinstance(t, str) and t.strip() for t in tokens):
                raise DataError(path, number, "'tokens' must be a list of non-empty strings")
            if "tags" in obj:
                tags = obj["tags"]
                if not isinstance(tags, list) or len(tags) != len(tokens):
                    raise DataError(path, number, f"'tags' must be a list as long as 'tokens' ({len(tokens)})")
                for tag in tags:
                    bad = tag_error(tag, scheme) if isinstance(tag, str) else f"tag {tag!r} is not a string"
                    if bad:
                        raise DataError(path, number, bad)
        elif "text" in obj:
            text = obj["text"]
            if not isinstance(text, str) or not text.strip():
                raise DataError(path, number, "'text' must be a non-empty string")
            entities = obj.get("entities")
            edges = [v for e in entities for v in _entity_fields(e)[:2]
                     if isinstance(v, int)] if isinstance(entities, list) else []
            tokens, spans = tokenize_with_offsets(text, cuts=edges)
            offsets = tuple(spans)
            if "entities" in obj:
                if not isinstance(obj["entities"], list):
                    raise DataError(path, number, "'entities' must be a list")
                tags = tags_from_spans(text, spans, obj["entities"], path=path, line=number)
                from_spans.add(len(raw))
        else:
            raise DataError(path, number, f"expected 'tokens' or 'text'; keys here: {', '.join(obj) or 'none'}")
        if not tokens:
            raise DataError(path, number, "no tokens")
        if tags is None and require_tags:
            raise DataError(path, number, "no tags: give 'tags' with 'tokens', or 'entities' with 'text'")
        raw.append((tuple(tokens), tuple(tags) if tags is not None else None, [number] * len(tokens)))
        texts.append((text, offsets))
    return _finish(path, raw, scheme, texts=texts, from_spans=from_spans)


def read_token_jsonl(path: str | Path, *, scheme: str = "auto", require_tags: bool = True) -> list[TokenExample]:
    """Token JSONL -> IOB2 examples; see scan_token_jsonl for the accepted shapes."""
    return scan_token_jsonl(path, scheme=scheme, require_tags=require_tags).examples
