"""Speech for the tests: espeak-ng utterances and tiny speech models, made once per test session.

Plain cached functions rather than fixtures, so that every test module (the contract test too) shares
one set; they live in a temporary folder removed when the session ends. A test that needs espeak-ng or
pocketsphinx-testdata skips with the reason when they are absent (``make speech`` installs them).
"""

from __future__ import annotations

import atexit
import functools
import io
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))

import speech_assets as sa

needs_espeak = pytest.mark.skipif(not sa.have_espeak(), reason="espeak-ng is not installed (`make speech` installs it)")
needs_pocketsphinx = pytest.mark.skipif(not sa.have_pocketsphinx(),
                                        reason="pocketsphinx-testdata is not installed (`make speech` installs it)")


@functools.lru_cache(maxsize=1)
def root() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="runassist-speech-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@functools.cache
def tiny_ctc() -> Path:
    return sa.build_tiny_ctc(root() / "models" / "ctc")


@functools.cache
def tiny_audio_classifier() -> Path:
    return sa.build_tiny_audio_classifier(root() / "models" / "audio")


@functools.cache
def tiny_whisper() -> Path:
    return sa.build_tiny_whisper(root() / "models" / "whisper")


@functools.cache
def ten_digits() -> Path:
    """The ten digits, one utterance each (two voices, alternating): ``digits/train.csv`` (path,text)."""
    folder = root() / "digits"
    rows = []
    for i, word in enumerate(sa.DIGITS):
        name = f"{word}.wav"
        sa.speak(word, folder / name, voice=sa.VOICES[i % 2], speed=160)
        rows.append({"path": name, "text": word})
    return sa.write_manifest(folder / "train.csv", rows)


@functools.cache
def commands() -> Path:
    """Two command words in three voices: ``train/<word>/`` at two speeds, ``test/<word>/`` at a third (a
    tiny model trained from scratch tells two words apart at an unseen speed in a few seconds; four words
    need minutes)."""
    folder = root() / "commands"
    for split, speeds in (("train", (130, 190)), ("test", (160,))):
        for word in ("yes", "stop"):
            for voice in sa.VOICES[:3]:
                for speed in speeds:
                    sa.speak(word, folder / split / word / f"{voice.replace('+', '_')}-{speed}.wav", voice=voice,
                             speed=speed)
    return folder


def wav_bytes(samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def tone(seconds: float, rate: int, hz: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    return wave if channels == 1 else np.stack([wave] * channels, axis=1)
