"""Shared fixtures: tiny models built from a config (no download), tiny data files, one torch thread."""

from __future__ import annotations

import os
import random
import string
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)  # two cores shared with other processes: 1 thread is the fast setting here

REPO = Path(__file__).resolve().parents[1]

WORDS = ("the a of to in and is was on for with at by from new york london paris john mary smith apple google "
         "city river street said went visited works lives movie great bad good terrible film plot fun boring "
         "loved hated acting story").split()
TYPES = {"PER": ["john", "mary", "john smith", "mary smith"], "LOC": ["london", "paris", "new york"],
         "ORG": ["apple", "google"]}
CJK = "我们在北京上海工作生活喜欢这个电影很好不差张三李四"


def build_tiny_model_dir(folder: Path) -> Path:
    """A 2-layer BERT with random weights and a WordPiece tokenizer that covers any ASCII word."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab_list = specials + WORDS + chars + ["##" + c for c in string.ascii_lowercase + string.digits] + list(CJK)
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]",
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-bert") / "model")


def make_ner_sentences(n: int, seed: int = 0) -> list[list[tuple[str, str]]]:
    """Sentences where names are always entities of a fixed type: learnable in a few steps."""
    rng = random.Random(seed)
    names = {w for v in TYPES.values() for name in v for w in name.split()}
    fillers = [w for w in WORDS if w not in names]
    sentences = []
    for _ in range(n):
        sent = []
        for _ in range(rng.randint(4, 10)):
            if rng.random() < 0.3:  # an entity, then a filler word so entities never touch
                kind = rng.choice(sorted(TYPES))
                words = rng.choice(TYPES[kind]).split()
                sent += [(w, ("B-" if i == 0 else "I-") + kind) for i, w in enumerate(words)]
            sent.append((rng.choice(fillers), "O"))
        sentences.append(sent)
    return sentences


def write_text(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def write_jsonl(tmp_path: Path, rows: list[object], name: str = "data.jsonl") -> Path:
    import json

    return write_text(tmp_path, name, "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")


def write_conll(path: Path, sentences) -> Path:
    path.write_text("\n\n".join("\n".join(f"{w}\t{t}" for w, t in s) for s in sentences) + "\n", encoding="utf-8")
    return path


@pytest.fixture()
def ner_files(tmp_path) -> dict[str, Path]:
    return {split: write_conll(tmp_path / f"{split}.conll", make_ner_sentences(n, seed))
            for split, n, seed in (("train", 64, 0), ("dev", 16, 1), ("test", 16, 2))}


def ner_overrides(files: dict[str, Path], model: Path, out: Path, **train) -> list[str]:
    items = ["task=ner", f"model.source={model}", "model.max_length=32", "model.stride=8",
             f"data.train={files['train']}", f"data.dev={files['dev']}", f"data.test={files['test']}",
             f"output.dir={out}", "train.batch_size=8", "train.epochs=2", "train.lr=5e-3", "train.threads=1",
             "train.precision=fp32"]
    items += [f"train.{k}={v}" for k, v in train.items()]
    return items


def read_examples(spec: str, *, task: str, data, require_labels: bool = True, **section):
    """A split read by the task named ``task`` (its section's keys in ``section``)."""
    from runassist.config import ModelConfig
    from runassist.tasks import task_class

    cls = task_class(task)
    return cls(cls.Section(**section), data, ModelConfig()).read(spec, require_labels=require_labels)


def make_relation_rows(n: int, seed: int = 0) -> list[dict]:
    """Sentences whose verb says the relation: "PER works for ORG" (works_for), "PER lives in LOC"
    (lives_in), "PER visited LOC with ORG" (no relation); every ordered pair of mentions is a row."""
    rng = random.Random(seed)
    fillers = ["the", "a", "said", "was", "on", "at", "and", "new", "city", "story"]
    templates = [("{PER} works for {ORG}", {("PER", "ORG"): "works_for"}),
                 ("{PER} lives in {LOC}", {("PER", "LOC"): "lives_in"}),
                 ("{PER} visited {LOC} with {ORG}", {})]
    rows = []
    for _ in range(n):
        template, relations = rng.choice(templates)
        text = " ".join(rng.sample(fillers, rng.randint(0, 3)))
        text = (text + " " if text else "")
        spans = {}
        for piece in template.split():
            if piece.startswith("{"):
                kind = piece[1:-1]
                name = rng.choice(TYPES[kind])
                spans[kind] = (len(text), len(text) + len(name))
                text += name + " "
            else:
                text += piece + " "
        text += " ".join(rng.sample(fillers, rng.randint(0, 3)))
        text = text.strip()
        for a in spans:
            for b in spans:
                if a != b:
                    rows.append({"text": text, "head": {"start": spans[a][0], "end": spans[a][1], "type": a},
                                 "tail": {"start": spans[b][0], "end": spans[b][1], "type": b},
                                 "relation": relations.get((a, b), "no_relation")})
    return rows


QUESTIONS = {"PER": "which person ?", "LOC": "which city ?", "ORG": "which company ?"}


def make_qa_rows(n: int, seed: int) -> list[dict]:
    """A question per entity type in a sentence (its first entity answers it), and one about a type
    the sentence lacks (no answer)."""
    from runassist.data.tags import spans_from_iob2

    rng = random.Random(seed)
    rows = []
    for sentence in make_ner_sentences(n, seed):
        words = [w for w, _ in sentence]
        context = " ".join(words)
        starts = [sum(len(w) + 1 for w in words[:i]) for i in range(len(words))]
        first: dict[str, tuple[str, int]] = {}
        for a, b, kind in spans_from_iob2([t for _, t in sentence]):
            first.setdefault(kind, (" ".join(words[a:b]), starts[a]))
        for kind, (text, start) in sorted(first.items()):
            rows.append({"question": QUESTIONS[kind], "context": context,
                         "answers": {"text": [text], "answer_start": [start]}})
        absent = sorted(set(QUESTIONS) - set(first))
        if absent:
            rows.append({"question": QUESTIONS[rng.choice(absent)], "context": context,
                         "answers": {"text": [], "answer_start": []}})
    return rows


# -- generative models (the seq2seq task) ------------------------------------------------------------

def _generator_tokenizer(specials: list[str], template: str, **tokens: str):
    """A WordPiece tokenizer over WORDS (any ASCII word spells out in characters), with these specials
    and a post-processor ``template`` ("$A </s>" for T5, "<s> $A" for a Llama)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab_list = specials + WORDS + chars + ["##" + c for c in string.ascii_lowercase + string.digits] + list(CJK)
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="<unk>", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(s, vocab[s]) for s in specials if s in template.split()])
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", **tokens), vocab


def build_tiny_t5_dir(folder: Path) -> Path:
    """A 2+2-layer T5 with random weights: pad 0 (also the decoder start), eos 1, as T5 has them."""
    from transformers import T5Config, T5ForConditionalGeneration

    fast, vocab = _generator_tokenizer(["<pad>", "</s>", "<unk>"], "$A </s>", pad_token="<pad>", eos_token="</s>")
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(vocab), d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2,
                      num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, dropout_rate=0.0)
    T5ForConditionalGeneration(config).save_pretrained(folder, safe_serialization=True)
    return folder


def build_tiny_decoder_dir(folder: Path) -> Path:
    """A 2-layer Llama with random weights whose tokenizer, like Llama's, adds <s> and has no pad token."""
    from transformers import LlamaConfig, LlamaForCausalLM

    fast, vocab = _generator_tokenizer(["<s>", "</s>", "<unk>"], "<s> $A", bos_token="<s>", eos_token="</s>")
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=0, eos_token_id=1, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory) -> Path:
    return build_tiny_t5_dir(tmp_path_factory.mktemp("tiny-t5") / "model")


