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

A text longer than ``model.max_length`` sub-tokens is read in the same overlapping windows as
``NerTask.encode`` cuts (one batch of equal-width windows), each word from the window where its
first sub-token has the most context.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from runassist.tasks.text_graph import TextToSubwords, _positions, _shift

OUTPUTS = ("word_start", "word_end", "tag", "tag_score", "entity_start", "entity_end", "entity_label",
           "entity_score")


class NerTextGraph(torch.nn.Module):
    def __init__(self, task: Any, model: torch.nn.Module, tokenizer: Any, labels: Sequence[str],
                 types: Sequence[str], subwords: TextToSubwords, before: Sequence[int], after: Sequence[int],
                 room: int, stride: int):
        super().__init__()
        self.task, self.model, self.subwords = task, model, subwords
        self.with_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
        self.register_buffer("before", torch.tensor(list(before), dtype=torch.long), persistent=False)
        self.register_buffer("after", torch.tensor(list(after), dtype=torch.long), persistent=False)
        self.room = room  # sub-tokens a window holds (model.max_length less the special tokens)
        self.step = max(1, room - stride)  # tasks.windows.window_starts
        kind = [types.index(t.split("-", 1)[1]) if t != "O" and "-" in t else -1 for t in labels]
        self.register_buffer("kind", torch.tensor(kind, dtype=torch.long), persistent=False)
        self.register_buffer("begins", torch.tensor([t.startswith("B-") for t in labels]), persistent=False)
        self.outside = list(labels).index("O")
        # What the exporter writes beside the graph: its outputs, and the names its index outputs refer to.
        self.output_names = OUTPUTS
        self.names = {"tag": list(labels), "entity_label": list(types)}

    def forward(self, codepoints: torch.Tensor) -> tuple[torch.Tensor, ...]:
        word_start, word_end, ids, word_of = self.subwords(codepoints)
        # Windows as NerTask.encode cuts them (tasks.windows): ``room`` sub-tokens, starts ``step``
        # apart, the last ending at the text's end; all the same width, so no padding.
        n = torch.ones_like(ids).sum(0, keepdim=True)  # [1]: the length as a tensor, not a traced constant
        over = (n - self.room).clamp(min=0)
        count = torch.div(over + self.step - 1, self.step, rounding_mode="floor")  # windows - 1
        index = _positions(torch.cat([ids, torch.zeros(1, dtype=torch.long)]))
        starts = torch.minimum(index[index <= count] * self.step, over)  # [windows]
        width = _positions(ids)[:self.room]
        window = ids[starts.unsqueeze(1) + width.unsqueeze(0)]
        rows = torch.zeros_like(starts).unsqueeze(1)
        input_ids = torch.cat([self.before.unsqueeze(0) + rows, window, self.after.unsqueeze(0) + rows], 1)
        batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        if self.with_types:
            batch["token_type_ids"] = torch.zeros_like(input_ids)
        logits = self.task.forward(self.model, batch).logits.float()  # [windows, width + specials, tags]
        # Each word is read at its first sub-token, in the window where that has the most context
        # (the first such window on a tie, as NerTask.decode). A padding row more (dropped after
        # the argmax): onnxruntime-node 1.30's ArgMax returns the wrong rank for an empty input.
        first = torch.nonzero(_shift(word_of, 1, -1) != word_of).flatten()
        at = torch.cat([first, torch.zeros(1, dtype=torch.long)]).unsqueeze(1)
        ends = starts + width.shape[0]
        context = torch.minimum(at - starts.unsqueeze(0), ends.unsqueeze(0) - 1 - at)
        context = torch.where((at >= starts.unsqueeze(0)) & (at < ends.unsqueeze(0)), context,
                              torch.full_like(context, -1))
        best_window = context.argmax(1)
        first_logits = logits[best_window, self.before.shape[0] + at.squeeze(1) - starts[best_window]][:-1]
        # Per word (words_with is sorted and unique); gathers, not scatters: the ScatterElements of
        # onnxruntime-node 1.30 refuses empty updates (a text without words).
        words_with = word_of[first]
        word = torch.cumsum(torch.ones_like(word_start), 0).unsqueeze(1) - 1
        has = (words_with.unsqueeze(0) == word).any(1)
        index = (words_with.unsqueeze(0) < word).sum(1)
        extra = torch.zeros(1, dtype=torch.long) + first.shape[0]
        padded = torch.cat([first_logits, torch.zeros(1, first_logits.shape[1])])
        probs = torch.softmax(padded[torch.cat([index, extra])], -1)
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
