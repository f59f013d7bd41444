"""Speech recognition (``task.name: asr``): a transcript per clip, scored by WER and CER.

Data: a CSV/TSV/JSONL manifest of ``path,text`` (``task.path_column``, ``data.text_column``), paths
relative to the manifest; clips are read, mixed down and resampled to the model's rate as for audio
classification (``tasks.audio_inputs``).

Two kinds of model, read from the model's config, never from a setting:

- **CTC** (``AutoModelForCTC`` + ``AutoProcessor``: wav2vec2, HuBERT, WavLM, ...): a character per
  frame, the blank being the tokenizer's pad token; greedy decoding (the most likely token per frame,
  repeats merged, blanks dropped) over the frames of the clip only, never over its padding. Transcripts
  are put in the vocabulary's form before training: lower-cased when the vocabulary has no upper-case
  letter, white space as the word delimiter (``|``); check-data lists the characters the vocabulary
  still lacks (they would be trained as ``<unk>``) and transcripts too long for their clip's frames
  (the CTC loss cannot align them; ``ctc_zero_infinity`` keeps them from breaking training).
  A base model without a CTC head gets a new one sized for the processor's vocabulary;
  ``task.freeze_feature_encoder`` keeps the convolutional front end as pretrained (the wav2vec2 recipe).
  CTC models export to ONNX (parity-checked on transcripts); there is no int8 guard (no decision margin).
- **Whisper** (``WhisperForConditionalGeneration``): log-mel features, an encoder-decoder trained with
  cross-entropy on the transcript's tokens (shifted behind the decoder start token, as seq2seq does),
  and transcripts written with ``generate()`` under ``task.generation`` (``tasks.generation``, shared
  with seq2seq and chat). Whisper reads at most 30 s. Not exported to ONNX (generation, as seq2seq).

Clips longer than ``task.max_seconds`` with a transcript are **skipped**, in training and in scoring
(and counted: ``skipped`` in the scores, ``inputs.examples_dropped`` in summary.json), because a cut
clip no longer says its transcript, and a long one is what runs a batch out of memory. An input to
transcribe (``predict``, the service) over the limit is refused with ``MediaTooLarge`` (413).

Scores: ``wer`` (the headline; lower is better), ``cer``, ``exact``, after the normalisation of
``metrics.speech`` (lower-case, punctuation removed, white space collapsed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from runassist.data.audio import AudioExample
from runassist.data.checks import CheckReport, SplitStats
from runassist.errors import ConfigError, RunassistError
from runassist.tasks.audio import _extract, pad_audio
from runassist.tasks.audio_inputs import AudioInputs, AudioSection, feature_rate, where
from runassist.tasks.base import IGNORE_INDEX, Capabilities, Feature, TaskState
from runassist.tasks.default import BaseTask
from runassist.tasks.generation import GenerationSettings

CTC, WHISPER = "ctc", "whisper"
WHISPER_SECONDS = 30.0  # Whisper's encoder reads one 30 s window


class AsrSection(AudioSection):
    name: Literal["asr"] = "asr"
    freeze_feature_encoder: bool = Field(True, description="CTC models: keep the convolutional feature encoder as "
                                                           "pretrained (the wav2vec2 fine-tuning recipe); false for a "
                                                           "model trained from scratch")
    generation: GenerationSettings = Field(default_factory=lambda: GenerationSettings(max_new_tokens=128),
                                           description="Whisper models: how transcripts are written (beams, length); "
                                                       "saved with the run")
    language: str | None = Field(None, description="Whisper models: the language spoken (en, de, zh, ...), written into "
                                                   "the targets and forced when transcribing; required for a "
                                                   "multilingual Whisper, empty for an English-only one (*.en)")
    eval_max_examples: int | None = Field(None, ge=1, description="dev clips transcribed at each evaluation during "
                                                                  "training; empty: all. Test is always scored whole")


@dataclass(frozen=True)
class Transcript:
    text: str
    skipped: bool = False  # a labelled clip over task.max_seconds: not transcribed, not scored


def model_kind(config: Any) -> str:
    """ctc or whisper, from a model's config; another kind of model is refused."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CTC_MAPPING_NAMES

    kind = getattr(config, "model_type", "")
    if kind == "whisper":
        return WHISPER
    if kind in MODEL_FOR_CTC_MAPPING_NAMES:
        return CTC
    raise RunassistError(f"model.source: a {kind or type(config).__name__} model cannot transcribe speech; an asr run "
                         "needs a CTC model (wav2vec2, HuBERT, WavLM, Data2VecAudio) or a Whisper model")


