"""Sequence to sequence: a model writes a text for a text (summarisation, translation, any rewriting).

The kind of model is read from its config, never from the task's settings:

- **encoder-decoder** (``AutoModelForSeq2SeqLM``: T5, mT5, BART, Marian): the source, put in
  ``task.prompt`` if one is set (``"summarize: {source}"`` for T5), is the encoder's input; the target
  is the decoder's, shifted right behind the model's ``decoder_start_token_id``.
- **decoder-only** (``AutoModelForCausalLM``: GPT-2, Llama, Qwen): one sequence, the prompt
  (``"{source}\\n\\n### Output:\\n"`` by default) then the target and the end-of-sequence token; the loss
  covers the target tokens only (every prompt position is the ignore index), and batches are padded
  with the eos token when the tokenizer has no pad token. The real eos closing each target stays a
  label, so the model learns to stop. At prediction time prompts are padded on the left, so that
  every row's next token follows its own last token.

Sources longer than ``model.max_length`` (the prompt template and special tokens included) are cut at
the end of the source text, never in the template; targets are cut at ``task.max_target_length``.
``check-data`` counts both, and dev/test targets longer than ``generation.max_new_tokens``.

Generation (dev evaluation, test, predict, the service) uses ``task.generation``, which is written into
the model folder's ``generation_config.json``; ``max_new_tokens`` is always passed, so the 20-token
default of transformers (#10032) never applies. Scores are ROUGE-1/2/L/Lsum, BLEU and chrF
(``metrics.generation``, where the rougeLsum newline and sacrebleu reference-wrapping traps are closed);
``task.headline`` picks the one early stopping and the kept model follow.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from runassist.config import TaskSection
from runassist.data.checks import CheckReport, SplitStats, percentiles
from runassist.data.records import Seq2SeqExample, Split
from runassist.errors import ConfigError, RunassistError
from runassist.tasks.base import IGNORE_INDEX, Capabilities, Feature, TaskState
from runassist.tasks.default import BaseTask
from runassist.tasks.generation import GenerationSettings

ENCODER_DECODER, DECODER_ONLY = "encoder-decoder", "decoder-only"
DECODER_PROMPT = "{source}\n\n### Output:\n"
HEADLINES = ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "chrf")
_BATCH = 512  # texts per tokenizer call


class Seq2SeqSection(TaskSection):
    name: Literal["seq2seq"] = "seq2seq"
    source_column: str = Field("source", description="JSONL key or CSV/TSV column holding the input text")
    target_column: str = Field("target", description="JSONL key or CSV/TSV column holding the text to write")
    max_target_length: int = Field(128, ge=2, le=8192,
                                   description="sub-tokens of a training target kept (end token included); longer "
                                               "targets are cut, and check-data counts them")
    prompt: str | None = Field(None, description="how the source is put to the model, {source} where it goes; empty: "
                                                 "the source as it is for encoder-decoder models (T5, BART, Marian), "
                                                 "'{source}\\n\\n### Output:\\n' for decoder-only ones (GPT-2, Llama); "
                                                 "e.g. 'summarize: {source}' for T5")
    generation: GenerationSettings = Field(default_factory=GenerationSettings,
                                           description="how outputs are written on dev, test, predict and serve; "
                                                       "saved with the run (model/generation_config.json)")
    headline: Literal["rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "chrf"] = Field(
        "rougeL", description="the score early stopping and the kept model follow: rougeLsum for summaries, bleu or "
                              "chrf for translation")
    language: Literal["auto", "en", "zh", "other"] = Field(
        "auto", description="how outputs are scored: en (ROUGE stemmed, BLEU 13a) | zh (ROUGE on characters, BLEU's zh "
                            "tokenizer) | other (ROUGE on Unicode words) | auto: from the gold texts")
    eval_max_examples: int | None = Field(None, ge=1, description="dev examples generated and scored at each evaluation "
                                                                  "during training (generating is slow); empty: all. "
                                                                  "Test is always scored whole")

    @field_validator("prompt")
    @classmethod
    def _one_source(cls, value: str | None) -> str | None:
        if value is not None and value.count("{source}") != 1:
            raise ValueError("must hold {source} exactly once, where the source text goes")
        return value


@dataclass(frozen=True)
class Generated:
    text: str
    tokens: int  # tokens generated, the end token included
    capped: bool  # stopped at generation.max_new_tokens, not at an end token: the text may be cut


def architecture(config: Any) -> str:
    """encoder-decoder or decoder-only, from a model's config; a model that cannot write text is refused."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
                                                        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES)

    kind = getattr(config, "model_type", "")
    if getattr(config, "is_encoder_decoder", False) and kind in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        return ENCODER_DECODER
    # BERT-like encoders also have a causal-LM class, but only as a decoder half (is_decoder).
    if kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and (kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
                                                      or getattr(config, "is_decoder", False)):
        return DECODER_ONLY
    raise RunassistError(f"model.source: a {kind or type(config).__name__} model cannot write text; a seq2seq run needs "
                         "an encoder-decoder model (T5, mT5, BART, Marian) or a decoder-only language model (GPT-2, "
                         "Llama, Qwen)")


