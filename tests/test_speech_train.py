"""Speech runs beyond the contract test: Whisper through the generation path, ONNX export where the
capabilities claim it (with its parity check), and the ASR report's worst utterances."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from speech_helpers import commands, needs_espeak, ten_digits, tiny_audio_classifier, tiny_ctc, tiny_whisper

from runassist.errors import RunassistError


def _train(tmp_path, task: str, model, train, *overrides: str):
    from runassist.tasks import load_config
    from runassist.train.run import train as run_train

    cfg = load_config(None, [f"task={task}", f"model.source={model}", f"data.train={train}", f"data.dev={train}",
                             f"output.dir={tmp_path / 'runs'}", "train.threads=1", "train.precision=fp32",
                             "train.warmup_ratio=0", *overrides])
    return run_train(cfg, progress=False)


@pytest.mark.slow
@needs_espeak
def test_a_whisper_run_trains_and_writes_text(tmp_path):
    from runassist.predict import Predictor

    manifest = ten_digits()
    result = _train(tmp_path, "asr", tiny_whisper(), manifest, "train.max_steps=2", "train.batch_size=5",
                    "train.lr=1e-3", "task.generation.max_new_tokens=6", "task.language=en")
    summary = result.summary
    assert summary["status"] == "finished" and summary["steps"] == 2 and summary["extras"]["architecture"] == "whisper"
    assert summary["best"]["metric"] == "wer" and 0.0 <= summary["dev"]["cer"]
    predictor = Predictor.from_run(result.run)
    assert predictor.task.title == "asr (whisper)" and not predictor.task.capabilities.onnx
    rows = predictor.predict([str(manifest.parent / "seven.wav")])
    # Two steps teach nothing yet; what matters is that text comes out of generate(), capped at 6 tokens.
    assert list(rows[0]) == ["file", "text"] and isinstance(rows[0]["text"], str) and len(rows[0]["text"]) <= 6 * 4
    generation = json.loads((result.run / "model" / "generation_config.json").read_text())
    assert generation["max_new_tokens"] == 6 and generation["no_timestamps_token_id"] is not None
    from runassist.export import export

    with pytest.raises(RunassistError, match="asr model cannot be exported to ONNX"):
        export(result.run)


@pytest.mark.slow
@needs_espeak
def test_a_ctc_model_exports_to_onnx_with_the_same_transcripts(tmp_path):
    from runassist.export import export
    from runassist.predict import Predictor

    manifest = ten_digits()
    result = _train(tmp_path, "asr", tiny_ctc(), manifest, "train.max_steps=3", "train.batch_size=10", "train.lr=3e-3",
                    "task.freeze_feature_encoder=false")
    with pytest.raises(RunassistError, match="--quantize int8 needs decision margins"):
        export(result.run, quantize="int8")
    out = export(result.run)
    assert out["passed"] and out["agreement"] == 1.0, out
    paths = [str(manifest.parent / f"{w}.wav") for w in ("one", "seven", "three")]
    torch_rows = Predictor.from_run(result.run, precision="fp32").predict(paths)
    onnx = Predictor.from_run(result.run, backend="onnx")
    assert onnx.predict(paths) == torch_rows
    # A file's bytes (an upload, base64) reach the task through media_example and transcribe the same.
    uploads = [onnx.task.media_example(Path(p).read_bytes(), Path(p).name) for p in paths]
    assert [t.text for t in onnx.predict_examples(uploads)] == [r["text"] for r in torch_rows]


@pytest.mark.slow
@needs_espeak
def test_an_audio_classifier_exports_to_onnx_and_int8_is_guarded(tmp_path):
    from runassist.export import export
    from runassist.predict import Predictor

    folder = commands()
    result = _train(tmp_path, "audio", tiny_audio_classifier(), folder / "train", "train.max_steps=4",
                    "train.batch_size=6", "train.lr=3e-3")
    out = export(result.run, quantize="int8")
    assert out["checks"]["model.onnx"]["passed"], out
    clips = sorted(str(p) for p in (folder / "test").rglob("*.wav"))
    torch_rows = Predictor.from_run(result.run, precision="fp32").predict(clips)
    onnx_rows = Predictor.from_run(result.run, backend="onnx").predict(clips)
    assert [r["label"] for r in onnx_rows] == [r["label"] for r in torch_rows]
    for a, b in zip(onnx_rows, torch_rows):
        assert a["probs"] == pytest.approx(b["probs"], abs=0.02)


def test_the_asr_report_shows_the_worst_utterances(tmp_path):
    from runassist.tasks.asr_report import errors_section

    predictions = tmp_path / "test.jsonl"
    rows = [{"file": "/d/a.wav", "gold": "Seven of hearts.", "text": "seven of hearts"},
            {"file": "/d/b.wav", "gold": "ten of clubs", "text": "tan of cubs"},
            {"file": "/d/c.wav", "gold": "five five", "text": "five"},
            {"file": "/d/d.wav", "gold": "too long", "text": "", "skipped": "longer than task.max_seconds=30"}]
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    html = errors_section({"wer": 0.375, "cer": 0.2, "exact": 0.333, "word_errors": 3, "reference_words": 8},
                          predictions)
    assert "WER 0.375" in html and "3 word errors in 8 reference words" in html
    assert "2 utterances have errors" in html  # a.wav is right once normalised; d.wav was skipped
    assert html.index("b.wav") < html.index("c.wav")  # worst first: 2/3 before 1/2
    assert "tan of cubs" in html and "a.wav" not in html and "d.wav" not in html


def test_whisper_targets_begin_as_its_transcribing_does(tmp_path):
    from speech_helpers import tone, wav_bytes

    from runassist.errors import ConfigError
    from runassist.tasks import load_config, make_task
    from runassist.tasks.base import TaskState

    (tmp_path / "a.wav").write_bytes(wav_bytes(tone(0.5, 16000), 16000))
    (tmp_path / "train.csv").write_text("path,text\na.wav,Seven\n", encoding="utf-8")
    model = tiny_whisper()
    with pytest.raises(ConfigError, match="multilingual Whisper model needs the language"):
        make_task(load_config(None, ["task=asr"])).load_processor(str(model))
    task = make_task(load_config(None, ["task=asr", "task.language=en"]))
    processor = task.load_processor(str(model))
    [example] = task.read(str(tmp_path / "train.csv"))
    [feature] = task.encode([example], processor, TaskState(labels=None))
    tokens = processor.tokenizer.convert_ids_to_tokens(feature.target)
    # <|startoftranscript|> is the decoder's start token (shifted in by forward), so not a target.
    assert tokens[:3] == ["<|en|>", "<|transcribe|>", "<|notimestamps|>"] and tokens[-1] == "<|endoftext|>"
    assert processor.tokenizer.decode(feature.target, skip_special_tokens=True) == "Seven"
    assert feature.inputs["input_features"].shape == (80, 3000)  # Whisper's 30 s window of log-mel frames
