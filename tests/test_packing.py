"""Packed training batches: each sentence gets exactly the logits, loss and gradients it gets
alone in a padded batch, with (almost) no padding; models that cannot pack fall back."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import ner_overrides
from runassist.config import TrainConfig
from runassist.errors import RunassistError
from runassist.tasks.base import IGNORE_INDEX, Feature, pad_inputs
from runassist.train import packing


def _features(lengths, *, first_label=1):
    out = []
    for i, n in enumerate(lengths):
        ids = [2] + [5 + (i * 7 + k) % 40 for k in range(n - 2)] + [3]
        target = [IGNORE_INDEX] + [(first_label + i + k) % 3 for k in range(n - 2)] + [IGNORE_INDEX]
        out.append(Feature(example=i, inputs={"input_ids": ids, "token_type_ids": [0] * n}, target=target))
    return out


def _tiny_bert():
    from transformers import BertConfig, BertForTokenClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=3,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForTokenClassification(config)


def _forward(model, batch):
    return model(**{k: v for k, v in batch.items() if k != "labels"})


def test_rows_hold_every_sentence_once_with_positions_restarting():
    lengths = [9, 3, 5, 12, 4, 7, 6, 2]
    feats = _features(lengths)
    batch = packing.pack(feats, pad_id=0)
    rows, width = batch["input_ids"].shape
    assert width == 12  # the longest sentence
    assert rows == 4  # 48 tokens fill 4 rows of 12 exactly (12, 9+3, 7+5, 6+4+2), instead of 8 rows
    # every sentence's ids appear once, contiguous, with positions 0..n-1 and its own labels
    found = []
    for r in range(rows):
        ids, pos, labels = (batch[k][r].tolist() for k in ("input_ids", "position_ids", "labels"))
        starts = [p for p in range(width) if pos[p] == 0 and ids[p] == 2]
        for s in starts:
            n = next(len(f.inputs["input_ids"]) for f in feats
                     if f.inputs["input_ids"] == ids[s:s + len(f.inputs["input_ids"])])
            f = next(f for f in feats if f.inputs["input_ids"] == ids[s:s + n])
            assert pos[s:s + n] == list(range(n)) and labels[s:s + n] == f.target
            found.append(f.example)
    assert sorted(found) == list(range(len(feats)))
    # a token sees exactly its own sentence
    mask = batch["attention_mask"][:, 0]
    assert mask.shape == (rows, width, width) and mask.dtype == torch.bool
    real = batch["labels"].ne(IGNORE_INDEX).sum() + 2 * len(feats)  # labelled tokens plus [CLS]/[SEP]
    assert int(real) == sum(lengths)
    assert int(mask.sum()) == sum(n * n for n in lengths) + sum((width - sum(
        lengths[i] for i in members)) ** 2 for members in packing.rows_for(lengths, width))


def test_packed_step_equals_padded_step():
    """Same sentences, same loss, same gradients: packing changes the layout, not the step."""
    feats = _features([9, 3, 5, 12, 4, 7, 6, 2, 11, 5])
    grads = {}
    losses = {}
    for name, batch in (("padded", _labelled(pad_inputs(feats, 0), feats)), ("packed", packing.pack(feats, 0))):
        model = _tiny_bert()
        out = _forward(model, batch)
        loss = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), batch["labels"].flatten(),
                                                 ignore_index=IGNORE_INDEX)
        loss.backward()
        losses[name] = loss.item()
        grads[name] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert losses["packed"] == pytest.approx(losses["padded"], rel=1e-5)
    assert torch.allclose(grads["packed"], grads["padded"], atol=1e-6, rtol=1e-4)
    assert packing.padded_size(packing.pack(feats, 0)) < packing.padded_size(pad_inputs(feats, 0))


def _labelled(batch, feats):
    width = batch["input_ids"].shape[1]
    batch["labels"] = torch.tensor([f.target + [IGNORE_INDEX] * (width - len(f.target)) for f in feats])
    return batch


def test_probe_accepts_bert_and_finds_roberta_positions():
    from transformers import RobertaConfig, RobertaForTokenClassification

    feats = _features([9, 3, 5, 12, 4, 7])
    collate = lambda fs: pad_inputs(fs, 0)  # noqa: E731
    assert packing.probe(_tiny_bert(), feats, collate, _forward, 0) == {"position_offset": 0, "mask_dtype": torch.bool}
    # RoBERTa counts positions from padding_idx + 1: the probe finds that, no family table needed
    torch.manual_seed(0)
    roberta = RobertaForTokenClassification(RobertaConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=80, num_labels=3, pad_token_id=1))
    roberta_feats = [Feature(example=f.example, inputs={"input_ids": f.inputs["input_ids"]}, target=f.target)
                     for f in feats]
    settings = packing.probe(roberta, roberta_feats, lambda fs: pad_inputs(fs, 1), _forward, 1)
    assert settings is not None and settings["position_offset"] == 2


class _NoPositions(torch.nn.Module):
    """A model that ignores position ids and the 4-D mask (as a bag of words would): packing changes
    its logits, so the probe must refuse it."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(64, 3)
        self.config = type("C", (), {"_attn_implementation": "sdpa"})()

    def forward(self, input_ids, attention_mask=None, **_):
        x = self.emb(input_ids)
        return type("O", (), {"logits": x + x.mean(dim=1, keepdim=True)})()


def test_choose_falls_back_or_refuses():
    feats = _features([9, 3, 5, 12, 4, 7])
    kw = dict(features=feats, collate=lambda fs: pad_inputs(fs, 0), forward=_forward, pad_id=0)
    assert packing.choose("auto", packs=True, model=_tiny_bert(), **kw)[0] == "packed"
    mode, why, _ = packing.choose("auto", packs=True, model=_NoPositions(), **kw)
    assert mode == "random" and "probe" in why
    assert packing.choose("auto", packs=False, model=_tiny_bert(), **kw)[0] == "grouped"
    assert packing.choose("grouped", packs=True, model=_tiny_bert(), **kw)[0] == "grouped"
    with pytest.raises(RunassistError, match="does not give a sentence the same logits"):
        packing.choose("packed", packs=True, model=_NoPositions(), **kw)
    with pytest.raises(RunassistError, match="not per token"):
        packing.choose("packed", packs=False, model=_tiny_bert(), **kw)


def test_old_group_by_length_key_still_reads():
    assert TrainConfig(group_by_length=True).batching == "grouped"
    assert TrainConfig(group_by_length=False).batching == "random"
    assert TrainConfig().batching == "auto"


def test_ner_training_packs_and_says_so(ner_files, tiny_model, tmp_path):
    from runassist.tasks import load_config
    from runassist.train.run import train

    summaries = {}
    for mode in ("auto", "random"):
        cfg = load_config(None, ner_overrides(ner_files, tiny_model, tmp_path / mode, epochs=1,
                                              batching=mode, early_stopping="null"))
        summaries[mode] = json.loads((train(cfg, progress=False).run / "summary.json").read_text())
    packed, padded = summaries["auto"], summaries["random"]
    assert packed["choices"]["batching"] == {"mode": "packed", "why": "auto: the model passed the packing probe"}
    assert padded["choices"]["batching"]["mode"] == "random"
    assert packed["tokens"] == padded["tokens"]  # the same sentences
    assert packed["padding_fraction"] < 0.7 * padded["padding_fraction"], (packed["padding_fraction"],
                                                                         padded["padding_fraction"])
    kernels = packed["choices"]["step_kernels"]  # on CPU: the step's dropout and attention by hand
    assert kernels["attention"] == "runassist_cpu_training" and kernels["dropout_modules"] >= 3, kernels
