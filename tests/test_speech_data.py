"""Reading audio for the speech tasks: resampling to the model's rate, the mono policy, media inputs,
manifests and folders, and what check-data says about clips and transcripts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from speech_helpers import needs_espeak, needs_pocketsphinx, tiny_ctc, tone, wav_bytes

from runassist.errors import DataError, MediaTooLarge


def _task(name: str, *overrides: str):
    from runassist.tasks import load_config, make_task

    return make_task(load_config(None, [f"task={name}", *overrides]))


def _extractor(rate: int = 16000):
    from transformers import Wav2Vec2FeatureExtractor

    # No normalisation: the samples the model gets can be compared with the file's.
    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=rate, padding_value=0.0, do_normalize=False,
                                    return_attention_mask=True)


def test_an_8khz_wav_is_resampled_for_a_16khz_model(tmp_path):
    from scipy.signal import resample_poly

    from runassist.tasks.base import TaskState

    wave = tone(0.5, 8000, hz=440.0)
    path = tmp_path / "tone-8k.wav"
    path.write_bytes(wav_bytes(wave, 8000, subtype="FLOAT"))
    task = _task("audio")
    example = task.example_from_input(str(path))
    assert (example.rate, example.channels, example.frames) == (8000, 1, 4000)

    [feature] = task.encode([example], _extractor(16000), TaskState(labels=["a", "b"]))
    got = feature.inputs["input_values"]
    assert feature.size == got.shape[0] == 8000  # 0.5 s at 16 kHz, not the file's 4,000 samples
    np.testing.assert_allclose(got, resample_poly(wave, 2, 1), atol=1e-6)
    spectrum = np.abs(np.fft.rfft(got))
    assert np.fft.rfftfreq(got.shape[0], 1 / 16000)[spectrum.argmax()] == pytest.approx(440.0, abs=2.0)

    batch = task.collate([feature], _extractor(16000))
    assert tuple(batch["input_values"].shape) == (1, 8000) and int(batch["attention_mask"].sum()) == 8000


def test_a_model_at_another_rate_gets_its_own_rate(tmp_path):
    from runassist.tasks.base import TaskState

    path = tmp_path / "tone-22k.wav"
    path.write_bytes(wav_bytes(tone(1.0, 22050), 22050))
    task = _task("audio")
    [feature] = task.encode([task.example_from_input(str(path))], _extractor(8000), TaskState(labels=["a"]))
    assert feature.size == 8000


def test_stereo_is_mixed_to_mono_or_refused_by_policy(tmp_path):
    from runassist.tasks.base import TaskState

    left, right = tone(0.25, 16000, hz=300.0), tone(0.25, 16000, hz=500.0)
    path = tmp_path / "stereo.wav"
    path.write_bytes(wav_bytes(np.stack([left, right], axis=1), 16000, subtype="FLOAT"))
    mixed = _task("audio")
    [feature] = mixed.encode([mixed.example_from_input(str(path))], _extractor(), TaskState(labels=["a"]))
    np.testing.assert_allclose(feature.inputs["input_values"], (left + right) / 2, atol=1e-6)

    strict = _task("audio", "task.multichannel=error")
    with pytest.raises(ValueError, match="stereo.wav has 2 channels; this model takes mono"):
        strict.example_from_input(str(path))


def test_media_inputs_bytes_paths_and_refusals(tmp_path):
    task = _task("asr", "task.max_seconds=2")
    example = task.media_example(wav_bytes(tone(1.0, 16000), 16000), "upload.wav")
    assert (example.path, example.rate, example.frames, example.data is not None) == ("upload.wav", 16000, 16000, True)
    with pytest.raises(ValueError, match="cannot read audio from notes.wav"):
        task.media_example(b"this is not a wav file at all", "notes.wav")
    with pytest.raises(MediaTooLarge, match=r"long.wav is 3.0 s long; this model takes clips up to 2 s"):
        task.media_example(wav_bytes(tone(3.0, 16000), 16000), "long.wav")
    with pytest.raises(ValueError, match="empty"):
        task.media_example(wav_bytes(np.zeros(0, dtype=np.float32), 16000), "empty.wav")
    for bad in (123, {"path": "x.wav"}, ""):
        with pytest.raises(ValueError, match="takes audio: give the path"):
            task.example_from_input(bad)
    with pytest.raises(ValueError, match="cannot open"):
        task.example_from_input(str(tmp_path / "missing.wav"))
    assert task.media == "audio" and ".wav" in task.media_suffixes and ".flac" in task.media_suffixes


def test_a_flac_clip_reads_like_a_wav(tmp_path):
    import soundfile as sf

    wave = tone(0.5, 16000)
    sf.write(tmp_path / "a.flac", wave, 16000, format="FLAC")
    from runassist.data.audio import load

    task = _task("audio")
    np.testing.assert_allclose(load(task.example_from_input(str(tmp_path / "a.flac")), 16000), wave, atol=1e-4)


def test_manifest_paths_are_relative_to_it_and_errors_name_the_line(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.wav").write_bytes(wav_bytes(tone(0.3, 16000), 16000))
    manifest = tmp_path / "train.jsonl"
    manifest.write_text(json.dumps({"path": "clips/a.wav", "text": "Hello there"}) + "\n", encoding="utf-8")
    [ex] = _task("asr").read(str(manifest))
    assert (ex.path, ex.text, ex.source) == (str(tmp_path / "clips" / "a.wav"), "Hello there", f"{manifest}:1")

    bad = tmp_path / "bad.csv"
    bad.write_text("path,text\nclips/a.wav,\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{bad}:2: no 'text' for clips/a.wav"):
        _task("asr").read(str(bad))
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("file,text\nclips/a.wav,hi\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{wrong}:1: no column 'path'; columns here: file, text"):
        _task("asr").read(str(wrong))
    assert _task("asr", "task.path_column=file").read(str(wrong))[0].text == "hi"


def _check(tmp_path: Path, task: str, train: Path, *overrides: str, model: Path | None = None):
    from runassist.data.checks import check_data
    from runassist.tasks import load_config, make_task

    cfg = load_config(None, [f"task={task}", f"data.train={train}", *overrides])
    t = make_task(cfg)
    processor = t.load_processor(str(model)) if model else None
    return check_data(t, cfg.data, processor=processor)


def test_check_data_names_unreadable_empty_and_multichannel_clips(tmp_path):
    rows = {"good.wav": wav_bytes(tone(0.5, 16000), 16000), "broken.wav": b"RIFF\x00\x00garbage",
            "empty.wav": wav_bytes(np.zeros(0, dtype=np.float32), 16000),
            "stereo.wav": wav_bytes(tone(0.5, 16000, channels=2), 16000)}
    for name, data in rows.items():
        (tmp_path / name).write_bytes(data)
    manifest = tmp_path / "train.csv"
    manifest.write_text("path,text\n" + "".join(f"{name},hello\n" for name in rows), encoding="utf-8")

    report = _check(tmp_path, "asr", manifest)
    assert not report.ok
    assert any(e.startswith(f"{manifest}:3: cannot read audio from {tmp_path / 'broken.wav'}") for e in report.errors), \
        report.errors
    assert any(e.startswith(f"{manifest}:4: ") and "empty.wav is empty" in e for e in report.errors), report.errors
    assert any("stereo.wav" in w and "averaged to mono" in w for w in report.warnings), report.warnings
    assert report.splits["train"].examples == 2  # good and stereo (mixed)

    strict = _check(tmp_path, "asr", manifest, "task.multichannel=error")
    assert any(e.startswith(f"{manifest}:5: ") and "stereo.wav has 2 channels" in e for e in strict.errors), \
        strict.errors
    with pytest.raises(DataError, match=r"train.csv:3: cannot read audio from .*broken.wav.*\(and 1 more such"):
        from runassist.tasks import load_config, make_task

        make_task(load_config(None, ["task=asr"])).read(str(manifest))


def test_check_data_lists_characters_outside_the_ctc_vocabulary_and_long_clips(tmp_path):
    for name, seconds in (("a.wav", 0.5), ("b.wav", 0.5), ("long.wav", 3.0)):
        (tmp_path / name).write_bytes(wav_bytes(tone(seconds, 16000), 16000))
    manifest = tmp_path / "train.csv"
    manifest.write_text("path,text\na.wav,Hello World!\nb.wav,café 42\nlong.wav,fine\n", encoding="utf-8")
    report = _check(tmp_path, "asr", manifest, "task.max_seconds=2", model=tiny_ctc())
    [oov] = [w for w in report.warnings if "outside the model's vocabulary" in w]
    # Upper case is fine (this vocabulary is lower-case: transcripts are lower-cased); these are not.
    for ch, line in (("!", 2), ("é", 3), ("4", 3), ("2", 3)):
        assert f"'{ch}' (1, first at {manifest}:{line})" in oov, oov
    assert "'h'" not in oov and "'H'" not in oov
    assert any("long.wav" in w and "longer than task.max_seconds=2" in w and "skipped" in w for w in report.warnings)
    assert report.splits["train"].over_max_length == 1


@needs_espeak
def test_check_data_on_an_audio_folder_counts_labels_and_flags_imbalance(tmp_path):
    import speech_assets as sa

    for i in range(10):
        sa.speak("yes", tmp_path / "train" / "yes" / f"{i}.wav", speed=120 + 10 * i)
    sa.speak("no", tmp_path / "train" / "no" / "0.wav")
    report = _check(tmp_path, "audio", tmp_path / "train")
    assert report.splits["train"].labels == {"no": 1, "yes": 10}
    assert any("imbalanced 10:1" in w for w in report.warnings), report.warnings


@needs_pocketsphinx
def test_the_pocketsphinx_recordings_read_with_their_transcripts(tmp_path):
    import speech_assets as sa

    manifest = sa.write_manifest(tmp_path / "cards.csv", sa.pocketsphinx_rows("cards"))
    examples = _task("asr").read(str(manifest))
    assert len(examples) == 5 and examples[0].text == "ten of clubs"
    assert all(ex.rate == 16000 and ex.channels == 1 and 1.0 < ex.seconds < 4.0 for ex in examples)