class Seq2SeqTask(BaseTask):
    name = "seq2seq"
    Section = Seq2SeqSection
    capabilities = Capabilities(onnx=False, int8_guard=False, streams=True)
    label_word = "target"
    tool_name = "generate_text"
    max_batch = 16  # beams multiply it, and every step's logits span the vocabulary

    def __init__(self, section: Seq2SeqSection, data: Any, model: Any):
        super().__init__(section, data, model)
        self.headline = section.headline
        same_scale = ("bleu", "chrf") if section.headline in ("bleu", "chrf") else ("rouge1", "rouge2", "rougeL")
        self.curve_extras = tuple(m for m in same_scale if m != section.headline)  # one chart, one scale
        self._kind: str | None = None  # known once a model folder's config is read
        self._tokenizer: Any = None

    @classmethod
    def init_defaults(cls) -> dict[str, Any]:
        return {"task": {"name": cls.name, "headline": "rougeLsum", "eval_max_examples": 200},
                "model": {"source": "t5-small", "max_length": 512},
                "train": {"epochs": 3, "lr": 3e-4, "batch_size": 8}}

    @property
    def title(self) -> str:
        return f"{self.name} ({self._kind})" if self._kind else self.name

    @property
    def peft_task_type(self) -> str | None:  # type: ignore[override]
        return {ENCODER_DECODER: "SEQ_2_SEQ_LM", DECODER_ONLY: "CAUSAL_LM"}.get(self._kind or "")

    # -- data ---------------------------------------------------------------
    def scan_file(self, path: Path, *, require_labels: bool = True) -> Split:
        from runassist.data.text_pairs import scan_text_pairs

        return scan_text_pairs(path, source_column=self.task_cfg.source_column,
                               target_column=self.task_cfg.target_column, fmt=self.data_cfg.format,
                               require_targets=require_labels)

    def label_set(self, examples: Sequence[Seq2SeqExample]) -> None:
        return None

    def label_units(self, example: Seq2SeqExample) -> tuple[str, ...]:
        return ()

    def initial_extras(self, examples: Sequence[Seq2SeqExample]) -> dict[str, Any]:
        # Saved in task.json, and part of the tokenisation cache's key: the same tokenizer encodes
        # differently for an encoder-decoder and a decoder-only model.
        return {"architecture": self._require_kind()}

    def dev_examples(self, examples: Sequence[Seq2SeqExample]) -> list[Seq2SeqExample]:
        """With ``eval_max_examples``: that many, spread evenly over the split (the same ones every time)."""
        cap = self.task_cfg.eval_max_examples
        if cap is None or len(examples) <= cap:
            return list(examples)
        return [examples[i * len(examples) // cap] for i in range(cap)]

    def unlabelled(self, example: Seq2SeqExample) -> Seq2SeqExample:
        return dataclasses.replace(example, target=None)

    def example_from_input(self, item: Any) -> Seq2SeqExample:
        if not isinstance(item, str) or not item.strip():
            raise ValueError("each input must be a non-empty string (the source text)")
        return Seq2SeqExample(item)

    def input_columns(self) -> list[str]:
        return [self.task_cfg.source_column]

    def example_from_row(self, row: dict[str, str]) -> Seq2SeqExample:
        return Seq2SeqExample(row.get(self.task_cfg.source_column) or "")

    # -- model kind -----------------------------------------------------------
    def check_source(self, source: str) -> None:
        from runassist.tasks.hf import load_config

        super().check_source(source)
        self._kind = architecture(load_config(source))

    def load_processor(self, source: str) -> Any:
        from runassist.tasks.hf import load_config, load_tokenizer

        tokenizer = load_tokenizer(source)
        path = Path(source).expanduser()
        if (path / "config.json").is_file() or not path.exists():  # a model folder or a hub name; an adapter
            self._kind = architecture(load_config(source))          # folder has none: build_model tells
        self._tokenizer = tokenizer
        return tokenizer

    def _require_kind(self, state: TaskState | None = None) -> str:
        kind = self._kind or (state.extras.get("architecture") if state is not None else None)
        if kind is None:
            raise RunassistError("seq2seq: the kind of model (encoder-decoder or decoder-only) is not known yet; "
                                 "load the processor or the model first")
        return kind

    @property
    def decoder_only(self) -> bool:
        return self._require_kind() == DECODER_ONLY

    # -- features -----------------------------------------------------------
    def _template(self, kind: str) -> tuple[str, str]:
        prompt = self.task_cfg.prompt or (DECODER_PROMPT if kind == DECODER_ONLY else "{source}")
        head, tail = prompt.split("{source}")
        return head, tail

    def _pieces(self, examples: Sequence[Seq2SeqExample], tokenizer: Any, kind: str) -> list[dict[str, Any]]:
        """Per example: the prompt's ids (source cut to fit) and the target's (cut, end token added),
        with the full lengths and whether either was cut."""
        head, tail = self._template(kind)
        prefix, suffix = _specials(tokenizer)
        if kind == DECODER_ONLY:
            suffix = []  # an end token after the prompt would tell the model to stop before writing
            eos = tokenizer.eos_token_id
            if eos is None:
                raise RunassistError("model.source: the tokenizer has no end-of-sequence token; a decoder-only "
                                     "model trained without one could never stop writing")
            t_prefix, t_suffix = [], [eos]
        else:
            t_prefix, t_suffix = _specials(tokenizer, target=True)
        head_ids = tokenizer(head, add_special_tokens=False)["input_ids"] if head else []
        tail_ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []
        fixed = len(prefix) + len(suffix) + len(head_ids) + len(tail_ids)
        room = self.model_cfg.max_length - fixed
        if room < 1:
            raise ConfigError(f"task.prompt: the template and special tokens take {fixed} sub-tokens, leaving no room "
                              f"for the source in model.max_length={self.model_cfg.max_length}")
        t_room = self.task_cfg.max_target_length - len(t_prefix) - len(t_suffix)
        if t_room < 1:
            raise ConfigError(f"task.max_target_length={self.task_cfg.max_target_length} leaves no room for the target "
                              "beside its special tokens")
        out: list[dict[str, Any]] = []
        for start in range(0, len(examples), _BATCH):
            chunk = examples[start:start + _BATCH]
            sources = tokenizer([ex.text for ex in chunk], add_special_tokens=False, verbose=False)["input_ids"]
            with_target = [i for i, ex in enumerate(chunk) if ex.target is not None]
            targets: dict[int, list[int]] = {}
            if with_target:
                texts = [chunk[i].target for i in with_target]
                encoded = (tokenizer(texts, add_special_tokens=False, verbose=False) if kind == DECODER_ONLY
                           else tokenizer(text_target=texts, add_special_tokens=False, verbose=False))["input_ids"]
                targets = dict(zip(with_target, encoded))
            for i, src in enumerate(sources):
                prompt = prefix + head_ids + src[:room] + tail_ids + suffix
                piece: dict[str, Any] = {"prompt": prompt, "source_length": len(src) + fixed,
                                         "source_cut": len(src) > room, "target": None, "target_length": 0,
                                         "target_cut": False}
                if i in targets:
                    tgt = targets[i]
                    piece.update(target=t_prefix + tgt[:t_room] + t_suffix,
                                 target_length=len(tgt) + len(t_prefix) + len(t_suffix), target_cut=len(tgt) > t_room)
                out.append(piece)
        return out

    def encode(self, examples: Sequence[Seq2SeqExample], tokenizer: Any, state: TaskState) -> list[Feature]:
        """One feature per example: ``inputs`` the prompt, ``target`` the target's ids (None unlabelled)."""
        if not examples:
            return []
        features = []
        for index, piece in enumerate(self._pieces(examples, tokenizer, self._require_kind(state))):
            target = piece["target"]
            features.append(Feature(example=index, inputs={"input_ids": piece["prompt"]}, target=target,
                                    meta={"truncated": piece["source_cut"] or piece["target_cut"],
                                          "source_cut": piece["source_cut"], "target_cut": piece["target_cut"]},
                                    size=len(piece["prompt"]) + len(target or ())))
        return features

    def feature_stats(self, features: Sequence[Feature]) -> dict[str, int]:
        stats = super().feature_stats(features)
        stats["sources_cut"] = sum(1 for f in features if f.meta.get("source_cut"))
        stats["targets_cut"] = sum(1 for f in features if f.meta.get("target_cut"))
        return stats

    def collate(self, features: Sequence[Feature], tokenizer: Any) -> dict[str, torch.Tensor]:
        """Encoder-decoder: sources and labels padded on the right. Decoder-only: prompt + target with
        labels on the target only (training), or prompts padded on the left (generation)."""
        pad = _pad_id(tokenizer)
        prompts = [list(f.inputs["input_ids"]) for f in features]
        labelled = all(f.target is not None for f in features)
        if self.decoder_only:
            if not labelled:
                ids, mask = _pad(prompts, pad, left=True)
                return {"input_ids": ids, "attention_mask": mask}
            ids, mask = _pad([p + list(f.target) for p, f in zip(prompts, features)], pad)
            labels, _ = _pad([[IGNORE_INDEX] * len(p) + list(f.target) for p, f in zip(prompts, features)],
                             IGNORE_INDEX)
            return {"input_ids": ids, "attention_mask": mask, "labels": labels}
        ids, mask = _pad(prompts, pad)
        batch = {"input_ids": ids, "attention_mask": mask}
        if labelled:
            batch["labels"], _ = _pad([list(f.target) for f in features], IGNORE_INDEX)
        return batch

    # -- model --------------------------------------------------------------
    def build_model(self, source: str, state: TaskState, *, dropout: float | None = None) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        from runassist.tasks.generation import generation_config
        from runassist.tasks.hf import load_config, load_model, load_tokenizer

        self._kind = architecture(load_config(source))
        auto = AutoModelForSeq2SeqLM if self._kind == ENCODER_DECODER else AutoModelForCausalLM
        model = load_model(auto, source, None, dropout=dropout)
        tokenizer = self._tokenizer if self._tokenizer is not None else load_tokenizer(source)
        # The run's settings become the model's own, so model/generation_config.json holds them.
        model.generation_config = generation_config(self.task_cfg.generation, tokenizer, model)
        return model

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Any:
        inputs: dict[str, Any] = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if "labels" in batch:
            inputs["use_cache"] = False  # training: no past key values to keep
            if not self.decoder_only:
                config = getattr(model, "module", model).config  # under DDP, the wrapped model's
                inputs["decoder_input_ids"] = shift_right(batch["labels"], config.decoder_start_token_id,
                                                          config.pad_token_id)
        return model(**inputs)

    def loss(self, outputs: Any, batch: dict[str, torch.Tensor], weights: torch.Tensor | None) -> torch.Tensor:
        """Mean cross-entropy over the target tokens of the batch (a decoder-only model predicts each
        token from the ones before it: logits and labels are shifted by one)."""
        logits, labels = outputs.logits.float(), batch["labels"]
        if self.decoder_only:
            logits, labels = logits[:, :-1], labels[:, 1:]
        total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX,
                                reduction="sum")
        return total / (labels != IGNORE_INDEX).sum().clamp(min=1)

    def infer(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], features: Sequence[Feature],
              processor: Any = None) -> list[dict[str, Any]]:
        """``generate()`` with the run's settings; per feature the text, the tokens written and whether
        it stopped at ``max_new_tokens``."""
        from runassist.tasks.generation import generation_config

        tokenizer = processor if processor is not None else self._tokenizer
        config = generation_config(self.task_cfg.generation, tokenizer, model)
        out = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             generation_config=config)
        # Decoder-only output repeats the prompt; encoder-decoder output starts with the decoder start token.
        new = out[:, batch["input_ids"].shape[1]:] if self.decoder_only else out[:, 1:]
        eos = config.eos_token_id
        ends = set(eos if isinstance(eos, list) else [eos])
        results = []
        for row in new.tolist():
            n = next((i + 1 for i, token in enumerate(row) if token in ends), len(row))
            stopped = bool(row) and row[n - 1] in ends
            results.append({"text": tokenizer.decode(row[:n], skip_special_tokens=True).strip(), "tokens": n,
                            "capped": not stopped and n >= config.max_new_tokens})
        return results

    def stream(self, model: torch.nn.Module, processor: Any, example: Any, state: TaskState, *,
               stop: Any = None, settings: dict[str, Any] | None = None, usage: dict[str, Any] | None = None) -> Any:
        from pydantic import ValidationError

        from runassist.tasks.generation import generation_config, stream_text

        try:
            chosen = GenerationSettings(**{**self.task_cfg.generation.model_dump(), **(settings or {})})
        except ValidationError as exc:
            raise ValueError("generation settings: " + "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
        features = self.encode([self.unlabelled(example)], processor, state)
        batch = self.collate(features, processor)
        device = next(model.parameters()).device
        inputs = {k: v.to(device) for k, v in batch.items()}
        model.eval()
        return stream_text(model, processor, inputs, generation_config(chosen, processor, model), stop=stop,
                           usage=usage)

    # -- outputs ------------------------------------------------------------
    def decode(self, examples: Sequence[Seq2SeqExample], features: Sequence[Feature], outputs: Sequence[Any],
               state: TaskState) -> list[Generated]:
        predictions: list[Generated | None] = [None] * len(examples)
        for feature, out in zip(features, outputs):
            predictions[feature.example] = Generated(out["text"], int(out["tokens"]), bool(out["capped"]))
        return [p if p is not None else Generated("", 0, False) for p in predictions]

    def _language(self, golds: Sequence[str]) -> str:
        from runassist.metrics.generation import detect_language

        return self.task_cfg.language if self.task_cfg.language != "auto" else detect_language(golds)

    def score(self, examples: Sequence[Seq2SeqExample], predictions: Sequence[Generated],
              state: TaskState) -> dict[str, Any]:
        from runassist.metrics.generation import score_texts

        golds = [ex.target or "" for ex in examples]
        scores = score_texts(golds, [p.text for p in predictions], language=self._language(golds))
        n = max(len(predictions), 1)
        scores["gen_tokens"] = sum(p.tokens for p in predictions) / n
        # Outputs cut by the length limit: raise generation.max_new_tokens if this is not 0.
        scores["at_max_new_tokens"] = sum(p.capped for p in predictions) / n
        return scores

    def to_json(self, example: Seq2SeqExample, prediction: Generated) -> dict[str, Any]:
        return {"output": prediction.text}

    def outcome(self, prediction: Generated) -> str:
        return prediction.text

    def gold_json(self, example: Seq2SeqExample) -> dict[str, Any]:
        return {"source": example.text, "gold": example.target}

    # -- check-data -----------------------------------------------------------
    def check_labels(self, read: dict[str, list[Any]], report: CheckReport) -> None:
        """Empty targets are problems of the reader (listed with their lines); nothing else to check here."""

    def split_stats(self, spec: str, examples: Sequence[Seq2SeqExample]) -> SplitStats:
        from runassist.metrics.generation import detect_language

        chars = detect_language([ex.text for ex in examples]) == "zh"  # Chinese: length in characters
        stats = SplitStats(spec, examples=len(examples))
        stats.words = sum(len(ex.text.split()) for ex in examples)
        stats.length = percentiles([len(ex.text) if chars else len(ex.text.split()) for ex in examples])
        return stats

    def overlap_key(self, example: Seq2SeqExample) -> str:
        return " ".join(example.text.split())

    def check_processor(self, name: str, examples: Sequence[Seq2SeqExample], tokenizer: Any, stats: SplitStats,
                        report: CheckReport) -> None:
        """Sub-token lengths; sources cut at model.max_length, targets cut at task.max_target_length,
        and dev/test targets longer than generation.max_new_tokens (the model cannot write them whole)."""
        if not examples:
            return
        pieces = self._pieces(examples, tokenizer, self._require_kind())
        stats.subtokens = percentiles([p["source_length"] for p in pieces])
        sources_cut = [ex for ex, p in zip(examples, pieces) if p["source_cut"]]
        targets_cut = [ex for ex, p in zip(examples, pieces) if p["target_cut"]]
        stats.over_max_length = len(sources_cut)
        if sources_cut:
            report.warnings.append(f"{sources_cut[0].source}: {len(sources_cut)} of {len(examples)} sources in {name} "
                                   f"are longer than model.max_length={self.model_cfg.max_length} sub-tokens (with "
                                   "the prompt) and are cut at the end")
        if targets_cut:
            report.warnings.append(f"{targets_cut[0].source}: {len(targets_cut)} of {len(examples)} targets in {name} "
                                   f"are longer than task.max_target_length={self.task_cfg.max_target_length} "
                                   "sub-tokens and are cut" + (": the model never learns their ends"
                                                               if name == "train" else " for the loss"))
        limit = self.task_cfg.generation.max_new_tokens
        long = [ex for ex, p in zip(examples, pieces) if p["target_length"] > limit]
        if long and name != "train":
            report.warnings.append(f"{long[0].source}: {len(long)} of {len(examples)} targets in {name} are longer than "
                                   f"task.generation.max_new_tokens={limit} sub-tokens; outputs that long are cut, "
                                   "which lowers the scores")

    # -- report ---------------------------------------------------------------
    def report_errors(self, scores: dict[str, Any], predictions: Path | None, images: dict[str, bytes]) -> str:
        from runassist.htmlparts import e, missing, table

        if predictions is None:
            return missing("No predictions file (eval/<split>.jsonl): outputs cannot be shown.")
        rows = []
        for line in predictions.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            gold, output = row.get("gold") or "", row.get("output") or ""
            if " ".join(gold.split()) != " ".join(output.split()):
                source = row.get("source") or ""
                rows.append([e(source[:300] + ("…" if len(source) > 300 else "")), e(gold),
                             '<span class="bad">' + e(output or "(empty)") + "</span>"])
        if not rows:
            return "<p>Every test output equals its reference.</p>"
        return (f'<p class="small">{len(rows)} test outputs differ from their reference; the first 15:</p>'
                + table(["source", "reference", "output"], rows[:15], cls="mistakes"))

    # -- compare ---------------------------------------------------------------
    def compare(self, examples: Sequence[Seq2SeqExample], out_a: Sequence[Generated], out_b: Sequence[Generated], *,
                labels: list[str] | None, n: int, seed: int, notes: list[str]) -> dict[str, Any]:
        """The headline, rougeL and BLEU, each with a paired bootstrap over examples (from per-example
        statistics, so each resample costs sums, not a new scoring pass)."""
        from runassist.metrics.bootstrap import paired_bootstrap_counts
        from runassist.metrics.generation import item_stats, stat_fn
        from runassist.metrics.tables import numeric_scores, share_equal

        golds = [ex.target or "" for ex in examples]
        language = self._language(golds)
        texts_a, texts_b = [p.text for p in out_a], [p.text for p in out_b]
        overall = {}
        for metric in dict.fromkeys([self.headline, "rougeL", "bleu"]):
            overall[metric] = paired_bootstrap_counts(item_stats(metric, golds, texts_a, language=language),
                                                      item_stats(metric, golds, texts_b, language=language),
                                                      stat=stat_fn(metric, len(golds), language=language),
                                                      n=n, seed=seed)
        state = TaskState(labels=None)
        return {"headline": self.headline, "overall": overall,
                "scores": {"a": numeric_scores(self.score(examples, out_a, state)),
                           "b": numeric_scores(self.score(examples, out_b, state))},
                "per_label": [], "agreement": share_equal(texts_a, texts_b)}

    # -- agent tools and the page -------------------------------------------------
    def input_schema(self, max_chars: int) -> dict[str, Any]:
        return {"type": "string", "minLength": 1, "maxLength": max_chars, "description": "the source text"}

    def tool_description(self, labels: list[str] | None, about: str) -> str:
        return (f"Write the output text for each input text {about} (a summary, a translation or another rewriting, "
                "as the model was trained). Returns one prediction per input, in order: output (the text written).")

    def labels_summary(self, labels: list[str] | None) -> str:
        return f"text to text ({self._kind})" if self._kind else "text to text"


# -- helpers --------------------------------------------------------------------------------------

def _specials(tokenizer: Any, *, target: bool = False) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a text (a target with ``target``), found by probing."""
    key = "text_target" if target else "text"
    probe = tokenizer(**{key: "a"}, add_special_tokens=False)["input_ids"]
    full = tokenizer(**{key: "a"})["input_ids"]
    for start in range(len(full) - len(probe) + 1):
        if full[start:start + len(probe)] == probe:
            return full[:start], full[start + len(probe):]
    return [], []


def _pad_id(tokenizer: Any) -> int:
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if tokenizer.eos_token_id is not None:  # decoder-only tokenizers often have no pad token; masked anyway
        return tokenizer.eos_token_id
    raise RunassistError("model.source: the tokenizer has neither a pad nor an end-of-sequence token")


def _pad(rows: Sequence[Sequence[int]], fill: int, *, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows padded to the longest (on the left with ``left``), and the mask of real positions."""
    longest = max(len(r) for r in rows)
    ids, mask = [], []
    for row in rows:
        gap = longest - len(row)
        ids.append([fill] * gap + list(row) if left else list(row) + [fill] * gap)
        mask.append([0] * gap + [1] * len(row) if left else [1] * len(row) + [0] * gap)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)


def shift_right(labels: torch.Tensor, start: int | None, pad: int | None) -> torch.Tensor:
    """Decoder inputs from labels: the start token, then the labels but the last (ignored positions as pad),
    as T5, BART and Marian make them."""
    if start is None:
        raise RunassistError("model.source: the model's config has no decoder_start_token_id")
    pad = 0 if pad is None else pad
    shifted = labels.new_full(labels.shape, pad)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = start
    return shifted.masked_fill(shifted == IGNORE_INDEX, pad)
