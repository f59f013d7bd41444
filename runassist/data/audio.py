"""Audio data: the example record, reading WAV/FLAC/OGG files to the model's sampling rate, and reading
an audio split (a ``<label>/`` folder of clips, or a CSV/JSONL manifest of ``path,label`` or ``path,text``).

Policies, each stated once here:

- **Sampling rate**: every clip is resampled to the model's rate (the feature extractor's
  ``sampling_rate``) with ``scipy.signal.resample_poly`` (a polyphase FIR filter: band-limited, no
  aliasing when going down). A clip is never passed on at a rate the model was not trained for; the
  feature extractor is also told the rate, and refuses a mismatch itself.
- **Channels**: ``multichannel: mix`` (the default) averages the channels to mono, as Hugging Face
  ``datasets`` does for speech models (which are all trained on mono); ``multichannel: error`` refuses a
  clip with more than one channel (check-data names each file), for data where channels are different
  speakers and mixing them would be wrong.
- **Empty clips** (no samples) are an error: there is nothing to learn from or transcribe.
- **Unreadable files** are an error naming the file (and the manifest line that points at it).

Only the header is read when a split is scanned (``soundfile.info``: rate, channels, length), plus the
bytes' SHA-1, so that the feature cache misses when a clip changes; the samples are decoded when the
examples are encoded.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import Any, Literal

import numpy as np

from runassist.data.records import Problem, Split
from runassist.errors import DataError

SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif")  # what libsndfile reads
MANIFESTS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
Multichannel = Literal["mix", "error"]


@dataclass(frozen=True)
class AudioExample:
    """One clip. ``labels``: its class (audio classification), empty when unlabelled; ``text``: its
    transcript (speech recognition), None when unlabelled. ``data``: the file's bytes when it came as
    bytes (an upload) rather than a path. ``rate``, ``channels``, ``frames``: from the file's header;
    ``digest``: SHA-1 of its bytes (the feature cache's key reads it, so an edited clip is encoded again)."""

    path: str
    labels: tuple[str, ...] = ()
    text: str | None = None
    rate: int = 0
    channels: int = 0
    frames: int = 0
    digest: str = ""
    data: bytes | None = None
    source: str = ""

    @property
    def seconds(self) -> float:
        return self.frames / self.rate if self.rate else 0.0


class AudioError(ValueError):
    """A clip that cannot be read or used; the message says why (the caller adds the file)."""


def probe(data: bytes, name: str) -> tuple[int, int, int]:
    """(rate, channels, frames) from a file's header; AudioError when it is not audio libsndfile reads."""
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 -- libsndfile raises several kinds for a bad file
        raise AudioError(f"cannot read audio from {name} ({_first_line(exc)}); expected WAV, FLAC or OGG") from None
    return int(info.samplerate), int(info.channels), int(info.frames)


def example_from_bytes(content: bytes, name: str, *, keep: bool = False, **fields: Any) -> AudioExample:
    """An example of a file's bytes (a path read from disk, or an upload: ``keep`` holds the bytes in
    the example, as there is no file to read them again from); AudioError when unreadable."""
    rate, channels, frames = probe(content, name)
    return AudioExample(path=name, rate=rate, channels=channels, frames=frames,
                        digest=hashlib.sha1(content).hexdigest(), data=content if keep else None, **fields)


def example_from_path(path: str | Path, **fields: Any) -> AudioExample:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise AudioError(f"cannot open {path} ({exc.strerror or exc})") from None
    return example_from_bytes(data, str(path), **fields)


def load(example: AudioExample, rate: int, *, multichannel: Multichannel = "mix") -> np.ndarray:
    """The clip's samples: float32 in [-1, 1], mono, at ``rate`` Hz (see the module docstring)."""
    import soundfile as sf

    where = example.path
    try:
        source: Any = io.BytesIO(example.data) if example.data is not None else example.path
        samples, found_rate = sf.read(source, dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001
        raise AudioError(f"cannot read audio from {where} ({_first_line(exc)})") from None
    if samples.shape[0] == 0:
        raise AudioError(f"{where} is empty (no samples)")
    mono = to_mono(samples, where, multichannel)
    return resample(mono, int(found_rate), rate)


def to_mono(samples: np.ndarray, where: str, multichannel: Multichannel) -> np.ndarray:
    """[frames, channels] -> [frames]: the mean of the channels, or AudioError (``multichannel: error``)."""
    if samples.ndim == 1:
        return samples.astype(np.float32, copy=False)
    if samples.shape[1] == 1:
        return samples[:, 0]
    if multichannel == "error":
        raise AudioError(f"{where} has {samples.shape[1]} channels; the model takes one (mono), and "
                         "task.multichannel is 'error' (set it to 'mix' to average the channels)")
    return samples.mean(axis=1, dtype=np.float32)


def resample(samples: np.ndarray, found: int, wanted: int) -> np.ndarray:
    """``samples`` at ``found`` Hz, resampled to ``wanted`` Hz (polyphase filtering, exact ratio)."""
    if found == wanted:
        return samples.astype(np.float32, copy=False)
    if found <= 0 or wanted <= 0:
        raise AudioError(f"cannot resample from {found} Hz to {wanted} Hz")
    from scipy.signal import resample_poly

    g = gcd(found, wanted)
    return resample_poly(samples, wanted // g, found // g).astype(np.float32)


# -- splits ---------------------------------------------------------------------------------------

def scan_audio(path: Path, *, target: Literal["label", "text"], path_column: str, label_column: str,
               text_column: str, fmt: str = "auto", multichannel: Multichannel = "mix",
               require_labels: bool = True) -> Split:
    """A split as examples and problems: a folder (``<label>/<clip>`` for labels; clips anywhere below
    it, unlabelled, for transcripts), or a CSV/TSV/JSONL manifest whose paths are relative to itself.
    Unreadable, empty and (with ``multichannel: error``) multi-channel clips are fatal problems naming
    the file and the manifest line."""
    if path.is_dir():
        rows = _folder_rows(path, target=target, require_labels=require_labels)
        where = None
    else:
        kind = MANIFESTS.get(path.suffix.lower()) if fmt == "auto" else fmt
        if kind not in ("csv", "tsv", "jsonl"):
            raise DataError(path, None, f"cannot tell the format from '{path.suffix}'; an audio split is a folder or "
                                        "a CSV/TSV/JSONL manifest (set data.format)")
        rows = _manifest_rows(path, kind, path_column=path_column,
                              value_column=label_column if target == "label" else text_column,
                              require_labels=require_labels)
        where = path
    examples, problems = [], []
    for line, file, value in rows:
        source = f"{where}:{line}" if where is not None else str(file)
        located = (str(where), line) if where is not None else (str(file), None)
        try:
            fields: dict[str, Any] = {"source": source}
            if value is not None:
                fields["labels" if target == "label" else "text"] = (value,) if target == "label" else value
            ex = example_from_path(file, **fields)
        except AudioError as exc:
            problems.append(Problem(*located, str(exc), fatal=True))
            continue
        if ex.frames == 0:
            problems.append(Problem(*located, f"{file} is empty (no samples)", fatal=True))
            continue
        if ex.channels > 1 and multichannel == "error":
            problems.append(Problem(*located, f"{file} has {ex.channels} channels; the model takes one (mono) and "
                                              "task.multichannel is 'error'", fatal=True))
            continue
        examples.append(ex)
    return Split(str(path), examples, problems)


def _folder_rows(root: Path, *, target: str, require_labels: bool) -> list[tuple[int | None, Path, str | None]]:
    def clips(folder: Path, deep: bool) -> list[Path]:
        found = folder.rglob("*") if deep else folder.glob("*")
        return sorted(p for p in found if p.is_file() and p.suffix.lower() in SUFFIXES)

    if target == "text":
        if require_labels:
            raise DataError(root, None, "a folder of clips has no transcripts; give a CSV/JSONL manifest with "
                                        "path and text columns")
        return [(None, p, None) for p in clips(root, True)]
    rows: list[tuple[int | None, Path, str | None]] = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        rows += [(None, p, label_dir.name) for p in clips(label_dir, True)]
    loose = clips(root, False)
    if loose and require_labels:
        raise DataError(loose[0], None, "a clip outside any label folder; put it in <folder>/<label>/")
    rows += [(None, p, None) for p in loose]
    if not rows:
        raise DataError(root, None, f"no audio files ({', '.join(SUFFIXES)}) in <label>/ sub-folders")
    return rows


def _manifest_rows(path: Path, fmt: str, *, path_column: str, value_column: str,
                   require_labels: bool) -> list[tuple[int | None, Path, str | None]]:
    from runassist.data.tabular import table_records

    header, records = table_records(str(path), fmt)
    if header is not None:
        wanted = [path_column] + ([value_column] if require_labels else [])
        for column in wanted:
            if column not in header:
                raise DataError(path, 1, f"no column '{column}'; columns here: {', '.join(header)}")
    rows: list[tuple[int | None, Path, str | None]] = []
    for line, record in records:
        file = record.get(path_column)
        if not isinstance(file, str) or not file.strip():
            raise DataError(path, line, f"'{path_column}' must be the path of an audio file (relative to {path.name})")
        value = record.get(value_column)
        if value is None or (isinstance(value, str) and not value.strip()):
            if require_labels:
                raise DataError(path, line, f"no '{value_column}' for {file}")
            value = None
        elif not isinstance(value, str):
            raise DataError(path, line, f"'{value_column}' must be a string, got {type(value).__name__}")
        full = Path(file).expanduser()
        rows.append((line, full if full.is_absolute() else path.parent / full, value.strip() if value else None))
    return rows


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
