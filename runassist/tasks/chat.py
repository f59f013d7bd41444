"""Chat fine-tuning of causal language models, trained on the assistant's messages only.

Rendering: a conversation is rendered with the tokenizer's own chat template (or a named one,
``task.template``, for a model that has none; it is then saved with the model, so
``from_pretrained`` + ``apply_chat_template`` works outside runassist, LLaMA-Factory #5904).

The loss mask comes from character offsets, not from template markers: each assistant message's
span is found by rendering the conversation up to it with ``add_generation_prompt`` and up to its
end, the text between the two being that message with its end-of-turn mark; the sub-tokens whose
characters fall there are trained on, the rest get -100. That is right for templates with and
without ``{% generation %}`` markers (transformers #34172, TRL #4201: an all-zero mask), and needs
no response template that could tokenise differently inside the conversation (TRL #598).

Truncation keeps a conversation's start. A conversation with no assistant sub-token left within
``model.max_length`` is dropped and counted (``examples_dropped`` in summary.json), never trained
on with an empty mask (transformers #34494).

Prediction: a conversation ending with a user message gets the next assistant message
(generated, or streamed: ``stream``); one ending with an assistant message is scored: its loss and
perplexity on the assistant tokens, which is also what dev evaluation reports, beside the base
model's figure on the same dev set (``dev_before_training``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from runassist.config import LoraConfig, TaskSection
from runassist.data.checks import CheckReport, SplitStats, percentiles
from runassist.data.records import ChatExample, Split
from runassist.errors import RunassistError
from runassist.tasks.base import IGNORE_INDEX, Capabilities, Feature, TaskState
from runassist.tasks.default import BaseTask
from runassist.tasks.generation import GenerationSettings, generation_config, stream_text

# The ChatML template (Qwen, SmolLM, ...), for models whose tokenizer has no chat template.
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
TEMPLATES = {"chatml": CHATML}
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "query", "key", "value", "c_attn", "qkv_proj")


class ChatSection(TaskSection):
    name: Literal["chat"] = "chat"
    template: Literal["model", "chatml"] = Field(
        "model", description="model: the tokenizer's own chat template (chatml when it has none) | chatml")
    system_prompt: str | None = Field(None, description="a system message put first in conversations without one")
    lora: Literal["auto", "always", "never"] = Field(
        "auto", description="auto: LoRA when the model has more than lora_above parameters and train.lora is empty")
    lora_above: int = Field(50_000_000, ge=0, description="parameters above which auto means LoRA")
    generation: GenerationSettings = Field(GenerationSettings(max_new_tokens=256),
                                           description="how replies are generated")


@dataclass(frozen=True)
class ChatPrediction:
    reply: str | None = None  # the generated assistant message (a conversation ending with the user)
    loss: float | None = None  # summed negative log-likelihood of the assistant tokens (a scored conversation)
    tokens: int = 0  # assistant tokens scored


class ChatTask(BaseTask):
    name = "chat"
    Section = ChatSection
    headline = "perplexity"
    headline_mode = "min"
    capabilities = Capabilities(onnx=False, int8_guard=False, streams=True)
    peft_task_type = "CAUSAL_LM"
    label_word = "conversation"
    tool_name = "chat"
    max_batch = 4  # logits are [batch, length, vocabulary]: 49k wide for SmolLM2
    evaluate_before_training = True
    curve_extras = ("loss",)

    @classmethod
    def init_defaults(cls) -> dict[str, Any]:
        return {"task": {"name": cls.name}, "model": {"source": "smollm2", "max_length": 512},
                "data": {"train": "chitchat:train", "dev": "chitchat:dev", "test": "chitchat:test",
                         "max_train_examples": 300, "max_eval_examples": 60},
                "train": {"epochs": 1, "lr": 2e-4, "batch_size": 4, "grad_accum": 2}}

    # -- data ---------------------------------------------------------------
    def scan_file(self, path: Path, *, require_labels: bool = True) -> Split:
        from runassist.data.chat import scan_chat_jsonl

        return scan_chat_jsonl(path, require_labels=require_labels)

    def label_set(self, examples: Sequence[ChatExample]) -> None:
        return None

    def label_units(self, example: ChatExample) -> tuple[str, ...]:
        return ()

    def unlabelled(self, example: ChatExample) -> ChatExample:
        """Up to its last user message: what a model is asked to answer."""
        messages = list(example.messages)
        while messages and messages[-1][0] == "assistant":
            messages.pop()
        return dataclasses.replace(example, messages=tuple(messages), respond=True)

    def example_from_input(self, item: Any) -> ChatExample:
        """A message (the user's), or ``{"messages": [{"role", "content"}, ...]}`` (OpenAI's layout)."""
        from runassist.data.chat import _messages

        if isinstance(item, str):
            return ChatExample((("user", item),), respond=True)
        if isinstance(item, dict):
            try:
                return ChatExample(tuple(_messages(item)), respond=True)
            except ValueError as exc:
                raise ValueError(str(exc)) from None
        raise ValueError('each input must be a message (a string) or {"messages": [{"role", "content"}, ...]}')

    # -- rendering ----------------------------------------------------------
    def load_processor(self, source: str) -> Any:
        from runassist.tasks.hf import load_tokenizer

        tokenizer = load_tokenizer(source)
        if self.task_cfg.template != "model" or not getattr(tokenizer, "chat_template", None):
            tokenizer.chat_template = TEMPLATES[self.task_cfg.template if self.task_cfg.template != "model"
                                                else "chatml"]
        if tokenizer.pad_token_id is None:  # causal LMs often have none; padding is masked anyway
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def _messages(self, example: ChatExample) -> list[dict[str, str]]:
        messages = [{"role": role, "content": content} for role, content in example.messages]
        if self.task_cfg.system_prompt and (not messages or messages[0]["role"] != "system"):
            messages.insert(0, {"role": "system", "content": self.task_cfg.system_prompt})
        return messages

    def render(self, tokenizer: Any, example: ChatExample) -> tuple[str, list[tuple[int, int]]]:
        """The rendered conversation and the character span of each assistant message in it (its end-
        of-turn mark included: the model must learn to stop)."""
        messages = self._messages(example)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        spans = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True) \
                if i else ""
            upto = tokenizer.apply_chat_template(messages[:i + 1], tokenize=False)
            if upto.startswith(before) and full.startswith(upto):
                spans.append((len(before), len(upto)))
                continue
            # A template that renders earlier turns differently once more follow (some drop reasoning
            # from past replies): find the message's text itself, after the previous span.
            start = full.find(message["content"], spans[-1][1] if spans else 0)
            if start < 0:
                raise RunassistError(f"{example.source or 'input'}: cannot find assistant message {i} in the "
                                     "conversation as the chat template renders it")
            spans.append((start, start + len(message["content"])))
        return full, spans

    # -- features -----------------------------------------------------------
    def encode(self, examples: Sequence[ChatExample], tokenizer: Any, state: TaskState) -> list[Feature]:
        """A conversation to score (or train on): its tokens and the assistant-token mask (dropped, and
        counted, when no assistant token is left within max_length). One to respond to: the prompt to
        generate from, cut from the left to fit."""
        features = []
        limit = self.model_cfg.max_length
        for index, ex in enumerate(examples):
            if ex.respond:
                ids = self._prompt_ids(tokenizer, ex)
                keep = max(8, limit - self.task_cfg.generation.max_new_tokens)
                features.append(Feature(example=index, inputs={"input_ids": ids[-keep:]},
                                        meta={"generate": True, "cut": len(ids) > keep}))
                continue
            text, spans = self.render(tokenizer, ex)
            encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            ids, offsets = encoded["input_ids"][:limit], encoded["offset_mapping"][:limit]
            target = [ids[i] if any(a <= start < b for a, b in spans) else IGNORE_INDEX
                      for i, (start, _) in enumerate(offsets)]
            if all(t == IGNORE_INDEX for t in target[1:]):  # the first token is never predicted
                continue  # no assistant token left: never trained on with an empty mask
            features.append(Feature(example=index, inputs={"input_ids": ids}, target=target,
                                    meta={"generate": False, "cut": len(encoded["input_ids"]) > limit}))
        return features

    def feature_stats(self, features: Sequence[Feature]) -> dict[str, int]:
        stats = super().feature_stats(features)
        stats["examples_cut"] = sum(1 for f in features if f.meta["cut"])
        stats["assistant_tokens"] = sum(sum(t != IGNORE_INDEX for t in f.target[1:]) for f in features if f.target)
        return stats

    def collate(self, features: Sequence[Feature], tokenizer: Any) -> dict[str, torch.Tensor]:
        """Right padding to score or train; left padding to generate (new tokens follow each prompt)."""
        longest = max(f.size for f in features)
        pad = tokenizer.pad_token_id
        left = features[0].meta["generate"]
        ids, mask = [], []
        for f in features:
            fill = [pad] * (longest - f.size)
            ids.append(fill + list(f.inputs["input_ids"]) if left else list(f.inputs["input_ids"]) + fill)
            ones, zeros = [1] * f.size, [0] * (longest - f.size)
            mask.append(zeros + ones if left else ones + zeros)
        batch = {"input_ids": torch.tensor(ids, dtype=torch.long), "attention_mask": torch.tensor(mask, dtype=torch.long)}
        if not left and all(f.target is not None for f in features):
            batch["labels"] = torch.tensor([list(f.target) + [IGNORE_INDEX] * (longest - f.size) for f in features],
                                           dtype=torch.long)
        return batch

    # -- model --------------------------------------------------------------
    def build_model(self, source: str, state: TaskState, *, dropout: float | None = None) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM

        from runassist.tasks.hf import load_model

        model = load_model(AutoModelForCausalLM, source, None, dropout=dropout)
        for key, value in self.task_cfg.generation.model_dump().items():  # saved as generation_config.json
            setattr(model.generation_config, key, value)
        return model

    def default_lora(self, model: torch.nn.Module) -> LoraConfig | None:
        params = sum(p.numel() for p in model.parameters())
        if self.task_cfg.lora == "never" or (self.task_cfg.lora == "auto" and params <= self.task_cfg.lora_above):
            return None
        names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                 if isinstance(module, torch.nn.Linear)}
        targets = [n for n in LORA_TARGETS if n in names] or sorted(names - {"lm_head"})
        return LoraConfig(r=8, alpha=16, dropout=0.05, target_modules=targets)

    def loss(self, outputs: Any, batch: dict[str, torch.Tensor], weights: torch.Tensor | None) -> torch.Tensor:
        """Next-token cross-entropy over the assistant tokens (positions shifted by one)."""
        logits = outputs.logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)

    def infer(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], features: Sequence[Feature],
              processor: Any = None) -> list[Any]:
        """Generated replies (text), or per conversation (summed NLL, tokens) of its assistant tokens."""
        kinds = {f.meta["generate"] for f in features}
        if len(kinds) > 1:  # a file of conversations to answer and to score: each kind as its own batch
            out: list[Any] = [None] * len(features)
            for generate in kinds:
                idx = [i for i, f in enumerate(features) if f.meta["generate"] == generate]
                part = [features[i] for i in idx]
                sub = self.collate([dataclasses.replace(f, target=None) for f in part], processor)
                sub = {k: v.to(batch["input_ids"].device) for k, v in sub.items()}
                for i, result in zip(idx, self.infer(model, sub, part, processor)):
                    out[i] = result
            return out
        if features[0].meta["generate"]:
            config = generation_config(self.task_cfg.generation, processor, model)
            out = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 generation_config=config)
            new = out[:, batch["input_ids"].shape[1]:]
            return [text.strip() for text in processor.batch_decode(new, skip_special_tokens=True)]
        logits = self.forward(model, batch).logits
        results = []
        for row, f in enumerate(features):
            target = torch.tensor(f.target[1:f.size], device=logits.device)
            keep = target != IGNORE_INDEX
            logp = torch.log_softmax(logits[row, :f.size - 1].float(), dim=-1)
            nll = -logp[keep].gather(1, target[keep][:, None]).sum()
            results.append(np.array([float(nll), float(keep.sum())]))
        return results

    # -- outputs ------------------------------------------------------------
    def decode(self, examples: Sequence[ChatExample], features: Sequence[Feature], outputs: Sequence[Any],
               state: TaskState) -> list[ChatPrediction]:
        found: dict[int, ChatPrediction] = {}
        for feature, out in zip(features, outputs):
            found[feature.example] = (ChatPrediction(reply=out) if feature.meta["generate"]
                                      else ChatPrediction(loss=float(out[0]), tokens=int(out[1])))
        return [found.get(i, ChatPrediction()) for i in range(len(examples))]  # a dropped conversation: nothing

    def score(self, examples: Sequence[ChatExample], predictions: Sequence[ChatPrediction],
              state: TaskState) -> dict[str, Any]:
        scored = [p for p in predictions if p.loss is not None]
        tokens = sum(p.tokens for p in scored)
        loss = sum(p.loss for p in scored) / tokens if tokens else float("nan")
        return {"loss": loss, "perplexity": math.exp(loss) if tokens else float("nan"), "tokens": tokens,
                "conversations": len(scored), "dropped": len(predictions) - len(scored)}

    def to_json(self, example: ChatExample, prediction: ChatPrediction) -> dict[str, Any]:
        if prediction.reply is not None:
            return {"reply": prediction.reply}
        if prediction.loss is None:
            return {"loss": None, "perplexity": None, "tokens": 0, "note": "no assistant token within max_length"}
        loss = prediction.loss / max(prediction.tokens, 1)
        return {"loss": round(loss, 4), "perplexity": round(math.exp(loss), 4), "tokens": prediction.tokens}

    def outcome(self, prediction: ChatPrediction) -> Any:
        return prediction.reply

    def gold_json(self, example: ChatExample) -> dict[str, Any]:
        return {"messages": [{"role": r, "content": c} for r, c in example.messages]}

    def stream(self, model: torch.nn.Module, processor: Any, example: ChatExample, state: TaskState, *,
               stop: Any = None, settings: dict[str, Any] | None = None, usage: dict[str, Any] | None = None) -> Any:
        (feature,) = self.encode([self.unlabelled(example)], processor, state)
        batch = self.collate([feature], processor)
        device = next(model.parameters()).device
        config = generation_config(self.task_cfg.generation, processor, model, settings)
        return stream_text(model, processor, {k: v.to(device) for k, v in batch.items()}, config, stop=stop,
                           usage=usage)

    def _prompt_ids(self, tokenizer: Any, example: ChatExample) -> list[int]:
        prompt = tokenizer.apply_chat_template(self._messages(example), tokenize=False, add_generation_prompt=True)
        return tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def prompt_tokens(self, processor: Any, example: ChatExample) -> int:
        """The prompt's length before ``encode`` cuts it from the left to fit model.max_length."""
        return len(self._prompt_ids(processor, self.unlabelled(example)))

    # -- check-data -----------------------------------------------------------
    def check_labels(self, read: dict[str, list[Any]], report: CheckReport) -> None:
        if "train" in read and not any(any(r == "assistant" for r, _ in ex.messages) for ex in read["train"]):
            report.errors.append("train: no assistant message at all; the model would have nothing to learn")

    def split_stats(self, spec: str, examples: Sequence[ChatExample]) -> SplitStats:
        stats = super().split_stats(spec, examples)
        stats.words = sum(len(c.split()) for ex in examples for _, c in ex.messages)
        stats.length = percentiles([len(ex.messages) for ex in examples])  # messages per conversation
        stats.labels = {"assistant messages": sum(r == "assistant" for ex in examples for r, _ in ex.messages)}
        return stats

    def overlap_key(self, example: ChatExample) -> tuple:
        return example.messages

    def check_processor(self, name: str, examples: Sequence[ChatExample], tokenizer: Any, stats: SplitStats,
                        report: CheckReport) -> None:
        """Lengths as rendered; conversations whose assistant messages are cut at max_length, and those
        with none left (dropped from training)."""
        limit = self.model_cfg.max_length
        lengths, cut, dropped, first = [], 0, 0, ""
        for ex in examples:
            if not any(r == "assistant" for r, _ in ex.messages):
                continue
            text, spans = self.render(tokenizer, ex)
            offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            lengths.append(len(offsets))
            if len(offsets) > limit:
                boundary = offsets[limit][0]
                if any(b > boundary for _, b in spans):
                    cut += 1
                    first = first or ex.source
                    dropped += all(a >= boundary for a, _ in spans)
        stats.subtokens = percentiles(lengths)
        stats.over_max_length = cut
        if cut:
            report.warnings.append(f"{first}: {cut} of {len(examples)} conversations in {name} have assistant text past "
                                   f"model.max_length={limit} sub-tokens: it is cut, and {dropped} keep no assistant "
                                   "token at all and are dropped from training")

    # -- agent tools and the page -------------------------------------------------
    def input_schema(self, max_chars: int) -> dict[str, Any]:
        message = {"type": "object", "required": ["role", "content"], "additionalProperties": False,
                   "properties": {"role": {"enum": ["system", "user", "assistant"]},
                                  "content": {"type": "string", "maxLength": max_chars}}}
        return {"anyOf": [{"type": "string", "maxLength": max_chars, "description": "a user message"},
                          {"type": "object", "required": ["messages"], "additionalProperties": False,
                           "properties": {"messages": {"type": "array", "items": message, "minItems": 1}},
                           "description": "a conversation, ending with the user's message"}]}

    def tool_description(self, labels: list[str] | None, about: str) -> str:
        return (f"Reply as the assistant fine-tuned {about}. Returns one prediction per input, in order: reply "
                "(the next assistant message).")

    def labels_summary(self, labels: list[str] | None) -> str:
        return "replies to conversations"
