"""The relation classifier: a pretrained encoder, and a linear head on the representations of the
two entity start markers (Baldini Soares et al. 2019, "entity start"; Zhou & Chen 2021 with typed
markers), which beats reading [CLS] for relation extraction.

transformers has no Auto class for this head, so the model is a small ``nn.Module`` that saves as
an ordinary encoder folder (``from_pretrained``-loadable, safetensors) plus
``relation_head.safetensors`` and ``relation_head.json``; loading reads safetensors only.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from runassist.atomic import read_json, write_json

HEAD_WEIGHTS = "relation_head.safetensors"
HEAD_CONFIG = "relation_head.json"


class EntityMarkerClassifier(torch.nn.Module):
    base_model_prefix = "encoder"  # what train.freeze finds as the base model

    def __init__(self, encoder: torch.nn.Module, labels: list[str], dropout: float = 0.1):
        super().__init__()
        self.encoder, self.labels = encoder, list(labels)
        hidden = encoder.config.hidden_size
        self.dropout = torch.nn.Dropout(dropout)
        self.classifier = torch.nn.Linear(2 * hidden, len(labels))
        self._inputs = set(inspect.signature(encoder.forward).parameters)

    @property
    def config(self) -> Any:
        return self.encoder.config

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.encoder.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, head_index: torch.Tensor | None = None,
                tail_index: torch.Tensor | None = None) -> SimpleNamespace:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        states = self.encoder(**{k: v for k, v in given.items() if v is not None and k in self._inputs})[0]
        rows = torch.arange(states.shape[0], device=states.device)
        pair = torch.cat([states[rows, head_index], states[rows, tail_index]], dim=-1)
        return SimpleNamespace(logits=self.classifier(self.dropout(pair)))

    def save_pretrained(self, folder: str | Path, safe_serialization: bool = True, **kwargs: Any) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        self.encoder.save_pretrained(folder, safe_serialization=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.classifier.state_dict().items()},
                  str(folder / HEAD_WEIGHTS))
        write_json(folder / HEAD_CONFIG, {"labels": self.labels, "input": "entity start markers (head, tail)"})

    @classmethod
    def from_pretrained(cls, source: str, labels: list[str], *, dropout: float | None = None) -> "EntityMarkerClassifier":
        from safetensors.torch import load_file
        from transformers import AutoModel

        encoder = AutoModel.from_pretrained(source, use_safetensors=True)
        model = cls(encoder, labels, dropout=0.1 if dropout is None else dropout)
        head = Path(source) / HEAD_WEIGHTS
        if head.is_file():
            saved = read_json(Path(source) / HEAD_CONFIG).get("labels")
            if saved == list(labels):  # a new label set (continued training on new data) starts a new head
                model.classifier.load_state_dict(load_file(str(head)))
        return model
