"""Audio classification (``task.name: audio``): a label per clip (spoken commands, sounds, speakers).

Data: a folder of ``<label>/<clip>.wav`` (a split each), or a CSV/TSV/JSONL manifest of ``path,label``
with paths relative to the manifest (``task.path_column``, ``data.label_column``). Clips are read
with soundfile, mixed down to mono (``task.multichannel``) and resampled to the model's rate
(``tasks.audio_inputs``, ``data.audio``).

Models: any local Hugging Face audio-classification folder (wav2vec2, HuBERT, WavLM, AST: through
``AutoModelForAudioClassification`` and its ``AutoFeatureExtractor``), the head sized for the labels.

Clips longer than ``task.max_seconds`` are cut to their first ``max_seconds``, in training, evaluation
and prediction alike (so the model is asked what it was trained on); check-data counts them. A label
stays true of the head of a clip, which is not so of a transcript: speech recognition skips long
clips instead (``tasks.asr``).

Scores, decisions, the report and comparisons are text classification's (``tasks.classify``):
accuracy (the headline), macro-F1, the per-class table and confusion matrix, the int8 guard's margins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from runassist.data.audio import AudioExample
from runassist.data.checks import CheckReport, SplitStats
from runassist.tasks.audio_inputs import AudioInputs, AudioSection, feature_rate, where
from runassist.tasks.base import Capabilities, Feature, TaskState
from runassist.tasks.classify import ClassifyTask
from runassist.tasks.default import BaseTask


class AudioClassifySection(AudioSection):
    name: Literal["audio"] = "audio"


class AudioTask(AudioInputs, ClassifyTask):
    name = "audio"
    Section = AudioClassifySection
    target = "label"
    capabilities = Capabilities(onnx=True, int8_guard=True)
    peft_task_type = None  # the head is transformers' own but peft has no audio task type; freeze layers instead
    tool_name = "classify_audio"
    multi_label = False

    def __init__(self, section: AudioClassifySection, data: Any, model: Any):
        BaseTask.__init__(self, section, data, model)
        self.headline = "accuracy"
        self.curve_extras = ("macro_f1",)

    @classmethod
    def init_defaults(cls) -> dict[str, Any]:
        return {"task": {"name": cls.name, "max_seconds": 10.0},
                "model": {"source": "path/to/a-wav2vec2-or-hubert-folder"},
                "data": {"train": "data/train", "dev": "data/dev", "test": "data/test"},
                "train": {"epochs": 10, "lr": 3e-5, "batch_size": 16}}

    @property
    def title(self) -> str:
        return self.name

    # -- model --------------------------------------------------------------
    def load_processor(self, source: str) -> Any:
        from transformers import AutoFeatureExtractor

        from runassist.tasks.hf import _loading, quiet_transformers

        quiet_transformers()
        with _loading(source, "feature extractor"):
            return AutoFeatureExtractor.from_pretrained(source)

    def encode(self, examples: Sequence[AudioExample], extractor: Any, state: TaskState) -> list[Feature]:
        """One feature per clip: its samples as the feature extractor makes them (normalised where the
        model wants it), cut to ``task.max_seconds``; ``size`` is the number of samples."""
        labels = state.labels or []
        label2id = {label: i for i, label in enumerate(labels)}
        rate = feature_rate(extractor)
        keep = int(self.task_cfg.max_seconds * rate)
        features = []
        for index, ex in enumerate(examples):
            wave = self.samples(ex, rate)
            cut = wave.shape[0] > keep
            values = _extract(extractor, wave[:keep], rate)
            features.append(Feature(example=index, inputs={"input_values": values},
                                    target=self._target(ex, label2id, labels), meta={"truncated": cut},
                                    size=int(values.shape[0])))
        return features

    def collate(self, features: Sequence[Feature], extractor: Any) -> dict[str, torch.Tensor]:
        batch = pad_audio(features, extractor)
        if all(f.target is not None for f in features):
            batch["labels"] = torch.tensor([f.target for f in features], dtype=torch.long)
        return batch

    def build_model(self, source: str, state: TaskState, *, dropout: float | None = None) -> torch.nn.Module:
        from transformers import AutoModelForAudioClassification

        from runassist.tasks.hf import load_model

        return load_model(AutoModelForAudioClassification, source, state.labels, dropout=dropout)

    # -- outputs ------------------------------------------------------------
    def to_json(self, example: AudioExample, prediction: Any) -> dict[str, Any]:
        return {"file": example.path, **super().to_json(example, prediction)}

    def gold_json(self, example: AudioExample) -> dict[str, Any]:
        return {"file": example.path, "gold": list(example.labels)}

    # -- check-data -----------------------------------------------------------
    def check_labels(self, read: dict[str, list[Any]], report: CheckReport) -> None:
        super().check_labels(read, report)  # unseen labels, one label only, imbalance
        self.check_clips(read, report, long_fate="they are cut to their first max_seconds")

    def check_processor(self, name: str, examples: Sequence[AudioExample], extractor: Any, stats: SplitStats,
                        report: CheckReport) -> None:
        stats.over_max_length = sum(1 for ex in examples if ex.seconds > self.task_cfg.max_seconds)
        rate = feature_rate(extractor)
        off = [ex for ex in examples if ex.rate != rate]
        if off and name == "train":
            report.warnings.append(f"{where(off[0])}: {len(off)} of {len(examples)} clips in {name} are at "
                                   f"{off[0].rate} Hz, not the model's {rate} Hz; they are resampled")

    # -- agent tools and the page -------------------------------------------------
    def tool_description(self, labels: list[str] | None, about: str) -> str:
        return (f"Classify each audio file {about} as one of these labels: {', '.join(labels or [])}. Returns one "
                "prediction per input, in order: label and probs (every label's probability, highest first).")


def _extract(extractor: Any, wave: np.ndarray, rate: int) -> np.ndarray:
    """The feature extractor's ``input_values`` for one clip (float32, 1-D). The rate is passed, so a
    clip at another rate than the extractor's is refused by transformers too, never silently used."""
    out = extractor(wave, sampling_rate=rate, return_tensors="np")
    key = "input_values" if "input_values" in out else extractor.model_input_names[0]
    return np.asarray(out[key][0], dtype=np.float32)


def pad_audio(features: Sequence[Feature], extractor: Any, key: str = "input_values") -> dict[str, torch.Tensor]:
    """Clips padded to the longest of the batch with the extractor's padding value, and the attention
    mask when the model takes one (wav2vec2 base models with group norm do not: they were trained on
    zero-padded batches without a mask, ``return_attention_mask: false``)."""
    longest = max(f.size for f in features)
    fill = float(getattr(extractor, "padding_value", 0.0))
    values = np.full((len(features), longest), fill, dtype=np.float32)
    mask = np.zeros((len(features), longest), dtype=np.int64)
    for row, f in enumerate(features):
        values[row, :f.size] = f.inputs[key]
        mask[row, :f.size] = 1
    batch = {key: torch.from_numpy(values)}
    if getattr(extractor, "return_attention_mask", True):
        batch["attention_mask"] = torch.from_numpy(mask)
    return batch
