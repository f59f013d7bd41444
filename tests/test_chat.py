"""Chat fine-tuning: the loss mask is the assistant's tokens whatever the template, truncation never
leaves an empty mask, a tiny Llama-style model learns its replies, LoRA runs resume exactly, and the
run folder works with transformers alone."""

from __future__ import annotations

import json

import pytest

from conftest import build_tiny_llama_dir, make_chat_rows, write_jsonl
from runassist.config import DataConfig, ModelConfig
from runassist.data.records import ChatExample
from runassist.tasks.base import IGNORE_INDEX, TaskState
from runassist.tasks.chat import CHATML, ChatSection, ChatTask

CONVERSATION = ChatExample((("system", "you are a bot"), ("user", "hello"), ("assistant", "hi how are you"),
                            ("user", "bye"), ("assistant", "see you later")))
# ChatML with transformers' {% generation %} markers around the assistant's text
MARKED = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
          "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}"
          "{% endgeneration %}{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def _task(max_length=64, **section) -> ChatTask:
    return ChatTask(ChatSection(**section), DataConfig(), ModelConfig(max_length=max_length))


@pytest.mark.parametrize("template", ["chatml", "with generation markers", "none (the model has no template)"])
def test_the_loss_mask_is_exactly_the_assistant_messages(tmp_path, template):
    folder = build_tiny_llama_dir(tmp_path / "m", template={"chatml": CHATML, "with generation markers": MARKED}
                                  .get(template, "none"))
    task = _task()
    tokenizer = task.load_processor(str(folder))
    assert tokenizer.chat_template  # a model without one gets ChatML, saved with the run
    (feature,) = task.encode([CONVERSATION], tokenizer, TaskState(None))
    trained = [t for t in feature.target if t != IGNORE_INDEX]
    assert tokenizer.decode(trained) == "hi how are you <|im_end|> see you later <|im_end|>"
    # every other position, the prompt and the user's and system's text, is masked
    masked = [i for i, t in zip(feature.inputs["input_ids"], feature.target) if t == IGNORE_INDEX]
    assert "hello" in tokenizer.decode(masked) and "bot" in tokenizer.decode(masked)


def test_a_conversation_with_no_assistant_token_left_is_dropped_and_counted(tiny_llama):
    task = _task(max_length=12)
    tokenizer = task.load_processor(str(tiny_llama))
    long_user = ChatExample((("user", " ".join(["hello"] * 30)), ("assistant", "hi")))
    short = ChatExample((("user", "hello"), ("assistant", "hi how are you")))
    features = task.encode([long_user, short], tokenizer, TaskState(None))
    assert [f.example for f in features] == [1]  # the long one would train on an empty mask: dropped
    assert all(any(t != IGNORE_INDEX for t in f.target) for f in features)
    predictions = task.decode([long_user, short], features, [[3.0, 4.0]], TaskState(None))
    scores = task.score([long_user, short], predictions, TaskState(None))
    assert scores["dropped"] == 1 and scores["conversations"] == 1 and scores["tokens"] == 4


def test_check_data_reports_roles_turns_and_cut_assistants(tmp_path, tiny_llama):
    from runassist.data.checks import check_data

    rows = [{"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]},
            {"messages": [{"role": "robot", "content": "hello"}]},
            {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "hi"}]},
            {"messages": [{"role": "user", "content": "hello"}]},
            {"messages": [{"role": "user", "content": " ".join(["hello"] * 40)},
                          {"role": "assistant", "content": "hi"}]},
            {"instruction": "say hi", "input": "to bob", "output": "hi bob"}]
    path = write_jsonl(tmp_path, rows, "train.jsonl")
    task = _task(max_length=24)
    report = check_data(task, DataConfig(train=str(path)), processor=task.load_processor(str(tiny_llama)))
    assert f"{path}:2: messages[0]: unknown role 'robot'; roles: system, user, assistant" in report.errors
    assert f"{path}:3: an empty message" in report.errors
    assert f"{path}:4: no assistant message: nothing to learn from this conversation" in report.errors
    assert any(w.startswith(f"{path}:5: 1 of 5 conversations in train have assistant text past model.max_length=24")
               and "1 keep no assistant token" in w for w in report.warnings), report.warnings


