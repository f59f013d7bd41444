"""Padding-free training batches: the sentences of one *random* batch packed into a few rows.

Why: grouping similar lengths into a batch removes padding but changes what a step sees (tweets
of one length together), and on WNUT-16 that cost ~2 F1 points (bench/README.md). Packing keeps
the random batch, sentence for sentence, and removes the padding instead: several sentences share
a row, each attends only to itself (a block-diagonal mask), and position ids restart at every
sentence, so each sentence's logits are those it would get alone in a padded batch (checked at
start-up by ``probe``), and the loss, a mean over the batch's labelled tokens, is the same.

Hand-written because neither transformers' ``DataCollatorWithFlattening`` (one row, causal
models, flash-attention only) nor its ``group_by_length`` sampler (grouping, not packing) does
this for bidirectional encoders on CPU. Only tasks whose loss is per token and whose targets
are aligned with ``input_ids`` pack (``Capabilities.packs``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from runassist.errors import RunassistError
from runassist.tasks.base import IGNORE_INDEX, Feature


def rows_for(sizes: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: indexes into ``sizes`` grouped into rows of at most ``capacity``."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(sizes)), key=lambda k: -sizes[k]):
        for r, left in enumerate(room):
            if sizes[i] <= left:
                rows[r].append(i)
                room[r] -= sizes[i]
                break
        else:
            rows.append([i])
            room.append(capacity - sizes[i])
    return rows


def pack(features: Sequence[Feature], pad_id: int, *, position_offset: int = 0,
         mask_dtype: torch.dtype = torch.bool) -> dict[str, torch.Tensor]:
    """One batch of packed rows. Rows are as long as the batch's longest sentence, so no attention
    span is longer than in the padded batch; the rows are fewer.
    (Longer rows leave less padding but cost more attention than they save: on MiniLM / WNUT-16,
    rows of 1.5x and 2x the longest sentence trained at 0.96x and 0.85x the speed of rows as long
    as it, with 10% and 13% padding against 14%.)

    ``attention_mask`` is 4-D ``[rows, 1, L, L]``: True (or 0.0 for an additive float mask)
    where query and key are in the same sentence. Padding positions form one block of their own,
    so no row of the mask is empty (an all-masked row gives NaN in softmax)."""
    sizes = [f.size for f in features]
    length = max(sizes)
    layout = rows_for(sizes, length)
    n = len(layout)
    keys = list(features[0].inputs)
    out = {k: torch.full((n, length), pad_id if k == "input_ids" else 0, dtype=torch.long) for k in keys}
    positions = torch.zeros((n, length), dtype=torch.long)
    segment = torch.full((n, length), -1, dtype=torch.long)
    labels = torch.full((n, length), IGNORE_INDEX, dtype=torch.long) if features[0].target is not None else None
    for r, members in enumerate(layout):
        at = 0
        for s, i in enumerate(members):
            f, size = features[i], sizes[i]
            for k in keys:
                out[k][r, at:at + size] = torch.as_tensor(f.inputs[k], dtype=torch.long)
            positions[r, at:at + size] = torch.arange(position_offset, position_offset + size)
            segment[r, at:at + size] = s
            if labels is not None:
                labels[r, at:at + size] = torch.as_tensor(f.target, dtype=torch.long)
            at += size
    same = segment[:, :, None] == segment[:, None, :]
    if mask_dtype == torch.bool:
        mask = same[:, None]
    else:
        mask = torch.zeros(same.shape, dtype=mask_dtype).masked_fill(~same, torch.finfo(mask_dtype).min)[:, None]
    out.update(attention_mask=mask, position_ids=positions)
    if labels is not None:
        out["labels"] = labels
    return out


def padded_size(batch: dict[str, torch.Tensor]) -> int:
    return int(batch["input_ids"].numel())


def probe(model: torch.nn.Module, features: Sequence[Feature], collate: Callable[[Sequence[Feature]], dict],
          forward: Callable[[torch.nn.Module, dict], Any], pad_id: int, *, tolerance: float = 1e-3) -> dict[str, Any] | None:
    """Whether this model gives each sentence the same logits packed as padded, and with which
    packing settings; None when it does not (then training uses random batches).

    Models differ in what they accept (a 4-D mask; position ids; RoBERTa's positions start after
    the padding index), so the answer is measured, in fp32 eval mode, not looked up by family."""
    eligible = sorted((f for f in features[:64] if f.size > 2), key=lambda f: f.size)
    sample = eligible[:3] + eligible[3:][-2:]  # the shortest three and the longest two
    if len(sample) < 2:
        return None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            reference = forward(model, _without_labels(collate(sample), device)).logits.float().cpu()
            embeddings = getattr(getattr(model, "base_model", model), "embeddings", None)
            padding_idx = getattr(embeddings, "padding_idx", None)
            offsets = [0] + ([padding_idx + 1] if isinstance(padding_idx, int) else [])
            dtype = torch.bool if getattr(model.config, "_attn_implementation", "sdpa") == "sdpa" else torch.float32
            for offset in offsets:
                try:
                    packed = pack(sample, pad_id, position_offset=offset, mask_dtype=dtype)
                    logits = forward(model, _without_labels(packed, device)).logits.float().cpu()
                except Exception:  # noqa: BLE001 - a model that refuses the 4-D mask does not pack
                    return None
                if _max_error(sample, reference, logits, packed) <= tolerance:
                    return {"position_offset": offset, "mask_dtype": dtype}
            return None
    finally:
        model.train(was_training)


def _without_labels(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items() if k != "labels"}


def _max_error(sample: Sequence[Feature], reference: torch.Tensor, logits: torch.Tensor,
               packed: dict[str, torch.Tensor]) -> float:
    sizes = [f.size for f in sample]
    length = packed["input_ids"].shape[1]
    worst = 0.0
    for r, members in enumerate(rows_for(sizes, length)):
        at = 0
        for i in members:
            got = logits[r, at:at + sizes[i]]
            worst = max(worst, float((got - reference[i, :sizes[i]]).abs().max()))
            at += sizes[i]
    return worst


def choose(batching: str, *, packs: bool, model: torch.nn.Module, features: Sequence[Feature],
           collate: Callable[[Sequence[Feature]], dict], forward: Callable[[torch.nn.Module, dict], Any],
           pad_id: int | None) -> tuple[str, str, dict[str, Any]]:
    """(the batching to train with, why, pack() settings), as bench/README.md's "Batching" table says:

    - a per-token task (NER) packs where the model passes ``probe``: grouping lengths cost test F1
      on WNUT-16 (8 seeds: packed 0.347, grouped 0.327, the Trainer's random batches 0.334), and
      a model that cannot pack trains on random batches;
    - any other task groups lengths: on Rotten Tomatoes grouped batches scored the accuracy of
      random ones (8 seeds, mean difference ~0.00) at 1.75x the tokens/s."""
    if batching in ("grouped", "random"):
        return batching, "train.batching", {}
    if not packs:
        if batching == "packed":
            raise RunassistError("train.batching=packed: this task's loss is not per token, so its inputs "
                                 "cannot share a row; use auto, random or grouped")
        return "grouped", "auto: this task does not pack; grouping lengths cost no accuracy on Rotten Tomatoes", {}
    settings = probe(model, features, collate, forward, 0 if pad_id is None else pad_id)
    if settings is None:
        if batching == "packed":
            raise RunassistError("train.batching=packed: this model does not give a sentence the same logits "
                                 "packed as alone (it does not take a 4-D attention mask and position ids); "
                                 "use auto, random or grouped")
        return "random", "auto: the model failed the packing probe", {}
    return "packed", ("auto: " if batching == "auto" else "") + "the model passed the packing probe", settings
