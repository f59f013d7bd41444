"""The NER model as one graph from raw text to entities (``runassist export RUN --with-tokenizer``).

``NerTextGraph`` chains ``text_graph.TextToSubwords`` (code points -> words -> WordPiece ids),
the trained model, and ``NerTask.decode``'s rules: each word's tag is read at its first
sub-token, a word with no sub-token is ``O`` with score 1, an ``I-X`` that does not continue an
``X`` starts an entity (``repair_iob2``), and an entity's score is the mean of its words'
probabilities. Outputs, for one text:

- ``word_start``, ``word_end`` (int64 [W]): each word's code-point offsets;
- ``tag``, ``tag_score`` ([W]): index into the run's tag list, and its probability;
- ``entity_start``, ``entity_end``, ``entity_label`` (int64 [E]), ``entity_score`` (float [E]):
  code-point offsets, index into the entity types, mean probability.

One difference from ``runassist predict`` is by design: a text longer than the model's
``max_length`` sub-tokens is read in one pass (up to the model's position limit, the rest
truncated) rather than in overlapping windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from runassist.tasks.text_graph import TextToSubwords, _shift

OUTPUTS = ("word_start", "word_end", "tag", "tag_score", "entity_start", "entity_end", "entity_label",
           "entity_score")


class NerTextGraph(torch.nn.Module):
    def __init__(self, task: Any, model: torch.nn.Module, tokenizer: Any, labels: Sequence[str],
                 types: Sequence[str], subwords: TextToSubwords, before: Sequence[int], after: Sequence[int],
                 max_positions: int):
        super().__init__()
        self.task, self.model, self.subwords = task, model, subwords
        self.with_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
        self.register_buffer("before", torch.tensor(list(before), dtype=torch.long), persistent=False)
        self.register_buffer("after", torch.tensor(list(after), dtype=torch.long), persistent=False)
        self.room = max_positions - len(before) - len(after)
        kind = [types.index(t.split("-", 1)[1]) if t != "O" and "-" in t else -1 for t in labels]
        self.register_buffer("kind", torch.tensor(kind, dtype=torch.long), persistent=False)
        self.register_buffer("begins", torch.tensor([t.startswith("B-") for t in labels]), persistent=False)
        self.outside = list(labels).index("O")
        # What the exporter writes beside the graph: its outputs, and the names its index outputs refer to.
        self.output_names = OUTPUTS
        self.names = {"tag": list(labels), "entity_label": list(types)}

    def forward(self, codepoints: torch.Tensor) -> tuple[torch.Tensor, ...]:
        word_start, word_end, ids, word_of = self.subwords(codepoints)
        ids, word_of = ids[:self.room], word_of[:self.room]
        input_ids = torch.cat([self.before, ids, self.after]).unsqueeze(0)
        batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        if self.with_types:
            batch["token_type_ids"] = torch.zeros_like(input_ids)
        logits = self.task.forward(self.model, batch).logits[0].float()
        logits = logits[self.before.shape[0]:self.before.shape[0] + ids.shape[0]]
        # Each word's first sub-token (words_with is sorted and unique); gathers, not scatters: the
        # ScatterElements of onnxruntime-node 1.30 refuses empty updates (a text without words).
        first = torch.nonzero(_shift(word_of, 1, -1) != word_of).flatten()
        words_with = word_of[first]
        word = torch.cumsum(torch.ones_like(word_start), 0).unsqueeze(1) - 1
        has = (words_with.unsqueeze(0) == word).any(1)
        index = (words_with.unsqueeze(0) < word).sum(1)
        # One padding row more (a zero row, dropped after the argmax): onnxruntime-node 1.30's ArgMax
        # returns the wrong rank for an empty input (a text without words).
        extra = torch.zeros(1, dtype=torch.long) + first.shape[0]
        rows = torch.cat([first, torch.zeros(1, dtype=torch.long) + logits.shape[0]])[torch.cat([index, extra])]
        padded = torch.cat([logits, torch.zeros(1, logits.shape[1])])
        probs = torch.softmax(padded[rows], -1)
        score, best = probs.max(-1)
        score, best = score[:-1], best[:-1]
        tag = torch.where(has, best, torch.full_like(best, self.outside))
        tag_score = torch.where(has, score, torch.ones_like(score))
        # Entities: repair_iob2 + spans_from_iob2, over all words at once.
        kind = self.kind[tag]
        inside = kind >= 0
        starts = inside & (self.begins[tag] | (_shift(kind, 1, -1) != kind))
        ends = inside & (_shift(starts, -1, True) | ~_shift(inside, -1, False))
        first_word = torch.nonzero(starts).flatten()
        last_word = torch.nonzero(ends).flatten()
        sums = torch.cat([torch.zeros(1), torch.cumsum(tag_score, 0)])
        entity_score = (sums[last_word + 1] - sums[first_word]) / (last_word + 1 - first_word).float()
        return (word_start, word_end, tag, tag_score, word_start[first_word], word_end[last_word],
                kind[first_word], entity_score)


def entities(outputs: Sequence[Any], names: dict[str, Sequence[str]], text: str | None = None) -> list[dict[str, Any]]:
    """The graph's entity outputs as ``{"label", "start", "end"[, "text"], "score"}`` (what the JS
    routine prints; offsets are code points, as Python's)."""
    named = dict(zip(OUTPUTS, outputs))
    out = []
    for s, e, k, sc in zip(named["entity_start"], named["entity_end"], named["entity_label"], named["entity_score"]):
        entity: dict[str, Any] = {"label": names["entity_label"][int(k)], "start": int(s), "end": int(e)}
        if text is not None:
            entity["text"] = text[int(s):int(e)]
        entity["score"] = round(float(sc), 4)
        out.append(entity)
    return out