@pytest.fixture(scope="module")
def chat_files(tmp_path_factory):
    base = tmp_path_factory.mktemp("chat")
    return {s: write_jsonl(base, make_chat_rows(n, seed), f"{s}.jsonl")
            for s, n, seed in (("train", 64, 0), ("dev", 16, 1), ("test", 16, 2))}


def _overrides(files, model, out, **train):
    items = ["task=chat", f"model.source={model}", "model.max_length=48", f"output.dir={out}",
             *(f"data.{k}={v}" for k, v in files.items()), "train.batch_size=8", "train.threads=1",
             "train.precision=fp32", "train.lr=1e-2", "train.warmup_ratio=0", "task.generation.max_new_tokens=8"]
    return items + [f"train.{k}={v}" for k, v in train.items()]


def test_a_tiny_model_learns_its_replies_and_the_run_works_with_transformers_alone(chat_files, tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from runassist.predict import Predictor
    from runassist.tasks import load_config
    from runassist.train.run import train

    result = train(load_config(None, _overrides(chat_files, tiny_llama, tmp_path, epochs=10)), progress=False)
    summary = result.summary
    assert summary["best"]["metric"] == "perplexity"
    before, after = summary["dev_before_training"]["perplexity"], summary["best"]["value"]
    assert after < before / 3, (before, after)  # what fine-tuning changed, on the same dev set
    assert summary["test"]["perplexity"] < 2.0 and summary["inputs"]["examples_dropped"] == 0
    rows = [json.loads(line) for line in (result.run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["kind"] == "before_training" and rows[0]["perplexity"] == pytest.approx(before)

    predictor = Predictor.from_run(result.run)
    replies = predictor.predict(["hello", {"messages": [{"role": "user", "content": "what is your name"}]}])
    assert replies == [{"reply": "hi how are you"}, {"reply": "i am bot"}]
    # the run folder alone: template and generation settings saved with the model
    tokenizer = AutoTokenizer.from_pretrained(result.run / "model")
    model = AutoModelForCausalLM.from_pretrained(result.run / "model")
    assert model.generation_config.max_new_tokens == 8
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "bye"}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    out = model.generate(**prompt)
    assert tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True) == "see you later"


def test_a_model_without_a_chat_template_gets_one_saved_with_the_run(chat_files, tmp_path):
    from transformers import AutoTokenizer

    from runassist.tasks import load_config
    from runassist.train.run import train

    bare = build_tiny_llama_dir(tmp_path / "bare", template="none")
    assert not AutoTokenizer.from_pretrained(bare).chat_template
    result = train(load_config(None, _overrides(chat_files, bare, tmp_path / "runs", max_steps=2)), progress=False)
    assert AutoTokenizer.from_pretrained(result.run / "model").chat_template == CHATML


class Killed(Exception):
    """Stands for kill -9: nothing is saved on the way out."""


def test_a_killed_lora_run_resumes_to_the_same_weights(chat_files, tiny_llama, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from runassist.tasks import load_config
    from runassist.train import callbacks
    from runassist.train.run import train

    settings = dict(max_steps=12, checkpoint_every=4, eval_every=6, dropout=0.1, lora="{r: 4, merge: false}")
    straight = train(load_config(None, _overrides(chat_files, tiny_llama, tmp_path / "a", **settings)), progress=False)
    assert (straight.run / "model" / "adapter_config.json").exists()
    real = callbacks.MetricsLog.on_step

    def on_step(self, ctx, info):
        real(self, ctx, info)
        if info.position.step == 9:  # three steps past the checkpoint at 6
            raise Killed

    monkeypatch.setattr(callbacks.MetricsLog, "on_step", on_step)
    with pytest.raises(Killed):
        train(load_config(None, _overrides(chat_files, tiny_llama, tmp_path / "b", **settings)), progress=False)
    monkeypatch.undo()
    [run] = [p for p in (tmp_path / "b").iterdir() if (p / "config.yaml").exists()]
    resumed = train(None, resume=run, progress=False)
    for name in ("checkpoints/last/model.safetensors", "model/adapter_model.safetensors"):
        a, b = load_file(straight.run / name), load_file(resumed.run / name)
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), name
    assert resumed.summary["test"] == straight.summary["test"]


def test_training_data_is_scored_and_prediction_input_is_answered(tmp_path, tiny_llama):
    """A conversation in a data file is scored even when it ends with the user (chitchat does); read
    for prediction, one ending with the user gets a reply; a file mixing both is answered per kind."""
    from runassist.data.chat import scan_chat_jsonl

    rows = [{"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"},
                          {"role": "user", "content": "bye"}]},
            {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]}]
    path = write_jsonl(tmp_path, rows, "mixed.jsonl")
    task = _task()
    tokenizer = task.load_processor(str(tiny_llama))
    labelled = scan_chat_jsonl(path).examples
    assert [f.meta["generate"] for f in task.encode(labelled, tokenizer, TaskState(None))] == [False, False]
    for_prediction = scan_chat_jsonl(path, require_labels=False).examples
    assert [ex.respond for ex in for_prediction] == [True, False]

    from runassist.inference import predict_examples

    model = task.build_model(str(tiny_llama), TaskState(None)).eval()
    answered, scored = predict_examples(task, model, tokenizer, for_prediction, TaskState(None))
    assert isinstance(answered.reply, str) and answered.loss is None
    assert scored.reply is None and scored.tokens == 2  # "hi" and its end-of-turn mark


