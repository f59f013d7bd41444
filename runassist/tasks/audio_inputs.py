"""What the two speech tasks (``audio``: classification, ``asr``: recognition) share: reading clips
(``data.audio``), their config keys, media inputs (files, bytes, paths), check-data about the clips
themselves, and the probe clips ONNX export traces with.

A clip reaches a task as an ``AudioExample`` whichever way it came: a split on disk, a path given to
``predict`` or the library, or a file's bytes (``media_example``: uploads, base64 in JSON). It is decoded,
mixed down and resampled to the model's own rate (``feature_extractor.sampling_rate``) when encoded.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from runassist.config import TaskSection
from runassist.data.audio import SUFFIXES, AudioError, AudioExample, example_from_bytes, example_from_path, load
from runassist.data.checks import CheckReport, SplitStats, percentiles
from runassist.data.records import Split
from runassist.errors import DataError, MediaTooLarge, RunassistError


class AudioSection(TaskSection):
    """The keys both speech tasks have (each task's section adds its own and its name)."""

    path_column: str = Field("path", description="manifest (CSV/TSV/JSONL) column holding each clip's path, relative "
                                                 "to the manifest")
    multichannel: Literal["mix", "error"] = Field(
        "mix", description="clips with several channels: mix (average them to mono, as speech models expect) | error "
                           "(refuse them; check-data names each file)")
    max_seconds: float = Field(30.0, gt=0, le=3600, description="longest clip used as it is; what happens to longer "
                                                                "ones depends on the task (see its docs); check-data "
                                                                "counts them")


class AudioInputs:
    """Mixin for a task whose inputs are audio clips (placed before ``BaseTask`` in the bases)."""

    media: ClassVar[str | None] = "audio"
    media_suffixes: ClassVar[tuple[str, ...]] = SUFFIXES
    target: ClassVar[Literal["label", "text"]]  # what a manifest's second column holds
    label_word: ClassVar[str]
    task_cfg: Any
    data_cfg: Any
    name: ClassVar[str]

    # -- reading ----------------------------------------------------------------------------------
    def scan_file(self, path: Path, *, require_labels: bool = True) -> Split:
        from runassist.data.audio import scan_audio

        fmt = self.data_cfg.format
        if fmt == "conll":
            raise DataError(path, None, "data.format: conll is a text format; an audio split is a folder or a "
                                        "CSV/TSV/JSONL manifest")
        return scan_audio(path, target=self.target, path_column=self.task_cfg.path_column,
                          label_column=self.data_cfg.label_column, text_column=self.data_cfg.text_column, fmt=fmt,
                          multichannel=self.task_cfg.multichannel, require_labels=require_labels)

    def unlabelled(self, example: AudioExample) -> AudioExample:
        return dataclasses.replace(example, labels=(), text=None)

    def example_from_input(self, item: Any) -> AudioExample:
        """A path of an audio file (library use, and `predict` on a list of paths, a line each); files
        given as bytes come through ``media_example``."""
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"a {self.name} model takes audio: give the path of a WAV/FLAC/OGG file "
                             "(or the file itself, as an upload or base64)")
        try:
            return self._checked(example_from_path(item.strip(), source=item.strip()))
        except AudioError as exc:
            raise ValueError(str(exc)) from None

    def media_example(self, data: bytes, name: str) -> AudioExample:
        try:
            return self._checked(example_from_bytes(data, name, keep=True, source=name))
        except AudioError as exc:
            raise ValueError(str(exc)) from None

    def _checked(self, ex: AudioExample) -> AudioExample:
        """An input clip that can be used: not empty, mono unless mixing is allowed, and within the
        task's limit for inputs (``input_limit``)."""
        if ex.frames == 0:
            raise AudioError(f"{ex.path} is empty (no samples)")
        if ex.channels > 1 and self.task_cfg.multichannel == "error":
            raise AudioError(f"{ex.path} has {ex.channels} channels; this model takes mono (task.multichannel: error)")
        limit = self.input_limit()
        if limit is not None and ex.seconds > limit:
            raise MediaTooLarge(f"{ex.path} is {ex.seconds:.1f} s long; this model takes clips up to {limit:g} s "
                                "(task.max_seconds): split the recording")
        return ex

    def input_limit(self) -> float | None:
        """The longest clip (seconds) an input may be; None: any length (longer ones are cut)."""
        return None

    def input_columns(self) -> list[str]:
        return [self.task_cfg.path_column]

    def example_from_row(self, row: dict[str, str]) -> AudioExample:
        return self.example_from_input(row.get(self.task_cfg.path_column) or "")

    # -- samples ----------------------------------------------------------------------------------
    def samples(self, example: AudioExample, rate: int) -> np.ndarray:
        """The clip at the model's rate, mono; DataError naming the clip (and its manifest line) if it
        cannot be read."""
        try:
            return load(example, rate, multichannel=self.task_cfg.multichannel)
        except AudioError as exc:
            where = example.source or example.path
            raise DataError(where, None, str(exc)) from None

    def export_probe(self) -> list[AudioExample]:
        """Two clips of different lengths (0.6 s and 1 s of tones in noise), so the traced batch holds padding."""
        import soundfile as sf

        rng = np.random.default_rng(0)
        probes = []
        for seconds, hz in ((1.0, 440.0), (0.6, 220.0)):
            t = np.arange(int(16000 * seconds)) / 16000
            wave = (0.3 * np.sin(2 * np.pi * hz * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
            buffer = io.BytesIO()
            sf.write(buffer, wave, 16000, format="WAV", subtype="PCM_16")
            probes.append(example_from_bytes(buffer.getvalue(), f"probe-{seconds}s.wav", keep=True))
        return probes

    # -- check-data ---------------------------------------------------------------------------------
    def split_stats(self, spec: str, examples: Sequence[AudioExample]) -> SplitStats:
        from runassist.tasks.default import BaseTask

        stats = BaseTask.split_stats(self, spec, examples)  # type: ignore[arg-type]  # not a text task's words
        stats.length = percentiles([round(ex.seconds * 1000) for ex in examples])  # milliseconds
        return stats

    def overlap_key(self, example: AudioExample) -> str:
        return example.digest  # the same recording, whatever its file is called

    def check_clips(self, read: dict[str, list[AudioExample]], report: CheckReport, *, long_fate: str) -> None:
        """Clips mixed down to mono, and clips longer than ``task.max_seconds`` (``long_fate``: what
        happens to them), a warning per split naming the first such file."""
        limit = self.task_cfg.max_seconds
        for name, examples in read.items():
            mixed = [ex for ex in examples if ex.channels > 1]
            if mixed:
                report.warnings.append(f"{where(mixed[0])}: {len(mixed)} of {len(examples)} clips in {name} have "
                                       f"{mixed[0].channels} or more channels; they are averaged to mono "
                                       "(task.multichannel: mix)")
            long = [ex for ex in examples if ex.seconds > limit]
            if long:
                report.warnings.append(f"{where(long[0])}: {len(long)} of {len(examples)} clips in {name} are longer "
                                       f"than task.max_seconds={limit:g} ({long[0].seconds:.1f} s); {long_fate}")
            rates = sorted({ex.rate for ex in examples})
            if len(rates) > 1:
                report.warnings.append(f"{name}: clips at {len(rates)} sampling rates ({', '.join(map(str, rates))} Hz); "
                                       "each is resampled to the model's rate")

    # -- agent tools and the page --------------------------------------------------------------------
    def input_schema(self, max_chars: int) -> dict[str, Any]:
        return {"type": "string", "minLength": 1, "maxLength": max_chars,
                "description": "the path of an audio file (WAV, FLAC, OGG) on the server's machine"}


def feature_rate(processor: Any) -> int:
    """The model's sampling rate, from its feature extractor (or a processor holding one)."""
    extractor = getattr(processor, "feature_extractor", processor)
    rate = getattr(extractor, "sampling_rate", None)
    if not isinstance(rate, int) or rate <= 0:
        raise RunassistError("model.source: the feature extractor does not say its sampling_rate "
                             "(preprocessor_config.json)")
    return rate


def where(example: AudioExample) -> str:
    """Where a clip came from, for messages: the manifest line and the file, or the file."""
    if example.source and example.source != example.path:
        return f"{example.source} ({example.path})"
    return example.path
