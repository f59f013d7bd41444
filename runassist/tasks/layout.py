"""Where a tokenizer puts its special tokens around one text or a pair of texts.

Classification of text pairs, extractive QA (question + context) and relation extraction build
their model inputs from the tokenizer's own ids; this finds the template ([CLS] a [SEP] b [SEP],
<s> a </s></s> b </s>, ...) once, by encoding a probe, so any fast tokenizer works without a table
of model families.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runassist.errors import RunassistError


@dataclass(frozen=True)
class PairLayout:
    """Where a tokenizer puts its special tokens around one text or a pair, and the token
    type ids of each part: ``[CLS] a [SEP]`` / ``[CLS] a [SEP] b [SEP]`` (types 0.. 1..) for BERT,
    ``<s> a </s></s> b </s>`` for RoBERTa. Found by encoding a probe, like ``tasks.base.special_tokens``."""

    fixed: tuple[tuple[int, ...], ...]  # special tokens before a, (between a and b,) after the last text
    fixed_types: tuple[tuple[int, ...], ...]
    text_types: tuple[int, ...]  # token type id of a (and of b)

    @classmethod
    def probe(cls, tokenizer: Any, *, pair: bool) -> "PairLayout":
        probe = tokenizer("a", add_special_tokens=False)["input_ids"]
        encoded = tokenizer("a", "a" if pair else None, return_token_type_ids=True)
        full = list(encoded["input_ids"])
        types = list(encoded.get("token_type_ids") or [0] * len(full))
        starts: list[int] = []
        pos = 0
        for _ in range(2 if pair else 1):
            found = next((s for s in range(pos, len(full) - len(probe) + 1) if full[s:s + len(probe)] == probe), None)
            if not probe or found is None:
                raise RunassistError("model.source: cannot tell where this tokenizer puts the text among its "
                                     f"special tokens (encoding 'a' gave {full})")
            starts.append(found)
            pos = found + len(probe)
        bounds = [0] + [b for s in starts for b in (s, s + len(probe))] + [len(full)]
        spans = [(bounds[i], bounds[i + 1]) for i in range(0, len(bounds), 2)]
        return cls(fixed=tuple(tuple(full[s:e]) for s, e in spans),
                   fixed_types=tuple(tuple(types[s:e]) for s, e in spans),
                   text_types=tuple(types[s] for s in starts))

    @property
    def n_special(self) -> int:
        return sum(len(part) for part in self.fixed)

    def join(self, a: list[int], b: list[int] | None) -> tuple[list[int], list[int]]:
        ids = [*self.fixed[0], *a]
        types = [*self.fixed_types[0], *[self.text_types[0]] * len(a)]
        if b is not None:
            ids += [*self.fixed[1], *b]
            types += [*self.fixed_types[1], *[self.text_types[1]] * len(b)]
        return ids + list(self.fixed[-1]), types + list(self.fixed_types[-1])