@pytest.fixture(scope="session")
def tiny_decoder(tmp_path_factory) -> Path:
    return build_tiny_decoder_dir(tmp_path_factory.mktemp("tiny-decoder") / "model")


def make_seq2seq_rows(n: int, seed: int = 0) -> list[dict]:
    """A few filler words around one name; the target is the name ("the river mary smith said" ->
    "mary smith"): a tiny model learns to copy it out in seconds."""
    rng = random.Random(seed)
    names = sorted({name for v in TYPES.values() for name in v})
    fillers = [w for w in WORDS if w not in {x for name in names for x in name.split()}]
    rows = []
    for _ in range(n):
        words = rng.sample(fillers, rng.randint(2, 6))
        name = rng.choice(names)
        words.insert(rng.randint(0, len(words)), name)
        rows.append({"source": " ".join(words), "target": name})
    return rows


CHAT_WORDS = ("hello hi how are you good fine thanks bye see later what is your name i am bot user weather sunny "
              "rain today nice day the a yes no ok").split()


def build_tiny_llama_dir(folder: Path, *, template: str | None = None) -> Path:
    """A 2-layer Llama-style causal LM with random weights, a word-level tokenizer over CHAT_WORDS and
    ChatML's special tokens, and (unless ``template`` is "none") a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(specials + ["system", "user", "assistant", "\n"]
                                                          + CHAT_WORDS + list(string.ascii_lowercase)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # the ChatML marks are special tokens, matched first
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                   eos_token="<|im_end|>", additional_special_tokens=["<|im_start|>"])
    if template != "none":
        from runassist.tasks.chat import CHATML

        fast.chat_template = template or CHATML
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=vocab["<pad>"], bos_token_id=vocab["<s>"], eos_token_id=vocab["<|im_end|>"])
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return build_tiny_llama_dir(tmp_path_factory.mktemp("tiny-llama") / "model")


def make_chat_rows(n: int, seed: int = 0) -> list[dict]:
    """Conversations a tiny model learns: the assistant always answers a greeting the same way."""
    rng = random.Random(seed)
    replies = {"hello": "hi how are you", "bye": "see you later", "what is your name": "i am bot",
               "how is the weather": "sunny today"}
    rows = []
    for _ in range(n):
        turns = rng.sample(sorted(replies), rng.randint(1, 2))
        messages = []
        for user in turns:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": replies[user]}]
        rows.append({"messages": messages})
    return rows


def train_tiny_ner(tiny_model: Path, base: Path, sizes: tuple[int, int, int] = (48, 16, 16), *, steps: int = 30,
                   name: str | None = None, **train) -> Path:
    """A tiny NER run on the name-list sentences (train, dev, test of ``sizes``), trained ``steps`` steps
    at lr 1e-2 with one evaluation at the end: the champion the lifecycle tests start from."""
    from runassist.tasks import load_config
    from runassist.train.run import train as train_run

    files = {split: write_conll(base / f"{split}.conll", make_ner_sentences(n, seed))
             for (split, seed), n in zip((("train", 0), ("dev", 1), ("test", 2)), sizes)}
    overrides = ner_overrides(files, tiny_model, base / "runs", max_steps=steps, lr="1e-2", early_stopping="null",
                              eval_every=steps, **train) + ([f"output.name={name}"] if name else [])
    return train_run(load_config(None, overrides), progress=False).run
