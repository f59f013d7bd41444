"""Hyperparameters turned into objects: freezing, LoRA, optimizer, schedule, class weights."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from runassist.config import LoraConfig, TrainConfig
from runassist.errors import ConfigError

_NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight", "ln_")


def layer_list(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    """The stack of transformer blocks (``encoder.layer`` in BERT, ``layers``/``h`` elsewhere)."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    best = None
    for name, module in base.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.split(".")[-1] in ("layer", "layers", "h", "block"):
            if best is None or len(module) > len(best):
                best = module
    return best


def apply_freeze(model: torch.nn.Module, freeze: str) -> list[str]:
    """Freeze parameters in place; returns the names of frozen parameters."""
    if freeze == "none":
        return []
    prefix = getattr(model, "base_model_prefix", "")
    base = getattr(model, prefix, None)
    if base is None:
        raise ConfigError(f"train.freeze: cannot find the base model ('{prefix}') of {type(model).__name__}")
    targets: list[torch.nn.Module] = []
    if freeze == "head_only":
        targets = [base]
    else:
        # get_input_embeddings() names the token embeddings of every transformers model (BERT's
        # embeddings.word_embeddings, GPT-2's wte, Llama's embed_tokens); BERT-style models keep
        # position and type embeddings beside them in one `embeddings` module, frozen with them.
        found = getattr(base, "embeddings", None)
        if not isinstance(found, torch.nn.Module):
            found = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        if found is None:
            raise ConfigError(f"train.freeze: {freeze} but {type(model).__name__} has no input embeddings to freeze")
        targets.append(found)
        if freeze.startswith("bottom:"):
            n = int(freeze.split(":")[1])
            layers = layer_list(model)
            if layers is None or n > len(layers):
                have = 0 if layers is None else len(layers)
                raise ConfigError(f"train.freeze: bottom:{n} but the model has {have} layers")
            targets.extend(layers[:n])
    frozen_ids = set()
    for module in targets:
        for param in module.parameters():
            param.requires_grad_(False)
            frozen_ids.add(id(param))
    return [name for name, p in model.named_parameters() if id(p) in frozen_ids]


def apply_lora(model: torch.nn.Module, lora: LoraConfig, *, task_type: str) -> torch.nn.Module:
    from peft import LoraConfig as PeftLora
    from peft import get_peft_model

    head = [n for n in ("classifier", "score", "qa_outputs") if hasattr(model, n)]
    names = sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
    targets = list(lora.target_modules) if lora.target_modules else _attention_projections(names)
    config = PeftLora(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=targets, modules_to_save=head, task_type=task_type)
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise ConfigError(f"train.lora.target_modules: {exc}; linear layers in this model: {', '.join(names)}") from None


# The query and value projections by family: BERT's, Llama's/Mistral's/Qwen's, GPT-2's fused ones,
# Phi-3's fused ones. LoRA on these two is the original paper's recipe.
_PROJECTIONS = (("query", "value"), ("q_proj", "v_proj"), ("c_attn",), ("qkv_proj",), ("q", "v"))


def _attention_projections(names: list[str]) -> list[str]:
    for group in _PROJECTIONS:
        if all(name in names for name in group):
            return list(group)
    raise ConfigError(f"train.lora.target_modules: not set, and this model has none of the usual attention "
                      f"projections; set it to some of its linear layers: {', '.join(names)}")


def build_optimizer(model: torch.nn.Module, train: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if any(k in name for k in _NO_DECAY) else decay).append(param)
    groups = [{"params": decay, "weight_decay": train.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ConfigError("train.freeze: every parameter is frozen; nothing would train")
    if train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=train.lr, momentum=train.momentum, foreach=True)
    # The fused AdamW kernel runs on CPU and CUDA in torch 2.13: ~4x faster steps than the default.
    return torch.optim.AdamW(groups, lr=train.lr, fused=device.type in ("cpu", "cuda"))


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig, total_steps: int):
    from transformers import get_scheduler

    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[train.scheduler]
    warmup = math.ceil(train.warmup_ratio * total_steps)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def class_weights(setting, labels: Sequence[str] | None, counts: dict[str, int]) -> torch.Tensor | None:
    if setting == "none":
        return None
    if labels is None:
        raise ConfigError("train.class_weights: this task has no label set to weigh; leave it at none")
    if setting == "balanced":
        total = sum(counts.get(label, 0) for label in labels)
        # n / (k * count): the sklearn "balanced" rule; a label never seen gets weight 1.
        return torch.tensor([total / (len(labels) * counts[label]) if counts.get(label) else 1.0
                             for label in labels], dtype=torch.float32)
    unknown = sorted(set(setting) - set(labels))
    if unknown:
        raise ConfigError(f"train.class_weights: unknown labels {', '.join(unknown)}; labels: {', '.join(labels)}")
    return torch.tensor([float(setting.get(label, 1.0)) for label in labels], dtype=torch.float32)