class AsrTask(AudioInputs, BaseTask):
    name = "asr"
    Section = AsrSection
    target = "text"
    headline = "wer"
    headline_mode = "min"
    label_word = "transcript"
    tool_name = "transcribe_audio"
    curve_extras = ("cer",)
    max_batch = 16  # clips are long inputs; Whisper's beams multiply them

    def __init__(self, section: AsrSection, data: Any, model: Any):
        super().__init__(section, data, model)
        self._kind: str | None = None
        self._conv: list[tuple[int, int]] = []  # CTC: the feature encoder's (kernel, stride) per layer
        self._processor: Any = None
        self._model_config: Any = None

    @classmethod
    def init_defaults(cls) -> dict[str, Any]:
        return {"task": {"name": cls.name, "max_seconds": 20.0},
                "model": {"source": "path/to/a-wav2vec2-ctc-or-whisper-folder"},
                "data": {"train": "data/train.csv", "dev": "data/dev.csv", "test": "data/test.csv"},
                "train": {"epochs": 20, "lr": 1e-4, "batch_size": 8}}

    @property
    def title(self) -> str:
        return f"{self.name} ({self._kind})" if self._kind else self.name

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        # A CTC model's forward is a function of the batch (traceable); Whisper writes by generate().
        return Capabilities(onnx=self._kind != WHISPER, int8_guard=False)

    @property
    def onnx_outputs(self) -> dict[str, tuple[str | None, ...]]:  # type: ignore[override]
        return {"logits": ("batch", "frames", None)}

    # -- data ---------------------------------------------------------------
    def label_set(self, examples: Sequence[AudioExample]) -> None:
        return None

    def label_units(self, example: AudioExample) -> tuple[str, ...]:
        return ()

    def dev_examples(self, examples: Sequence[AudioExample]) -> list[AudioExample]:
        cap = self.task_cfg.eval_max_examples
        if cap is None or len(examples) <= cap:
            return list(examples)
        return [examples[i * len(examples) // cap] for i in range(cap)]

    def input_limit(self) -> float | None:
        return self._limit()

    def _limit(self) -> float:
        limit = self.task_cfg.max_seconds
        return min(limit, WHISPER_SECONDS) if self._kind == WHISPER else limit

    def initial_extras(self, examples: Sequence[AudioExample]) -> dict[str, Any]:
        """The kind of model, and a digest of the tokenizer's vocabulary: targets are its ids, and the
        feature cache's key reads these (a processor's JSON settings do not hold its vocabulary)."""
        import hashlib
        import json

        extras: dict[str, Any] = {"architecture": self._require_kind()}
        if self._processor is not None:
            vocab = json.dumps(sorted(self._processor.tokenizer.get_vocab().items()), ensure_ascii=False)
            extras["vocabulary"] = hashlib.sha1(vocab.encode("utf-8")).hexdigest()[:16]
        return extras

    # -- model kind -----------------------------------------------------------
    def check_source(self, source: str) -> None:
        from runassist.tasks.hf import load_config

        super().check_source(source)
        self._read_config(load_config(source))

    def _read_config(self, config: Any) -> None:
        self._kind = model_kind(config)
        self._model_config = config
        if self._kind == CTC:
            self._conv = list(zip(config.conv_kernel, config.conv_stride))

    def _require_kind(self) -> str:
        if self._kind is None:
            raise RunassistError("asr: the kind of model (CTC or Whisper) is not known yet; load the processor first")
        return self._kind

    def load_processor(self, source: str) -> Any:
        from transformers import AutoProcessor

        from runassist.tasks.hf import _loading, load_config, quiet_transformers

        self._read_config(load_config(source))
        quiet_transformers()
        with _loading(source, "processor (feature extractor and tokenizer)"):
            processor = AutoProcessor.from_pretrained(source)
        if getattr(processor, "tokenizer", None) is None or getattr(processor, "feature_extractor", None) is None:
            raise RunassistError(f"model.source: '{source}' has no tokenizer beside its feature extractor; a CTC model "
                                 "needs its character vocabulary (vocab.json, Wav2Vec2CTCTokenizer) to write text")
        if self._kind == WHISPER:
            self._whisper_language(source, processor)
        self._processor = processor
        return processor

    def _whisper_language(self, source: str, processor: Any) -> None:
        """Targets begin as generate() will begin: <|startoftranscript|> <|lang|> <|transcribe|> <|notimestamps|>
        for a multilingual model, which therefore needs task.language (else it would detect a language at
        prediction that its targets never held); <|startoftranscript|> <|notimestamps|> for an English-only one."""
        from transformers import GenerationConfig

        try:
            multilingual = bool(getattr(GenerationConfig.from_pretrained(source), "is_multilingual", False))
        except OSError:
            multilingual = False
        language = self.task_cfg.language
        if multilingual and not language:
            raise ConfigError("task.language: a multilingual Whisper model needs the language of the speech "
                              "(en, de, zh, ...), which its targets and its transcribing begin with")
        if language:
            if not multilingual:
                raise ConfigError(f"task.language: {language!r} but this Whisper model is English-only; leave it empty")
            processor.tokenizer.set_prefix_tokens(language=language, task="transcribe", predict_timestamps=False)

    # -- transcripts as targets -------------------------------------------------
    def _vocab(self, processor: Any) -> set[str]:
        return set(processor.tokenizer.get_vocab())

    def prepare(self, text: str, processor: Any) -> str:
        """A transcript in the form the model writes: CTC vocabularies are mostly lower-case letters."""
        text = " ".join(text.split())
        if self._kind == CTC and not any(ch.isupper() for ch in self._vocab(processor) if len(ch) == 1):
            text = text.lower()
        return text

    def _target_ids(self, text: str, processor: Any) -> list[int]:
        tokenizer = processor.tokenizer
        ids = tokenizer(self.prepare(text, processor)).input_ids
        if self._kind == WHISPER:
            # The model prepends the decoder start token itself (shift right); the tokenizer's copy goes.
            start = getattr(self._model_config, "decoder_start_token_id", None)
            start = start if start is not None else tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
            if ids and ids[0] == start:
                ids = ids[1:]
        return list(ids)

    def frames(self, samples: int) -> int:
        """CTC frames a clip of ``samples`` gives (the feature encoder's convolutions, no padding)."""
        length = samples
        for kernel, stride in self._conv:
            length = max((length - kernel) // stride + 1, 0)
        return length

    # -- features -----------------------------------------------------------
    def encode(self, examples: Sequence[AudioExample], processor: Any, state: TaskState) -> list[Feature]:
        """One feature per clip (none for a transcribed clip over the limit: skipped)."""
        kind = self._require_kind()
        extractor = processor.feature_extractor
        rate = feature_rate(extractor)
        limit = self._limit()
        features = []
        for index, ex in enumerate(examples):
            if ex.text is not None and ex.seconds > limit:
                continue
            wave = self.samples(ex, rate)
            target = self._target_ids(ex.text, processor) if ex.text is not None else None
            if kind == WHISPER:
                mel = extractor(wave, sampling_rate=rate, return_tensors="np")["input_features"][0]
                features.append(Feature(example=index, inputs={"input_features": mel.astype(np.float32)},
                                        target=target, size=int(wave.shape[0])))
            else:
                values = _extract(extractor, wave, rate)
                features.append(Feature(example=index, inputs={"input_values": values}, target=target,
                                        size=int(values.shape[0])))
        return features

    def collate(self, features: Sequence[Feature], processor: Any) -> dict[str, torch.Tensor]:
        if self._require_kind() == WHISPER:
            batch = {"input_features": torch.from_numpy(np.stack([f.inputs["input_features"] for f in features]))}
        else:
            batch = pad_audio(features, processor.feature_extractor)
        if all(f.target is not None for f in features):
            longest = max(len(f.target) for f in features)
            batch["labels"] = torch.tensor([list(f.target) + [IGNORE_INDEX] * (longest - len(f.target))
                                            for f in features], dtype=torch.long)
        return batch

    def feature_stats(self, features: Sequence[Feature]) -> dict[str, int]:
        stats = super().feature_stats(features)
        stats["audio_seconds"] = round(sum(f.size for f in features) / max(feature_rate(self._processor), 1)) \
            if self._processor is not None else 0
        return stats

    # -- model --------------------------------------------------------------
    def build_model(self, source: str, state: TaskState, *, dropout: float | None = None) -> torch.nn.Module:
        from runassist.tasks.hf import load_config, load_model

        self._read_config(load_config(source))
        processor = self._processor
        if self._kind == WHISPER:
            from transformers import WhisperForConditionalGeneration

            from runassist.tasks.generation import generation_config

            model = load_model(WhisperForConditionalGeneration, source, None, dropout=dropout)
            if processor is not None:
                model.generation_config = _whisper_generation(generation_config(self.task_cfg.generation,
                                                                                processor, model), model,
                                                               self.task_cfg.language)
            return model
        from transformers import AutoModelForCTC

        extra: dict[str, Any] = {"ctc_zero_infinity": True}  # an unalignable clip adds nothing instead of inf
        if processor is not None:  # the head follows the processor's vocabulary, blank = pad
            extra.update(vocab_size=len(processor.tokenizer), pad_token_id=processor.tokenizer.pad_token_id)
        model = load_model(AutoModelForCTC, source, None, dropout=dropout, **extra)
        if self.task_cfg.freeze_feature_encoder and hasattr(model, "freeze_feature_encoder"):
            model.freeze_feature_encoder()
        return model

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Any:
        if self._require_kind() == WHISPER:
            from runassist.tasks.seq2seq import shift_right

            inputs: dict[str, Any] = {"input_features": batch["input_features"]}
            if "labels" in batch:
                config = getattr(model, "module", model).config
                inputs["decoder_input_ids"] = shift_right(batch["labels"], config.decoder_start_token_id,
                                                          config.pad_token_id)
                inputs["use_cache"] = False
            return model(**inputs)
        inputs = {k: v for k, v in batch.items() if k in ("input_values", "attention_mask")}
        if "labels" in batch:
            inputs["labels"] = batch["labels"]  # the model's own CTC loss (log-softmax in float32, blank = pad)
        return model(**inputs)

    def loss(self, outputs: Any, batch: dict[str, torch.Tensor], weights: torch.Tensor | None) -> torch.Tensor:
        if self._require_kind() == WHISPER:
            logits, labels = outputs.logits.float(), batch["labels"]
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)
        return outputs.loss.float()

    def infer(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], features: Sequence[Feature],
              processor: Any = None) -> list[Any]:
        """CTC: each clip's most likely token per frame, over its own frames only. Whisper: the text
        ``generate()`` writes."""
        processor = processor if processor is not None else self._processor
        if self._require_kind() == WHISPER:
            from runassist.tasks.generation import generation_config

            config = _whisper_generation(generation_config(self.task_cfg.generation, processor, model), model,
                                         self.task_cfg.language)
            out = model.generate(input_features=batch["input_features"], generation_config=config)
            return [processor.tokenizer.decode(row, skip_special_tokens=True).strip() for row in out.tolist()]
        logits = self.forward(model, {k: v for k, v in batch.items() if k != "labels"}).logits
        ids = logits.argmax(-1).cpu().numpy()
        return [ids[row, :self.frames(f.size)].astype(np.int32) for row, f in enumerate(features)]

    # -- outputs ------------------------------------------------------------
    def decode(self, examples: Sequence[AudioExample], features: Sequence[Feature], outputs: Sequence[Any],
               state: TaskState) -> list[Transcript]:
        found: dict[int, Transcript] = {}
        tokenizer = self._processor.tokenizer if self._processor is not None else None
        for feature, out in zip(features, outputs):
            if isinstance(out, str):
                found[feature.example] = Transcript(out)
            else:  # CTC: repeats merged, blanks (pad) dropped, the word delimiter as a space
                found[feature.example] = Transcript(" ".join(tokenizer.decode(list(map(int, out))).split()))
        return [found.get(i, Transcript("", skipped=True)) for i in range(len(examples))]

    def score(self, examples: Sequence[AudioExample], predictions: Sequence[Transcript],
              state: TaskState) -> dict[str, Any]:
        from runassist.metrics.speech import score_transcripts

        kept = [(ex.text or "", p.text) for ex, p in zip(examples, predictions) if not p.skipped]
        scores = score_transcripts([r for r, _ in kept], [h for _, h in kept])
        scores["skipped"] = len(predictions) - len(kept)
        return scores

    def to_json(self, example: AudioExample, prediction: Transcript) -> dict[str, Any]:
        out: dict[str, Any] = {"file": example.path, "text": prediction.text}
        if prediction.skipped:
            out["skipped"] = f"longer than task.max_seconds={self._limit():g}"
        return out

    def outcome(self, prediction: Transcript) -> str:
        return prediction.text

    def gold_json(self, example: AudioExample) -> dict[str, Any]:
        return {"file": example.path, "gold": example.text}

    # -- check-data -----------------------------------------------------------
    def check_labels(self, read: dict[str, list[Any]], report: CheckReport) -> None:
        """Transcripts are required by the reader (an empty one is a line error); here: the clips."""
        self.check_clips(read, report, long_fate="they are skipped in training and scoring (a cut clip would no "
                                                 "longer say its transcript)")

    def split_stats(self, spec: str, examples: Sequence[AudioExample]) -> SplitStats:
        stats = super().split_stats(spec, examples)
        stats.words = sum(len((ex.text or "").split()) for ex in examples)
        return stats

    def check_processor(self, name: str, examples: Sequence[AudioExample], processor: Any, stats: SplitStats,
                        report: CheckReport) -> None:
        """Characters outside the CTC vocabulary; transcripts longer than their clip has frames for."""
        stats.over_max_length = sum(1 for ex in examples if ex.seconds > self._limit())
        if self._kind != CTC:
            return
        vocab = self._vocab(processor)
        delimiter = getattr(processor.tokenizer, "word_delimiter_token", "|")
        missing: dict[str, tuple[int, str]] = {}
        for ex in examples:
            for ch in set(self.prepare(ex.text or "", processor)):
                if ch != " " and ch not in vocab:
                    count, source = missing.get(ch, (0, ex.source))
                    missing[ch] = (count + 1, source)
        if missing:
            listed = ", ".join(f"'{ch}' ({n}, first at {src})" for ch, (n, src) in sorted(missing.items())[:20])
            report.warnings.append(f"{name}: transcripts hold characters outside the model's vocabulary (trained "
                                   f"and written as {processor.tokenizer.unk_token}): {listed}; clean the "
                                   "transcripts or use a vocabulary that has them")
        rate = feature_rate(processor)
        tight = [ex for ex in examples if ex.text is not None and ex.seconds <= self._limit()
                 and self.frames(int(ex.seconds * rate)) < len(self.prepare(ex.text, processor).replace(" ", delimiter))]
        if tight:
            report.warnings.append(f"{where(tight[0])}: {len(tight)} of {len(examples)} transcripts in {name} have more "
                                   "characters than the model has frames for their clip; CTC cannot align them and "
                                   "they add nothing to training")

    # -- report ---------------------------------------------------------------
    def report_errors(self, scores: dict[str, Any], predictions: Path | None, images: dict[str, bytes]) -> str:
        from runassist.tasks.asr_report import errors_section

        return errors_section(scores, predictions)

    # -- compare ---------------------------------------------------------------
    def compare(self, examples: Sequence[AudioExample], out_a: Sequence[Transcript], out_b: Sequence[Transcript], *,
                labels: list[str] | None, n: int, seed: int, notes: list[str]) -> dict[str, Any]:
        """WER and CER, each with a paired bootstrap over utterances (from per-utterance error counts)."""
        from runassist.metrics.bootstrap import paired_bootstrap_counts
        from runassist.metrics.speech import corpus_rate_fn, item_counts
        from runassist.metrics.tables import numeric_scores, share_equal

        both = [i for i, (a, b) in enumerate(zip(out_a, out_b)) if not (a.skipped or b.skipped)]
        if len(both) < len(examples):
            notes.append(f"{len(examples) - len(both)} utterances one run skipped (over its task.max_seconds) are left "
                         "out of the comparison")
        golds = [examples[i].text or "" for i in both]
        texts_a, texts_b = [out_a[i].text for i in both], [out_b[i].text for i in both]
        overall = {}
        for metric, unit in (("wer", "word"), ("cer", "char")):
            overall[metric] = paired_bootstrap_counts(item_counts(golds, texts_a, unit=unit),
                                                      item_counts(golds, texts_b, unit=unit),
                                                      stat=corpus_rate_fn, n=n, seed=seed)
        state = TaskState(labels=None)
        return {"headline": self.headline, "overall": overall,
                "scores": {"a": numeric_scores(self.score(examples, out_a, state)),
                           "b": numeric_scores(self.score(examples, out_b, state))},
                "per_label": [], "agreement": share_equal(texts_a, texts_b)}

    # -- agent tools and the page -------------------------------------------------
    def tool_description(self, labels: list[str] | None, about: str) -> str:
        return (f"Transcribe each audio file {about} (speech to text). Returns one prediction per input, in order: "
                "file and text (the transcript).")

    def labels_summary(self, labels: list[str] | None) -> str:
        return f"speech to text ({self._kind})" if self._kind else "speech to text"


def _whisper_generation(config: Any, model: Any, language: str | None) -> Any:
    """Whisper's own generation settings that make it write plain transcripts (no timestamps), kept
    beside the run's lengths and beams."""
    own = getattr(model, "generation_config", None)
    for key in ("no_timestamps_token_id", "lang_to_id", "task_to_id", "is_multilingual", "alignment_heads",
                "max_initial_timestamp_index"):
        value = getattr(own, key, None)
        if value is not None:
            setattr(config, key, value)
    if language:
        config.language, config.task = language, "transcribe"
    config.return_timestamps = False
    return config