@pytest.fixture(scope="module")
def chat_run(chat_files, tiny_llama, tmp_path_factory):
    from runassist.tasks import load_config
    from runassist.train.run import train

    out = tmp_path_factory.mktemp("chat-run")
    return train(load_config(None, _overrides(chat_files, tiny_llama, out, epochs=10)), progress=False).run


@pytest.mark.slow
def test_runassist_chat_in_the_terminal_keeps_the_conversation(chat_run):
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "runassist.cli", "chat", str(chat_run)],
                          input="hello\nbye\n/reset\nwhat is your name\n", capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["hi how are you", "see you later", "i am bot"]
    assert "(conversation cleared)" in done.stderr


def test_replies_stream_in_pieces_and_a_stop_ends_them(chat_run):
    import threading

    from runassist.predict import Predictor

    predictor = Predictor.from_run(chat_run)
    example = predictor.task.example_from_input("hello")
    pieces = list(predictor.task.stream(predictor.model, predictor.processor, example, predictor.state))
    assert len(pieces) > 1 and "".join(pieces).strip() == "hi how are you"
    stop = threading.Event()
    stop.set()  # already stopped: at most the first token comes out
    early = list(predictor.task.stream(predictor.model, predictor.processor, example, predictor.state, stop=stop,
                                       settings={"max_new_tokens": 200}))
    assert len("".join(early).split()) <= 1


def test_freezing_finds_a_llama_style_models_embeddings_and_layers(tiny_llama):
    from transformers import AutoModelForCausalLM

    from runassist.train.setup import apply_freeze

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    frozen = apply_freeze(model, "bottom:1")
    assert "model.embed_tokens.weight" in frozen
    assert any(n.startswith("model.layers.0.") for n in frozen) and not any(n.startswith("model.layers.1.")
                                                                              for n in frozen)
    head_only = apply_freeze(AutoModelForCausalLM.from_pretrained(tiny_llama), "head_only")
    assert any(n.startswith("model.layers.1.") for n in head_only)
