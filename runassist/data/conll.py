"""CoNLL and token-JSONL readers for NER, and the CoNLL writer.

Everything leaves this module in IOB2, whatever the file used (``data.tags`` converts), so
the tasks and the metrics only ever see one scheme.

CoNLL layout: one token per line, the token in the first column and the tag in the
LAST column (extra columns in between, such as POS or chunk tags, are ignored);
columns split on tabs when the line has a tab (so a token may contain a space),
otherwise on any white space; blank lines end a sentence; ``-DOCSTART-`` lines are
skipped. There is no comment syntax: ``#`` is a real token in tweets.

Invalid tag sequences do not stop reading: they are repaired (see ``data.tags``) and
reported as :class:`Problem` records by the ``scan_*`` functions, for ``check-data`` to list
as errors. ``read_*`` return the examples only. Malformed lines and tags (one column, ``PER``,
``B-``) are not repairable and raise :class:`DataError` with the file line.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runassist.atomic import atomic_open
from runassist.data.io import iter_jsonl, read_text_file, split_lines
from runassist.data.records import Problem, TokenExample
from runassist.data.tags import SCHEMES, convert_tags, detect_scheme, tag_error
from runassist.data.words import tokenize_with_offsets
from runassist.errors import DataError

_DOCSTART = "-DOCSTART-"
_WHITE = re.compile(r"\s")


@dataclass(frozen=True)
class TokenScan:
    """What a scan found: the examples (IOB2), the scheme used, and the repaired problems."""

    examples: list[TokenExample]
    scheme: str
    problems: list[Problem]


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
    """Read a CoNLL file into IOB2 examples and list the problems: tag sequences that were repaired,
    and malformed lines (``fatal``), each skipped so that every one can be listed.

    The first token line sets the file's layout: tab- or space-separated, and how many columns. A
    line laid out otherwise is malformed: in a file of ``token<TAB>tag`` lines, ``Los Angeles B-LOC``
    would otherwise be read as the token ``Los`` with ``Angeles`` dropped as a middle column.
    With ``require_tags=False`` a file of bare tokens (one column) is read as unlabelled.
    """
    _check_scheme(scheme)
    path = str(path)
    raw: list[Raw] = []
    tokens: list[str] = []
    tags: list[str] = []
    lines: list[int] = []
    malformed: list[Problem] = []
    layout: tuple[bool, int, int] | None = None  # (tab-separated, columns, line) of the first token line

    def flush() -> None:
        if tokens:
            raw.append((tuple(tokens), tuple(tags) if tagged else None, list(lines)))
            tokens.clear()
            tags.clear()
            lines.clear()

    def bad(number: int, message: str) -> None:
        malformed.append(Problem(path, number, message, fatal=True))

    tagged = require_tags
    for number, line in enumerate(split_lines(read_text_file(path)), start=1):
        cols = _columns(line)
        if not cols or cols[0] == _DOCSTART:
            flush()
            continue
        tabs = "\t" in line
        if layout is None:
            layout = (tabs, len(cols), number)
            tagged = len(cols) >= 2 or require_tags
        if tagged and len(cols) < 2:
            bad(number, f"expected a token and a tag separated by a tab or spaces, got {line.strip()!r}")
            continue
        if not tagged and len(cols) >= 2:
            bad(number, f"this line has {len(cols)} columns but the file's first token line (line {layout[2]}) has "
                        "one: a file is all tagged or all bare tokens")
            continue
        if layout[0] and not tabs and len(cols) > 1:
            bad(number, f"columns separated by spaces, but this file separates them with tabs (line {layout[2]}): "
                        f"{line.strip()!r}; a token with a space in it needs a tab before its tag")
            continue
        if len(cols) != layout[1]:
            bad(number, f"{len(cols)} columns, but the file's lines have {layout[1]} (line {layout[2]}): "
                        f"{line.strip()!r}")
            continue
        if tagged:
            problem = tag_error(cols[-1], scheme)
            if problem:
                bad(number, problem)
                continue
            tags.append(cols[-1])
        tokens.append(cols[0])
        lines.append(number)
    flush()
    scan = _finish(path, raw, scheme)
    return TokenScan(scan.examples, scan.scheme, malformed + scan.problems)


def read_conll(path: str | Path, *, scheme: str = "auto", require_tags: bool = True) -> list[TokenExample]:
    """CoNLL file -> IOB2 examples (source ``path:line``); repaired problems pass silently, a malformed
    line raises (see scan_conll)."""
    scan = scan_conll(path, scheme=scheme, require_tags=require_tags)
    raise_fatal(scan.problems)
    return scan.examples


def raise_fatal(problems: Sequence[Problem]) -> None:
    """DataError for the first fatal problem, saying how many more there are."""
    fatal = [p for p in problems if p.fatal]
    if fatal:
        more = f" (and {len(fatal) - 1} more such lines: `runassist check-data` lists them)" if len(fatal) > 1 else ""
        raise DataError(fatal[0].path, fatal[0].line, fatal[0].message + more)


def write_conll(path: str | Path, examples: Sequence[TokenExample], predicted_tags: Sequence[Sequence[str]]) -> None:
    """Write ``token gold pred`` lines (gold ``-`` when unlabelled), conlleval style.

    Written to a temporary file in the same folder and renamed, so a crash never
    leaves half a predictions file. White space inside a token becomes ``_`` to keep
    three columns.
    """
    text = conll_text(examples, predicted_tags)
    with atomic_open(Path(path), newline="\n") as out:
        out.write(text)


def conll_text(examples: Sequence[TokenExample], predicted_tags: Sequence[Sequence[str]]) -> str:
    """``write_conll``'s text: sentences of ``token gold pred`` lines, a blank line between them."""
    if len(examples) != len(predicted_tags):
        raise ValueError(f"{len(examples)} examples but {len(predicted_tags)} tag sequences")
    chunks = []
    for example, predicted in zip(examples, predicted_tags):
        if len(predicted) != len(example.tokens):
            raise ValueError(f"{example.source}: {len(example.tokens)} tokens but {len(predicted)} predicted tags")
        gold = example.tags or ("-",) * len(example.tokens)
        rows = (f"{_WHITE.sub('_', tok)} {g} {p}" for tok, g, p in zip(example.tokens, gold, predicted))
        chunks.append("\n".join(rows) + "\n")
    return "\n".join(chunks)


# --------------------------------------------------------------------------- span-annotated JSONL


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
