"""Raw text -> words -> WordPiece ids, as tensor operations a plain ONNX graph can hold.

``TextToSubwords`` takes one text as its Unicode code points (int64 [L]) and returns what
``tasks.ner`` feeds its model: the text's words (character offsets, the split of
``data.words.tokenize_with_offsets``) and the WordPiece ids of each word, as the model's fast
tokenizer makes them with ``is_split_into_words=True``. It is written with torch operations
that ``torch.onnx.export`` turns into standard ONNX operators only (Gather, CumSum, NonZero,
Where, ...), so the exported file runs in any ONNX Runtime: Node.js (onnxruntime-node), the
browser, Java, C#, Rust, Python without extra libraries.

Why by hand, not with onnxruntime-extensions' tokenizer operators: onnxruntime-node and
onnxruntime-web cannot load a custom-operator library (microsoft/onnxruntime#18587, open;
checked with onnxruntime-node 1.30.0: "ai.onnx.contrib:BertTokenizer(-1) is not a registered
function/op"), and its BertTokenizer splits at every punctuation mark, not into the corpus-style
words the model was trained on (and it reported offsets one character late after a comma in
0.15.2). The graph takes code points rather than a string tensor because standard ONNX has no
operator that looks inside a string.

How each step maps to tensors (one text, all positions at once):

- character classes: two Gathers into ``data.char_tables`` (the Python classes, precomputed);
- the word split: chunk edges from the white-space and single-character flags; inside a chunk
  the first and last word characters found by counting (``_first_at_or_after``), the runs of
  edge punctuation from comparisons with the neighbouring code point, and the rules that keep a
  chunk whole (emoticons, ``&amp;``, clitics, ``U.S.``) from the characters at fixed places;
- normalisation: the table's normalised code points (0-3 per character), flattened;
- WordPiece: for every position and every length up to the longest vocabulary entry, a double
  polynomial hash of the substring (with the ``##`` prefix inside a sub-word) looked up in the
  sorted hashes of the vocabulary by binary search (one search for all of them); the greedy
  longest-match walk runs from every sub-word's start at once by doubling the jump table
  (``log2(max_input_chars_per_word)`` steps); a sub-word with no match, or longer than that
  limit, becomes the unknown token, as in the tokenizer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from runassist.data import char_tables as ct

_P1, _P2 = 2_147_483_647, 2_147_483_629  # primes below 2**31: products stay below 2**62 in int64
_B1, _B2 = 1_000_003, 916_132_831


def _hash_step(h1: Any, h2: Any, cp: Any) -> tuple[Any, Any]:
    """One character more; works on Python ints and on int64 tensors alike."""
    return (h1 * _B1 + cp + 1) % _P1, (h2 * _B2 + cp + 1) % _P2


def _hash_text(text: str, h1: int = 0, h2: int = 0) -> tuple[int, int]:
    for ch in text:
        h1, h2 = _hash_step(h1, h2, ord(ch))
    return h1, h2


def _key(h1: Any, h2: Any) -> Any:
    return h1 * _P2 + h2


class WordPieceSpec:
    """What the graph needs of a fast tokenizer, checked: a WordPiece model behind a BERT-style
    pre-tokenizer. ``reason`` says why another tokenizer cannot be expressed (None when it can)."""

    def __init__(self, tokenizer: Any):
        from runassist.tasks.base import special_tokens

        backend = getattr(tokenizer, "backend_tokenizer", None)
        model = getattr(backend, "model", None)
        pre = getattr(backend, "pre_tokenizer", None)
        self.reason = None
        if model is None or type(model).__name__ != "WordPiece":
            self.reason = (f"its tokenizer is {type(model).__name__ if model is not None else 'not a fast tokenizer'}; "
                           "the in-graph tokenizer does WordPiece (BERT-style) only")
        elif pre is None or type(pre).__name__ != "BertPreTokenizer":
            self.reason = (f"its pre-tokenizer is {type(pre).__name__}; the in-graph tokenizer reproduces "
                           "BertPreTokenizer only")
        elif type(backend.normalizer).__name__ not in ("BertNormalizer", "NoneType"):
            self.reason = (f"its normalizer is {type(backend.normalizer).__name__}; the in-graph tokenizer "
                           "reproduces BertNormalizer only")
        if self.reason:
            return
        self.normalizer = backend.normalizer
        self.vocab: dict[str, int] = tokenizer.get_vocab()
        self.unk_id = self.vocab[model.unk_token]
        self.prefix = model.continuing_subword_prefix
        self.max_chars = int(model.max_input_chars_per_word)
        self.before, self.after = special_tokens(tokenizer)


class TextToSubwords(torch.nn.Module):
    """Code points in; words (offsets) and sub-word ids (with the word each belongs to) out."""

    def __init__(self, spec: WordPieceSpec, table: ct.CharTable):
        super().__init__()
        self.register_buffer("page", torch.from_numpy(table.page.astype(np.int64)), persistent=False)
        self.register_buffer("rows", torch.from_numpy(table.rows), persistent=False)
        keys, ids, longest = [], [], 1
        cont = _hash_text(spec.prefix)
        for token, index in spec.vocab.items():
            if token.startswith(spec.prefix) and len(token) > len(spec.prefix):
                body, start = token[len(spec.prefix):], cont
            else:
                body, start = token, (0, 0)
            keys.append(_key(*_hash_text(body, *start)))
            ids.append(index)
            longest = max(longest, len(body))
        order = np.argsort(np.array(keys, dtype=np.int64), kind="stable")
        sorted_keys = np.array(keys, dtype=np.int64)[order]
        if len(np.unique(sorted_keys)) != len(sorted_keys):
            raise ValueError("two vocabulary entries hash alike; the in-graph lookup would confuse them")
        self.register_buffer("keys", torch.from_numpy(sorted_keys), persistent=False)
        self.register_buffer("key_ids", torch.from_numpy(np.array(ids, dtype=np.int64)[order]), persistent=False)
        self.search_steps = int(np.ceil(np.log2(len(sorted_keys) + 1))) + 1
        self.longest = longest
        self.cont = cont
        self.unk_id, self.max_chars = spec.unk_id, spec.max_chars
        self.levels = int(np.ceil(np.log2(spec.max_chars + 1)))  # 2**levels jumps cover the longest walk

    # -- helpers ----------------------------------------------------------------------------
    def _props(self, cp: torch.Tensor) -> torch.Tensor:
        page = self.page[torch.div(cp, ct.PAGE, rounding_mode="floor")]
        return self.rows[page * ct.PAGE + cp % ct.PAGE]

    def _lookup(self, key: torch.Tensor) -> torch.Tensor:
        """Vocabulary id of each hash key, -1 where none (binary search over the sorted keys)."""
        n = self.keys.shape[0]
        lo = torch.zeros_like(key)
        hi = torch.full_like(key, n)
        for _ in range(self.search_steps):
            mid = torch.div(lo + hi, 2, rounding_mode="floor")
            probe = self.keys[mid.clamp(max=n - 1)]
            right = (probe < key) & (mid < hi)
            lo = torch.where(right, mid + 1, lo)
            hi = torch.where(right, hi, mid)
        at = lo.clamp(max=n - 1)
        return torch.where(self.keys[at] == key, self.key_ids[at], torch.full_like(key, -1))

    # -- the word split ---------------------------------------------------------------------
    def words(self, cp: torch.Tensor, props: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Word start and end offsets ([W] each): ``data.words.tokenize_with_offsets``."""
        c = ct.COLUMN
        n = cp.shape[0]
        pos = _positions(cp)
        single = props[:, c["single"]] > 0
        # An ideographic space (U+3000) is in the single-character class, which the split tests first.
        space = (props[:, c["space"]] > 0) & ~single
        word, joiner = props[:, c["word"]] > 0, props[:, c["joiner"]] > 0
        letter, digit = props[:, c["letter"]] > 0, props[:, c["digit"]] > 0
        solid = ~space
        prev_cp = _shift(cp, 1, -1)
        prev_space, next_space = _shift(space, 1, True), _shift(space, -1, True)
        prev_single, next_single = _shift(single, 1, False), _shift(single, -1, False)
        chunk_start = solid & (prev_space | single | prev_single)
        chunk_end = solid & (next_space | single | next_single)
        starts = torch.nonzero(chunk_start).flatten()
        ends = torch.nonzero(chunk_end).flatten() + 1
        size = ends - starts
        last = n - 1

        def at(offset: torch.Tensor) -> torch.Tensor:  # code point at chunk positions (clamped)
            return cp[offset.clamp(min=0, max=last)]

        def flag(name: str, offset: torch.Tensor) -> torch.Tensor:
            return props[offset.clamp(min=0, max=last), c[name]] > 0

        word_count = _count_in(word, starts, ends)
        prev_nj = _last_before(~joiner, pos, n)  # the last non-joiner before each position
        chunk_of = (torch.cumsum(chunk_start.long(), 0) - 1).clamp(min=0)
        first_of_chunk = _per_char(starts, chunk_of)
        # The rules that keep a chunk whole (words._word_spans' first test).
        c0, c1, c2, cl = at(starts), at(starts + 1), at(starts + 2), at(ends - 1)
        apostrophe = (c0 == ord("'")) | (c0 == ord("’"))
        emoticon = _isin(c0, ":;=") & (
            ((size == 2) & _isin(c1, "()[]dDpPoO/\\|*3"))
            | ((size == 3) & _isin(c1, "-o^'") & _isin(c2, "()[]dDpPoO/\\|*3")))
        ascii_letter = ((cp >= ord("a")) & (cp <= ord("z"))) | ((cp >= ord("A")) & (cp <= ord("Z")))
        entity = (c0 == ord("&")) & (cl == ord(";")) & (
            ((size >= 3) & (_count_in(ascii_letter, starts + 1, ends - 1) == size - 2))
            | ((size >= 4) & (c1 == ord("#")) & (_count_in(digit, starts + 2, ends - 1) == size - 3)))
        clitic = (apostrophe & (size == 2) & (flag("ci_s", starts + 1) | flag("ci_m", starts + 1)
                                              | flag("ci_d", starts + 1))) \
            | (apostrophe & (size == 3) & ((flag("ci_l", starts + 1) & flag("ci_l", starts + 2))
                                           | (flag("ci_r", starts + 1) & flag("ci_e", starts + 2))
                                           | (flag("ci_v", starts + 1) & flag("ci_e", starts + 2)))) \
            | ((size == 3) & flag("ci_n", starts) & ((c1 == ord("'")) | (c1 == ord("’"))) & flag("ci_t", starts + 2))
        rel = pos - first_of_chunk
        dot = cp == ord(".")
        alternating = ((rel % 2 == 0) & letter) | ((rel % 2 == 1) & dot)
        abbreviation = (size >= 4) & (size % 2 == 0) & (_count_in(alternating, starts, ends) == size)
        whole = (size == 1) | (word_count == 0) | emoticon | entity | clitic | abbreviation

        # The core: from the first word character (or @/# before one) to the last word character
        # and the joiners right after it.
        at_hash = (cp == ord("@")) | (cp == ord("#"))
        # A run of one mark is peeled whole: "@@user" -> "@@" "user", so an @ that continues a run
        # of @ does not open the core.
        continues = (prev_nj >= first_of_chunk) & (cp[prev_nj.clamp(min=0)] == cp)
        opens = word | (at_hash & _shift(word, -1, False) & ~continues)
        core_start = _first_at_or_after(opens, starts, n)
        last_word = _last_before(word, ends, n)
        core_end = _first_at_or_after(~joiner, last_word + 1, n).clamp(max=ends)
        core_end = torch.minimum(core_end, ends)
        # "U.S.,": a '.' right after a core that it completes into an abbreviation stays on the core.
        rel_core = pos - _per_char(core_start, chunk_of)
        alt_core = ((rel_core % 2 == 0) & letter) | ((rel_core % 2 == 1) & dot)
        core_len = core_end + 1 - core_start
        abbr_tail = (core_end < ends) & (at(core_end) == ord(".")) & (core_len >= 4) & (core_len % 2 == 0) \
            & (_count_in(alt_core, core_start, core_end + 1) == core_len)
        core_end = torch.where(abbr_tail, core_end + 1, core_end)
        # Possessive 's comes off the core.
        c_a, c_b = at(core_end - 2), at(core_end - 1)
        possessive = (core_end - core_start > 2) & ((c_a == ord("'")) | (c_a == ord("’"))) \
            & ((c_b == ord("s")) | (c_b == ord("S")))

        # Word starts, per character.
        in_chunk = solid
        chunk_whole = _per_char(whole, chunk_of)
        cs, ce = _per_char(core_start, chunk_of), _per_char(core_end, chunk_of)
        head_new = ~joiner & ((prev_nj < first_of_chunk) | (cp != cp[prev_nj.clamp(min=0)]))
        in_head = (pos < cs)
        in_tail = (pos >= ce)
        tail_new = ~joiner & ((pos == ce) | (prev_cp != cp))
        split_at = torch.zeros_like(solid)
        split_at = split_at | chunk_start
        split_at = split_at | (~chunk_whole & in_head & head_new)
        split_at = split_at | (~chunk_whole & (pos == cs))
        split_at = split_at | (~chunk_whole & in_tail & tail_new)
        poss = _per_char(possessive, chunk_of)
        split_at = split_at | (~chunk_whole & poss & (pos == ce - 2))
        split_at = split_at & in_chunk
        word_start = torch.nonzero(split_at).flatten()
        next_split = _shift(split_at, -1, True)
        word_end = torch.nonzero(in_chunk & (next_split | next_space)).flatten() + 1
        return word_start, word_end

    # -- normalisation and WordPiece ---------------------------------------------------------
    def forward(self, cp: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(word_start, word_end, ids, word_of_id)``: offsets [W]; ids [T] and the word of each."""
        cp = cp.long()
        props = self._props(cp)
        word_start, word_end = self.words(cp, props)
        c = ct.COLUMN
        pos = _positions(cp)
        space = (props[:, c["space"]] > 0) & (props[:, c["single"]] == 0)
        word_of_char = torch.cumsum(torch.zeros_like(pos).index_fill(0, word_start, 1), 0) - 1
        # Normalised characters: up to NORM_WIDTH per character, flattened in order.
        count = props[:, ct.COUNT].long()
        slots = torch.arange(ct.NORM_WIDTH, dtype=torch.long).unsqueeze(0)
        keep = (slots < count.unsqueeze(1)) & ~space.unsqueeze(1)
        values = cp.unsqueeze(1) + props[:, ct.NORM:].long()
        src = pos.unsqueeze(1).expand(-1, ct.NORM_WIDTH)[keep]
        x = values[keep]
        xprops = self._props(x)
        isolated = (xprops[:, c["bert_punct"]] > 0) | (props[src, c["isolated"]] > 0)
        # Sub-word (pre-token) boundaries: a new word, an isolated character or one after it, or
        # a character the normalizer made white space in between.
        gaps = torch.cumsum(props[:, c["bert_space"]].long(), 0)
        wid = word_of_char[src]
        new_piece = (_shift(wid, 1, -1) != wid) | isolated | _shift(isolated, 1, True) \
            | (_shift(gaps[src], 1, -1) != gaps[src])
        piece_start = torch.nonzero(new_piece).flatten()
        piece_of = torch.cumsum(new_piece.long(), 0) - 1
        m = x.shape[0]
        piece_end = _next_starts(piece_start, m)
        end_of = piece_end[piece_of]
        # Hashes of x[i:i+k] for k = 1..longest, with the continuation prefix off a sub-word's start.
        first = new_piece
        h1 = torch.where(first, torch.zeros_like(x), torch.full_like(x, self.cont[0]))
        h2 = torch.where(first, torch.zeros_like(x), torch.full_like(x, self.cont[1]))
        xpos = _positions(x)
        keys, inside = [], []
        for k in range(self.longest):
            j = (xpos + k).clamp(max=m - 1)
            h1, h2 = _hash_step(h1, h2, x[j])
            keys.append(_key(h1, h2))
            inside.append(xpos + k < end_of)
        # One lookup for every (position, length): a few hundred graph nodes fewer than one per length.
        found = self._lookup(torch.stack(keys, 1).reshape(-1)).reshape(-1, self.longest)  # [M, longest]
        table = torch.where(torch.stack(inside, 1), found, torch.full_like(found, -1))
        lengths = torch.arange(1, self.longest + 1, dtype=torch.long).unsqueeze(0)
        best_len = torch.where(table >= 0, lengths, torch.zeros_like(lengths)).max(1).values
        best_id = table.gather(1, (best_len - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
        # The greedy walk from every sub-word's start at once, by doubling: jump[i] is where the
        # longest match at i ends (m, a sink, where nothing matches); after level t the marked
        # positions are those 0 .. 2**(t+1) - 1 jumps from a start. A walk that reaches its
        # sub-word's end lands on the next one's start, which is marked anyway.
        sink = torch.zeros(1, dtype=torch.long) + m
        jump = torch.cat([torch.where(best_len > 0, xpos + best_len, torch.zeros_like(xpos) + m), sink])
        marked = torch.zeros_like(jump).index_fill(0, piece_start, 1)
        for _ in range(self.levels):
            marked = marked.index_fill(0, jump[torch.nonzero(marked).flatten()], 1)
            jump = jump[jump]
        visited = marked[:m] > 0
        stuck = visited & (best_len == 0)
        failed = (_count_in(stuck, piece_start, piece_end) > 0) | (piece_end - piece_start > self.max_chars)
        failed_here = _per_char(failed, piece_of)
        emit = (visited & ~failed_here) | (new_piece & failed_here)
        at = torch.nonzero(emit).flatten()
        out_ids = torch.where(failed_here, torch.full_like(best_id, self.unk_id), best_id)[at]
        out_word = wid[at]
        return word_start, word_end, out_ids, out_word


# -- tensor helpers -------------------------------------------------------------------------

def _positions(x: torch.Tensor) -> torch.Tensor:
    """0, 1, ..., len(x) - 1 (traced from the input's length)."""
    return torch.cumsum(torch.ones_like(x, dtype=torch.long), 0) - 1


def _shift(x: torch.Tensor, by: int, fill: Any) -> torch.Tensor:
    """x moved right by ``by`` (left when negative), the gap filled with ``fill``."""
    if x.dtype == torch.bool:
        pad = torch.ones_like(x[:1]) if fill else torch.zeros_like(x[:1])
    else:
        pad = torch.full_like(x[:1], fill)
    if by == 1:
        return torch.cat([pad, x[:-1]])
    return torch.cat([x[1:], pad])


def _per_char(values: torch.Tensor, chunk_of: torch.Tensor) -> torch.Tensor:
    """A per-chunk value at each character (characters outside any chunk get the first chunk's or 0:
    callers mask them)."""
    return torch.cat([values, torch.zeros(1, dtype=values.dtype)])[chunk_of]


def _isin(x: torch.Tensor, chars: str) -> torch.Tensor:
    out = torch.zeros_like(x, dtype=torch.bool)
    for ch in chars:
        out = out | (x == ord(ch))
    return out


def _prefix(flag: torch.Tensor) -> torch.Tensor:
    """counts[i] = number of set flags before position i; length len(flag) + 1."""
    return torch.cat([torch.zeros_like(flag[:1], dtype=torch.long), torch.cumsum(flag.long(), 0)])


def _count_in(flag: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Set flags in [start, end) per pair (empty or reversed ranges count 0)."""
    counts = _prefix(flag)
    n = flag.shape[0]
    s, e = start.clamp(min=0, max=n), end.clamp(min=0, max=n)
    return torch.where(e > s, counts[e] - counts[s], torch.zeros_like(s))


def _first_at_or_after(flag: torch.Tensor, at: torch.Tensor, n: Any) -> torch.Tensor:
    """The first position >= at whose flag is set; n when none."""
    where = torch.cat([torch.nonzero(flag).flatten(), torch.zeros_like(at[:1]) + n, torch.zeros_like(at[:1]) + n])
    before = _prefix(flag)[at.clamp(min=0, max=n)]
    return where[before]


def _last_before(flag: torch.Tensor, at: torch.Tensor, n: Any) -> torch.Tensor:
    """The last position < at whose flag is set; -1 when none."""
    where = torch.cat([torch.zeros_like(flag[:1], dtype=torch.long) - 1, torch.nonzero(flag).flatten()])
    return where[_prefix(flag)[at.clamp(min=0, max=n)]]


def _next_starts(starts: torch.Tensor, total: Any) -> torch.Tensor:
    """Each segment's end: the next segment's start, the total for the last one."""
    return torch.cat([starts[1:], torch.zeros_like(starts[:1]) + total])
