"""Relation extraction: three readers, the TACRED and SemEval scoring rules, markers that survive
any length, and NER -> relations chained over raw text (tiny models built here)."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from conftest import make_ner_sentences, make_relation_rows, write_conll, write_jsonl
from runassist.config import DataConfig, ModelConfig
from runassist.data.records import RelationExample
from runassist.data.relations import scan_relations
from runassist.errors import DataError
from runassist.metrics.relations import score_relations, semeval_macro_f1
from runassist.tasks.base import TaskState
from runassist.tasks.relations import RelationsSection, RelationsTask


def _mentions(ex: RelationExample) -> tuple[str, str]:
    return ex.text[ex.head[0]:ex.head[1]], ex.text[ex.tail[0]:ex.tail[1]]


def test_three_layouts_give_spans_of_their_own_text(tmp_path):
    jsonl = write_jsonl(tmp_path, [{"text": "Bill Gates founded Microsoft.", "head": {"start": 0, "end": 10, "type": "PER"},
                                    "tail": {"start": 19, "end": 28, "type": "ORG"}, "relation": "founded"}])
    (ex,) = scan_relations(jsonl).examples
    assert _mentions(ex) == ("Bill Gates", "Microsoft") and ex.head[2] == "PER" and ex.relation == "founded"

    tacred = tmp_path / "train.json"
    tacred.write_text(json.dumps([{"id": "x1", "token": ["Tom", "Thabane", "resigned", "from", "the", "ABC", "."],
                                   "subj_start": 0, "subj_end": 1, "obj_start": 5, "obj_end": 5, "subj_type": "PERSON",
                                   "obj_type": "ORGANIZATION", "relation": "per:employee_of"}]))
    (ex,) = scan_relations(tacred).examples
    assert _mentions(ex) == ("Tom Thabane", "ABC") and (ex.head[2], ex.tail[2]) == ("PERSON", "ORGANIZATION")

    semeval = tmp_path / "TRAIN_FILE.txt"
    semeval.write_text('1\t"The system as described above has its greatest application in an arrayed '
                       '<e1>configuration</e1> of antenna <e2>elements</e2>."\nComponent-Whole(e2,e1)\nComment: Not a '
                       'collection.\n\n2\t"The <e1>child</e1> was carefully wrapped into the <e2>cradle</e2>."\n'
                       'Other\nComment:\n\n')
    first, second = scan_relations(semeval).examples
    assert _mentions(first) == ("configuration", "elements") and first.relation == "Component-Whole(e2,e1)"
    assert "<e1>" not in first.text and second.relation == "Other" and second.source.endswith(":5")
    semeval.write_text('1\t"No markers here."\nOther\n')
    with pytest.raises(DataError, match=r"TRAIN_FILE\.txt:1: expected one <e1>"):
        scan_relations(semeval)


def test_tacred_micro_f1_leaves_out_no_relation():
    gold = ["no_relation", "per:title", "per:title", "org:founded", "no_relation"]
    pred = ["per:title", "per:title", "no_relation", "org:founded", "no_relation"]
    scores = score_relations(gold, pred, ["no_relation", "per:title", "org:founded"])
    # 2 correct of 3 guessed (P 2/3), of 3 to find (R 2/3); the two right no_relations count for nothing
    assert scores["counts"] == {"correct": 2, "predicted": 3, "gold": 3}
    assert scores["precision"] == pytest.approx(2 / 3) and scores["f1"] == pytest.approx(2 / 3)
    assert scores["accuracy"] == pytest.approx(3 / 5) and "no_relation" not in scores["per_class"]
    assert score_relations(gold, ["no_relation"] * 5, ["no_relation", "per:title", "org:founded"])["f1"] == 0.0


def test_semeval_macro_f1_counts_direction():
    gold = ["Cause-Effect(e1,e2)", "Cause-Effect(e2,e1)", "Message-Topic(e1,e2)", "Other"]
    pred = ["Cause-Effect(e1,e2)", "Cause-Effect(e1,e2)", "Other", "Message-Topic(e1,e2)"]
    # Cause-Effect: 1 correct (the wrong direction is wrong) of 2 predicted, of 2 gold: F1 0.5;
    # Message-Topic: 0 correct: F1 0; Other is not averaged
    assert semeval_macro_f1(gold, pred) == pytest.approx(0.25)


def test_a_pair_far_apart_in_a_long_text_keeps_both_markers(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    task = RelationsTask(RelationsSection(), DataConfig(), ModelConfig(max_length=32, stride=8))
    words = ["the"] * 120
    words[3], words[110] = "john", "google"
    text = " ".join(words)
    head = (text.index("john"), text.index("john") + 4, "PER")
    tail = (text.index("google"), text.index("google") + 6, "ORG")
    near = (4 * 105, 4 * 105 + 3, None)  # the word "the" five words before "google"
    examples = [RelationExample(text, head, tail, "works_for"), RelationExample(text, tail, head, "no_relation"),
                RelationExample(text, near, tail, "no_relation")]
    features = task.encode(examples, tokenizer, TaskState(labels=["no_relation", "works_for"]))
    for feature, ex in zip(features, examples):
        tokens = tokenizer.convert_ids_to_tokens(feature.inputs["input_ids"])
        assert len(tokens) <= 32
        assert tokens[feature.meta["head"]] == "@" and tokens[feature.meta["tail"]] == "#"
        assert tokens.count("@") == 2 and tokens.count("#") == 2  # opening and closing markers, both kept
        head_words = ex.text[ex.head[0]:ex.head[1]]
        assert head_words in tokenizer.convert_tokens_to_string(tokens)
    assert [f.meta["cut"] for f in features] == [True, True, False]  # the close pair fits one window
    assert task.feature_stats(features)["examples_cut"] == 2
    marked = tokenizer.decode(features[0].inputs["input_ids"], skip_special_tokens=True)
    assert "@ * per * john @" in marked and "# ^ org ^ google #" in marked  # typed markers, lower-cased


@pytest.fixture(scope="module")
def chained_runs(tiny_model, tmp_path_factory):
    from runassist.tasks import load_config
    from runassist.train.run import train

    base = tmp_path_factory.mktemp("chain")
    ner = {s: write_conll(base / f"{s}.conll", make_ner_sentences(n, seed))
           for s, n, seed in (("train", 64, 0), ("dev", 16, 1), ("test", 16, 2))}
    rel = {s: write_jsonl(base, make_relation_rows(n, seed), f"{s}.jsonl")
           for s, n, seed in (("train", 60, 0), ("dev", 16, 1), ("test", 16, 2))}
    common = [f"model.source={tiny_model}", "model.max_length=32", "model.stride=8", f"output.dir={base / 'runs'}",
              "train.batch_size=8", "train.threads=1", "train.precision=fp32", "train.warmup_ratio=0"]
    ner_run = train(load_config(None, ["task=ner", *common, *(f"data.{k}={v}" for k, v in ner.items()),
                                       "train.lr=3e-3", "train.epochs=8", "output.name=ner"]), progress=False)
    rel_run = train(load_config(None, ["task=relations", *common, *(f"data.{k}={v}" for k, v in rel.items()),
                                       "train.lr=3e-3", "train.epochs=8", "output.name=rel"]), progress=False)
    return ner_run, rel_run


def test_relations_learn_and_chain_after_ner_with_exact_spans(chained_runs, tmp_path):
    from runassist.predict import Predictor, predict_chain

    ner_run, rel_run = chained_runs
    assert rel_run.summary["test"]["f1"] >= 0.9, rel_run.summary["test"]
    texts = ["the story said mary smith works for google", "john lives in paris and was new",
             "john visited london with apple"]
    results = predict_chain(Predictor.from_run(ner_run.run), Predictor.from_run(rel_run.run), texts)
    assert [r["text"] for r in results] == texts
    for text, result in zip(texts, results):
        for r in result["relations"]:
            for side in ("head", "tail"):
                assert text[r[side]["start"]:r[side]["end"]] == r[side]["text"]
    found = {(r["head"]["text"], r["relation"], r["tail"]["text"]) for res in results for r in res["relations"]}
    assert ("mary smith", "works_for", "google") in found and ("john", "lives_in", "paris") in found
    assert not any(h == "john" and t in ("london", "apple") for h, _, t in found)  # "visited ... with": none


def test_chained_prediction_through_the_cli(chained_runs, tmp_path):
    import os
    import subprocess
    import sys

    ner_run, rel_run = chained_runs
    source = tmp_path / "texts.txt"
    source.write_text("mary smith works for google\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "runassist.cli", "predict", f"{ner_run.run},{rel_run.run}",
                           str(source)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert {e["text"] for e in row["entities"]} == {"mary smith", "google"}
    assert [(r["head"]["text"], r["relation"], r["tail"]["text"]) for r in row["relations"]] == \
        [("mary smith", "works_for", "google")]


def test_types_the_model_never_saw_are_left_out_of_the_markers(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    task = RelationsTask(RelationsSection(), DataConfig(), ModelConfig(max_length=32))
    train = [RelationExample("john works for google", (0, 4, "PER"), (15, 21, "ORG"), "works_for")]
    state = TaskState(labels=["works_for"], extras=task.initial_extras(train))
    assert state.extras == {"mention_types": ["ORG", "PER"]}
    (feature,) = task.encode([RelationExample("john works for google", (0, 4, "PER"), (15, 21, "MISC"))],
                             tokenizer, state)
    marked = tokenizer.decode(feature.inputs["input_ids"], skip_special_tokens=True)
    assert "@ * per * john @" in marked and "# google #" in marked  # MISC: untyped, as never seen
    untyped = TaskState(labels=["works_for"], extras={"mention_types": []})  # e.g. trained on SemEval
    (feature,) = task.encode([RelationExample("john works for google", (0, 4, "PER"), (15, 21, "ORG"))],
                             tokenizer, untyped)
    assert tokenizer.decode(feature.inputs["input_ids"], skip_special_tokens=True).startswith("@ john @")


def test_lora_is_refused_with_a_reason_for_the_relation_head(tiny_model, tmp_path):
    from runassist.errors import ConfigError
    from runassist.tasks import load_config
    from runassist.train.run import train

    data = write_jsonl(tmp_path, make_relation_rows(4, 0), "train.jsonl")
    cfg = load_config(None, ["task=relations", f"model.source={tiny_model}", f"data.train={data}",
                             f"output.dir={tmp_path / 'runs'}", "train.lora={r: 4}", "train.threads=1"])
    with pytest.raises(ConfigError, match="train.lora: a relations model has no LoRA task type"):
        train(cfg, progress=False)
