"""NER tag schemes: IOB1, IOB2 and BIOES, their validation and conversion to IOB2.

Scheme detection (``scheme="auto"``), over the whole file, not per sentence:

* any ``S-`` or ``E-`` tag: BIOES;
* else, when some ``I-`` tag starts an entity (after ``O``, at the start of a
  sentence, or after a different type) and no ``B-`` tag does (``B-`` appears only
  between two adjacent entities of one type): IOB1;
* else IOB2. A file that mixes both (some entities start with ``B-``, some with
  ``I-``) is read as IOB2 with one problem per stray ``I-``.

Invalid sequences (``I-PER`` after ``B-LOC`` in IOB2, an unfinished ``B-`` in BIOES) are
repaired the lenient conlleval way: a stray ``I-X`` starts a new entity, i.e. becomes ``B-X``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

SCHEMES = ("auto", "iob1", "iob2", "bioes")

_TAG = re.compile(r"^(?:O|([BIES])-(\S+))$")


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


def repair_iob2(tags: Sequence[str]) -> list[str]:
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
        return repair_iob2(tags), []
    if scheme == "iob2":
        return repair_iob2(tags), validate_iob2(tags)
    if scheme == "bioes":
        mapped = [("B" + t[1:] if t[0] == "S" else "I" + t[1:] if t[0] == "E" else t) for t in tags]
        return repair_iob2(mapped), validate_bioes(tags)
    raise ValueError(f"unknown scheme '{scheme}'; choose one of: {', '.join(SCHEMES)}")


def to_iob2(tags: Sequence[str], scheme: str) -> list[str]:
    """Tags in ``scheme`` (iob1, iob2, bioes or auto) as IOB2, stray I- repaired to B-."""
    return convert_tags(tags, scheme)[0]


def to_bioes(tags: Sequence[str]) -> list[str]:
    """IOB2 tags (repaired first if invalid) as BIOES."""
    iob2 = repair_iob2(tags)
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
    for i, tag in enumerate([*repair_iob2(tags), "O"]):
        prefix, tkind = split_tag(tag)
        if kind is not None and not (prefix == "I" and tkind == kind):
            spans.append((start, i, kind))
            kind = None
        if prefix == "B":
            start, kind = i, tkind
    return spans


def char_entities(tokens: Sequence[str], tags: Sequence[str]) -> tuple[str, list[dict[str, object]]]:
    """The words joined by single spaces, and their entities as character spans of that text
    (``{"start", "end", "label"}``, as the service returns them and `POST /v1/feedback` takes them)."""
    starts, at = [], 0
    for word in tokens:
        starts.append(at)
        at += len(word) + 1
    entities = [{"start": starts[a], "end": starts[b - 1] + len(tokens[b - 1]), "label": kind}
                for a, b, kind in spans_from_iob2(tags)]
    return " ".join(tokens), entities
