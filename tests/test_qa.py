"""Extractive QA: the reference scoring rules, the readers, windows that never lose an answer,
decoding to character offsets, and the no-answer threshold (tiny tokenizer; logits made by hand)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from runassist.config import DataConfig, ModelConfig
from runassist.data.qa import scan_qa_jsonl, scan_squad_json
from runassist.data.records import QAExample
from runassist.errors import DataError
from runassist.metrics import squad
from runassist.tasks.base import IGNORE_INDEX, TaskState
from runassist.tasks.qa import QASection, QATask

STATE = TaskState(labels=None)


def _task(max_length=24, stride=6, **section) -> QATask:
    return QATask(QASection(**section), DataConfig(), ModelConfig(max_length=max_length, stride=stride))


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


# -- scoring ---------------------------------------------------------------------------------

def test_squad_rules_by_hand():
    # articles, punctuation and case do not count
    assert squad.exact("The Eiffel Tower", "eiffel tower!") == 1.0
    assert squad.exact("an apple", "apple") == 1.0
    # F1 over the bag of words: gold {new, york, city}, predicted {new, york}: P 1, R 2/3
    assert squad.f1("New York City", "new york") == pytest.approx(0.8)
    # the best of several gold answers; no overlap is 0
    scores = squad.score_answers([["Denver Broncos", "Broncos"], ["1990"]], ["the Broncos", "in 1991"])
    assert scores == {"exact": 0.5, "f1": 0.5, "total": 2}
    # v2: a question without an answer scores 1 only for an empty prediction, and gets its own columns
    v2 = squad.score_answers([[], [], ["Paris"]], ["", "London", "paris"])
    assert v2["exact"] == pytest.approx(2 / 3) and v2["NoAns_exact"] == 0.5 and v2["NoAns_total"] == 2
    assert v2["HasAns_f1"] == 1.0 and v2["HasAns_total"] == 1
    # a gold answer that is empty once normalised ("the") counts as no answer
    assert squad.gold_answers(["the", ""]) == [""]


def test_cmrc_character_f1_by_hand():
    # characters, punctuation removed; F1 over the longest common substring: gold 北京大学 (4), pred 北京 (2)
    assert squad.char_f1("北京大学", "北京。") == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert squad.char_exact("北京大学！", "北京大学") == 1.0
    # Latin runs stay words: gold [2008, 年], pred [2008]
    assert squad.mixed_segmentation("2008年") == ["2008", "年"]
    assert squad.char_f1("2008年", "2008") == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    # a substring, not a bag: 京北 shares both characters with 北京 but no run longer than 1
    assert squad.char_f1("北京", "京北") == pytest.approx(0.5)
    scores = squad.score_answers([["北京大学"]], ["北京"], unit="char")
    assert scores["f1"] == pytest.approx(2 / 3) and scores["exact"] == 0.0


def test_null_threshold_maximises_f1():
    # diffs (null - best span), whether the question has an answer, F1 of its best span
    diffs, has, f1s = [-3.0, 1.0, -0.5, 2.0], [True, False, True, False], [1.0, 0.0, 1.0, 0.0]
    t = squad.best_null_threshold(diffs, has, f1s)
    # answering when diff <= t: t = -0.5 answers questions 0 and 2 and leaves 1 and 3 empty: all four right
    assert t == -0.5
    answered = [d <= t for d in diffs]
    assert sum((f if a else float(not h)) for a, h, f in zip(answered, has, f1s)) == 4
    # a question without an answer whose span would be right anyway costs nothing to answer
    assert squad.best_null_threshold([1.0], [False], [0.0]) < 1.0  # below its diff: left empty


# -- readers -----------------------------------------------------------------------------------

def test_squad_layout_and_repaired_offsets(tmp_path):
    context = "Super Bowl 50 was played in Santa Clara, California."
    doc = {"version": "v2.0", "data": [{"title": "x", "paragraphs": [{"context": context, "qas": [
        {"id": "q1", "question": "Where?", "answers": [{"text": "Santa Clara", "answer_start": 28},
                                                       {"text": "Santa Clara, California", "answer_start": 28}]},
        {"id": "q2", "question": "Which Bowl?", "answers": [{"text": "Super Bowl 50", "answer_start": 1}]},
        {"id": "q3", "question": "Who won?", "answers": [{"text": "Denver", "answer_start": 3}]},
        {"id": "q4", "question": "Why?", "answers": [], "is_impossible": True}]}]}]}
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(doc, indent=1))
    split = scan_squad_json(path)
    assert [ex.id for ex in split.examples] == ["q1", "q2", "q4"]
    assert split.examples[0].answers == (("Santa Clara", 28), ("Santa Clara, California", 28))
    assert split.examples[1].answers == (("Super Bowl 50", 0),)  # off by one: read where the text is
    assert split.examples[2].answers == ()
    messages = [str(p) for p in split.problems]
    line = path.read_text().splitlines().index('       "id": "q2",') + 1
    assert f"{path}:{line}: question q2: answer 'Super Bowl 50' is at 0, not at answer_start 1; read as 0" in messages
    assert any("question q3: answer 'Denver' is not in the context" in m for m in messages)
    assert any("question q3: no answer is left; question dropped" in m for m in messages)


def test_jsonl_layout_and_errors(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [{"id": "a", "question": "Who?", "context": "John went home.",
             "answers": {"text": ["John"], "answer_start": [0]}},
            {"id": "b", "question": "Where?", "context": "Nowhere.", "answers": {"text": [], "answer_start": []}}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    split = scan_qa_jsonl(path)
    assert [ex.answers for ex in split.examples] == [(("John", 0),), ()] and not split.problems
    path.write_text(json.dumps({"question": "Who?", "context": "x", "answers": ["John"]}) + "\n")
    with pytest.raises(DataError, match=r"train\.jsonl:1: 'answers' must be"):
        scan_qa_jsonl(path)


# -- windows and decoding ----------------------------------------------------------------------

def _context(n: int, answer_at: int, answer: str = "mary smith") -> tuple[str, int]:
    words = ["the"] * n
    words[answer_at:answer_at + len(answer.split())] = answer.split()
    context = " ".join(words)
    return context, context.index(answer)


def _logits_at(features, positions: dict[int, tuple[int, int]], null_at_cls: float = 0.0):
    """Start/end logits peaking at given (start, end) positions per feature index; the [CLS] pair at null_at_cls."""
    out = []
    for k, f in enumerate(features):
        x = np.full((2, f.size), -5.0)
        x[0, 0] = x[1, 0] = null_at_cls / 2
        if k in positions:
            s, e = positions[k]
            x[0, s], x[1, e] = 5.0, 5.0
        out.append(x)
    return out


def test_answer_only_in_the_second_window_is_found_with_character_offsets(tokenizer):
    task = _task(max_length=24, stride=4)
    context, start = _context(40, 25)
    ex = QAExample("who?", context, (("mary smith", start),))
    features = task.encode([ex], tokenizer, STATE)
    assert len(features) >= 2
    targets = [f.target for f in features]
    holding = [k for k, t in enumerate(targets) if t[0] > 0]
    assert holding and holding[0] >= 1 and targets[0] == (0, 0)  # not in the first window: "no answer" there
    k = holding[0]
    predictions = task.decode([ex], features, _logits_at(features, {k: targets[k]}), STATE)
    (pred,) = predictions
    assert pred.answer == "mary smith" and context[pred.start:pred.end] == "mary smith"
    assert task.to_json(ex, pred)["start"] == start


def test_an_answer_across_a_window_edge_is_whole_in_another_window(tokenizer):
    task = _task(max_length=20, stride=6)
    question_len = len(tokenizer("who?", add_special_tokens=False)["input_ids"])
    room = 20 - 3 - question_len
    # place the two-word answer so it straddles the end of the first window
    context, start = _context(40, room - 1)
    ex = QAExample("who?", context, (("mary smith", start),))
    features = task.encode([ex], tokenizer, STATE)
    targets = [f.target for f in features]
    assert targets[0] == (IGNORE_INDEX, IGNORE_INDEX)  # cut by the edge: left out of the loss
    whole = [k for k, t in enumerate(targets) if t[0] > 0]
    assert whole, targets  # the overlap holds it whole
    k = whole[0]
    (pred,) = task.decode([ex], features, _logits_at(features, {k: targets[k]}), STATE)
    assert (pred.answer, pred.start, pred.end) == ("mary smith", start, start + len("mary smith"))
    assert task.feature_stats(features)["windows_cutting_the_answer"] == 1


def test_no_answer_questions_return_null_and_the_threshold_is_fitted(tokenizer):
    task = _task(max_length=32, stride=8, no_answer=True)
    answerable = QAExample("who?", "mary smith went to paris", (("mary smith", 0),))
    unanswerable = QAExample("which company?", "mary smith went to paris", ())
    features = task.encode([answerable, unanswerable], tokenizer, STATE)
    assert [f.target for f in features][1] == (0, 0)
    # where "mary smith" sits in the second question's window (its question is longer)
    (probe,) = task.encode([QAExample(unanswerable.question, unanswerable.context, (("mary smith", 0),))],
                           tokenizer, STATE)
    # both questions: the span scoring 10, null scoring 4 for the first and 12 for the second
    outputs = _logits_at(features, {0: features[0].target, 1: probe.target}, null_at_cls=4.0)
    outputs[1][0, 0] = outputs[1][1, 0] = 6.0
    first, second = task.decode([answerable, unanswerable], features, outputs, STATE)
    assert first.answer == "mary smith" and second.answer is None and second.start is None
    assert task.to_json(unanswerable, second)["answer"] is None
    assert second.null_margin == pytest.approx(2.0) and first.null_margin == pytest.approx(-6.0)
    fitted = task.fit([answerable, unanswerable], features, outputs, STATE)
    assert -6.0 <= fitted["null_threshold"] < 2.0
    assert task.score([answerable, unanswerable], [first, second], STATE)["exact"] == 1.0
    # a run without no_answer refuses unanswerable training data instead of learning "no answer" silently
    with pytest.raises(DataError, match="set task.no_answer: true"):
        _task().encode([unanswerable], tokenizer, STATE)


def test_the_wnut16_questions_are_split_by_tweet():
    from runassist.assets import read_alias

    tweets = {split: {ex.id.split("-")[1] for ex in read_alias(f"wnut16-qa:{split}")} for split in ("train", "test")}
    assert tweets["train"] and tweets["test"] and not tweets["train"] & tweets["test"]
    for ex in read_alias("wnut16-qa:dev")[:50]:
        for text, start in ex.answers:
            assert ex.context[start:start + len(text)] == text


def test_the_kept_model_is_scored_with_its_own_null_threshold(tiny_model, tmp_path):
    """The threshold is refitted at every dev evaluation; the model kept is the best one, so the test
    score (and task.json) must use the threshold fitted for it, not the last evaluation's."""
    from conftest import make_qa_rows, write_jsonl
    from runassist.evaluate import evaluate
    from runassist.predict import Predictor
    from runassist.tasks import load_config
    from runassist.train.run import train

    files = {s: write_jsonl(tmp_path, make_qa_rows(n, seed), f"{s}.jsonl")
             for s, n, seed in (("train", 64, 0), ("dev", 24, 1), ("test", 24, 2))}
    # min_delta 2.0 cannot be beaten: the first evaluation stays the best, the later ones refit
    cfg = load_config(None, ["task=qa", "task.no_answer=true", f"model.source={tiny_model}", "model.max_length=32",
                             f"output.dir={tmp_path / 'runs'}", "train.batch_size=8", "train.threads=1",
                             "train.precision=fp32", "train.lr=3e-3", "train.epochs=4", "train.eval_every=4",
                             "train.early_stopping={patience: 3, min_delta: 2.0}",
                             *(f"data.{k}={v}" for k, v in files.items())])
    result = train(cfg, progress=False)
    assert result.summary["best"]["step"] == 4 and result.summary["steps"] > 4
    saved = json.loads((result.run / "model" / "task.json").read_text())["extras"]
    assert result.summary["extras"] == saved
    again = evaluate(result.run, predictor=Predictor.from_run(result.run))["scores"]
    assert again["f1"] == pytest.approx(result.summary["test"]["f1"])


def test_cmrc_and_squad_details_found_in_review():
    # "……" is one entry of CMRC's punctuation list: a lone "…" is kept, as the reference keeps it
    assert squad.char_f1("北京…", "北京") == pytest.approx(0.8) and squad.char_exact("北京…", "北京") == 0.0
    # numbers stay whole, as NLTK keeps them: gold [1.5, 亿], pred [1.5]
    assert squad.mixed_segmentation("1.5亿") == ["1.5", "亿"] and squad.mixed_segmentation("1,000元")[0] == "1,000"
    assert squad.char_f1("1.5亿", "1.5") == pytest.approx(2 / 3)
    # has-answer is read from the answers as given: "the" is an answer (it normalises to nothing)
    scores = squad.score_answers([["the"], []], ["", ""])
    assert scores["HasAns_total"] == 1 and scores["NoAns_total"] == 1


def test_a_long_question_is_cut_to_leave_room_for_the_context(tokenizer):
    task = _task(max_length=24, stride=4)
    question = " ".join(["who"] * 60)
    (feature, *_) = task.encode([QAExample(question, "mary smith went to paris", (("mary smith", 0),))],
                                tokenizer, STATE)
    assert feature.size <= 24 and feature.target[0] > 0  # the answer is still in a window
