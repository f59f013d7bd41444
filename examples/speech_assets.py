"""Speech data and tiny speech models for the examples and the tests, made on this machine.

No speech model in Hugging Face format ships in a package, so the examples and tests build tiny,
untrained wav2vec2 models (and a tiny Whisper) from a config, with a processor made here (a character
vocabulary for CTC). Speech comes from Debian's ``espeak-ng`` (several voices and speeds saying digits
and command words) and from the real recordings with transcripts in Debian's ``pocketsphinx-testdata``
(``make speech`` installs both, best effort).

    python examples/speech_assets.py OUT     # OUT/models/{ctc,audio,whisper}, OUT/espeak/, OUT/cards/

A real run brings its own model folder instead (``model.source``): a local wav2vec2/HuBERT/Whisper folder
or a hub name on a machine that can download.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
COMMANDS = ["yes", "no", "up", "down", "left", "right", "stop", "go"]
VOICES = ("en+m3", "en+f2", "en-us+m1")
SPEEDS = (130, 160, 190)
CHARS = "abcdefghijklmnopqrstuvwxyz'"


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def have_pocketsphinx() -> bool:
    return (POCKETSPHINX / "cards" / "cards.transcription").is_file()


def speak(text: str, path: Path, *, voice: str = "en+m3", speed: int = 160) -> Path:
    """One utterance as a WAV file (espeak-ng writes 22,050 Hz mono)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True,
                   capture_output=True)
    return path


def spoken_words(folder: Path, words: list[str], *, voices=VOICES, speeds=SPEEDS) -> list[dict[str, str]]:
    """Every word in every voice and speed: rows ``{path, text, label}`` (paths relative to ``folder``)."""
    rows = []
    for word in words:
        for voice in voices:
            for speed in speeds:
                name = f"{word}/{voice.replace('+', '_')}-{speed}.wav"
                speak(word, folder / name, voice=voice, speed=speed)
                rows.append({"path": name, "text": word, "label": word})
    return rows


def write_manifest(path: Path, rows: list[dict[str, str]], columns: tuple[str, ...] = ("path", "text")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def pocketsphinx_rows(name: str = "cards") -> list[dict[str, str]]:
    """The recordings of one pocketsphinx test set with their transcripts (absolute paths)."""
    folder = POCKETSPHINX / name
    rows = []
    for line in (folder / f"{name}.transcription").read_text().splitlines():
        # "<s> ten of clubs  </s> (001)"
        text, _, ident = line.rpartition("(")
        words = [w for w in text.split() if w not in ("<s>", "</s>")]
        rows.append({"path": str(folder / f"{ident.strip(' )')}.wav"), "text": " ".join(words)})
    return rows


# -- tiny models ----------------------------------------------------------------------------------

def _encoder_config(**extra):
    from transformers import Wav2Vec2Config

    # 4 convolutions striding 320 samples: 50 frames a second at 16 kHz, as wav2vec2 base.
    return Wav2Vec2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                          conv_dim=(32, 32, 32, 32), conv_stride=(5, 4, 4, 4), conv_kernel=(10, 4, 4, 4),
                          num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, feat_extract_norm="layer",
                          do_stable_layer_norm=True, mask_time_prob=0.0, layerdrop=0.0, hidden_dropout=0.0,
                          attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.0,
                          classifier_proj_size=32, **extra)


def _extractor():
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                    return_attention_mask=True)


def build_tiny_ctc(folder: Path, chars: str = CHARS, seed: int = 0) -> Path:
    """An untrained tiny wav2vec2 CTC model with a character vocabulary (blank = <pad>, | between words)."""
    import torch
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2ForCTC, Wav2Vec2Processor

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                                     word_delimiter_token="|")
    torch.manual_seed(seed)
    model = Wav2Vec2ForCTC(_encoder_config(vocab_size=len(vocab), pad_token_id=0, ctc_loss_reduction="mean",
                                           ctc_zero_infinity=True))
    model.save_pretrained(folder, safe_serialization=True)
    Wav2Vec2Processor(feature_extractor=_extractor(), tokenizer=tokenizer).save_pretrained(folder)
    return folder


def build_tiny_audio_classifier(folder: Path, seed: int = 0) -> Path:
    """An untrained tiny wav2vec2 with a classification head (sized for the run's labels at training)."""
    import torch
    from transformers import Wav2Vec2ForSequenceClassification

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    Wav2Vec2ForSequenceClassification(_encoder_config(num_labels=2)).save_pretrained(folder, safe_serialization=True)
    _extractor().save_pretrained(folder)
    return folder


WHISPER_SPECIALS = ("<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|translate|>",
                    "<|notimestamps|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>")


def build_tiny_whisper(folder: Path, seed: int = 0) -> Path:
    """An untrained tiny Whisper (one layer each side, 32 wide) with a byte-level tokenizer (no merges:
    a token per byte) and Whisper's special tokens, saved with its WhisperProcessor."""
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {c: i for i, c in enumerate([*bytes_to_unicode().values(), *WHISPER_SPECIALS])}
    end = WHISPER_SPECIALS[0]
    tokenizer = WhisperTokenizer(vocab=vocab, merges=[], unk_token=end, bos_token=end, eos_token=end, pad_token=end,
                                 language="en", task="transcribe", predict_timestamps=False,
                                 extra_special_tokens=list(WHISPER_SPECIALS[1:]))
    ids = {s: vocab[s] for s in WHISPER_SPECIALS}
    torch.manual_seed(seed)
    config = WhisperConfig(vocab_size=len(vocab), d_model=32, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                           num_mel_bins=80, max_source_positions=1500, max_target_positions=64, dropout=0.0,
                           pad_token_id=ids[end], bos_token_id=ids[end], eos_token_id=ids[end],
                           decoder_start_token_id=ids["<|startoftranscript|>"], suppress_tokens=[],
                           begin_suppress_tokens=[])
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=ids[end], pad_token_id=ids[end],
        no_timestamps_token_id=ids["<|notimestamps|>"], lang_to_id={"<|en|>": ids["<|en|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}, is_multilingual=True)
    model.save_pretrained(folder, safe_serialization=True)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer).save_pretrained(folder)
    return folder


def main(out: str) -> None:
    root = Path(out)
    build_tiny_ctc(root / "models" / "ctc")
    build_tiny_audio_classifier(root / "models" / "audio")
    build_tiny_whisper(root / "models" / "whisper")
    if have_espeak():
        # Held out: every clip said at 160 words a minute (dev, test); trained on the other speeds.
        for name, words in (("commands", COMMANDS), ("digits", DIGITS)):
            rows = spoken_words(root / "espeak" / name, words)
            columns = ("path", "label") if name == "commands" else ("path", "text")
            write_manifest(root / "espeak" / name / "train.csv", [r for r in rows if "-160" not in r["path"]], columns)
            write_manifest(root / "espeak" / name / "test.csv", [r for r in rows if "-160" in r["path"]], columns)
    else:
        print("espeak-ng is not installed (make speech): no synthetic speech", file=sys.stderr)
    if have_pocketsphinx():
        write_manifest(root / "cards" / "cards.csv", pocketsphinx_rows("cards"))
    print(root)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "speech-assets")
