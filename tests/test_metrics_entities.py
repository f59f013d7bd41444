"""Entity-level NER scoring: hand-worked numbers in both modes, and agreement with seqeval."""

from __future__ import annotations

import random
import warnings

import pytest
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import IOB2, IOBES, Tokens

from runassist.metrics.entities import (EntityTally, error_breakdown, extract_entities, format_table,
                                        score_entities, sentence_counts, sentence_errors,
                                        worst_sentences)

# ---------------------------------------------------------------- hand-worked examples


def test_span_starting_with_i_counts_in_conlleval_not_in_strict():
    gold, pred = [["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]]
    assert extract_entities(pred[0], mode="conlleval") == [("PER", 0, 2)]
    assert extract_entities(pred[0], mode="strict") == []

    lenient = score_entities(gold, pred, mode="conlleval")
    assert (lenient["precision"], lenient["recall"], lenient["f1"]) == (1.0, 1.0, 1.0)
    assert lenient["counts"] == {"gold": 1, "predicted": 1, "correct": 1, "words": 3}
    assert lenient["accuracy"] == pytest.approx(2 / 3)

    strict = score_entities(gold, pred, mode="strict")
    assert (strict["precision"], strict["recall"], strict["f1"]) == (0.0, 0.0, 0.0)
    assert strict["counts"] == {"gold": 1, "predicted": 0, "correct": 0, "words": 3}
    assert strict["errors"]["missed"] == 1 and strict["errors"]["total"] == 1


def test_type_switching_inside_a_span():
    gold, pred = [["B-PER", "I-PER", "O"]], [["B-PER", "I-LOC", "O"]]
    # conlleval: a new type starts a new chunk; strict: the I-LOC continues nothing.
    assert extract_entities(pred[0], mode="conlleval") == [("PER", 0, 1), ("LOC", 1, 2)]
    assert extract_entities(pred[0], mode="strict") == [("PER", 0, 1)]

    lenient = score_entities(gold, pred, mode="conlleval")
    assert lenient["counts"] == {"gold": 1, "predicted": 2, "correct": 0, "words": 3}
    assert lenient["f1"] == 0.0
    assert lenient["errors"] == {"type": 0, "boundary": 1, "boundary_and_type": 1,
                                 "missed": 0, "spurious": 0, "total": 2}
    strict = score_entities(gold, pred, mode="strict")
    assert strict["counts"]["predicted"] == 1
    assert strict["errors"]["boundary"] == 1 and strict["errors"]["total"] == 1


def test_partial_credit_exact_numbers():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "I-PER"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-PER", "I-PER"]]
    for mode in ("conlleval", "strict"):
        s = score_entities(gold, pred, mode=mode)
        assert s["precision"] == 1.0
        assert s["recall"] == pytest.approx(2 / 3)
        assert s["f1"] == pytest.approx(0.8)
        assert s["per_type"]["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0,
                                        "support": 2, "predicted": 2, "correct": 2}
        assert s["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                        "support": 1, "predicted": 0, "correct": 0}
        assert s["macro_f1"] == pytest.approx(0.5)
        assert s["accuracy"] == pytest.approx(5 / 6)


# One sentence per error kind (s0 also has one correct entity).
GOLD = [
    ["B-PER", "I-PER", "O", "B-LOC"],        # PER(0,2) LOC(3,4)
    ["O", "B-ORG", "I-ORG", "I-ORG", "O"],   # ORG(1,4)
    ["B-MISC", "O", "O"],                    # MISC(0,1)
    ["B-PER", "I-PER", "I-PER"],             # PER(0,3)
]
PRED = [
    ["B-PER", "I-PER", "O", "B-ORG"],        # PER(0,2) correct; ORG(3,4): type
    ["O", "B-ORG", "I-ORG", "O", "O"],       # ORG(1,3): boundary
    ["O", "O", "B-LOC"],                     # LOC(2,3): spurious; MISC missed
    ["O", "B-LOC", "I-LOC"],                 # LOC(1,3): boundary_and_type
]


@pytest.mark.parametrize("mode", ["conlleval", "strict"])
def test_corpus_scores_and_error_kinds(mode):
    s = score_entities(GOLD, PRED, mode=mode)
    assert s["counts"] == {"gold": 5, "predicted": 5, "correct": 1, "words": 15}
    assert s["precision"] == pytest.approx(0.2)
    assert s["recall"] == pytest.approx(0.2)
    assert s["f1"] == pytest.approx(0.2)
    assert s["accuracy"] == pytest.approx(8 / 15)
    assert list(s["per_type"]) == ["LOC", "MISC", "ORG", "PER"]
    per = s["per_type"]
    assert per["PER"]["precision"] == 1.0 and per["PER"]["recall"] == 0.5
    assert per["PER"]["f1"] == pytest.approx(2 / 3)
    assert (per["ORG"]["support"], per["ORG"]["predicted"], per["ORG"]["correct"]) == (1, 2, 0)
    assert (per["LOC"]["support"], per["LOC"]["predicted"]) == (1, 2)
    assert per["MISC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1,
                           "predicted": 0, "correct": 0}
    assert s["macro_f1"] == pytest.approx((2 / 3) / 4)

    expected = {"type": 1, "boundary": 1, "boundary_and_type": 1, "missed": 1, "spurious": 1,
                "total": 5}
    assert s["errors"] == expected
    assert error_breakdown(GOLD, PRED, mode=mode) == expected


def test_sentence_errors_and_worst():
    rows = sentence_errors(GOLD, PRED)
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert rows[0] == {"index": 0, "gold": 2, "predicted": 2, "correct": 1, "type": 1,
                       "boundary": 0, "boundary_and_type": 0, "missed": 0, "spurious": 0,
                       "errors": 1}
    assert (rows[2]["missed"], rows[2]["spurious"], rows[2]["errors"]) == (1, 1, 2)
    worst = worst_sentences(GOLD, PRED, k=2)
    assert [r["index"] for r in worst] == [2, 0]
    assert worst_sentences(GOLD, GOLD) == []
    assert sentence_counts(GOLD, PRED).tolist() == [[1, 2, 2], [0, 1, 1], [0, 1, 1], [0, 1, 1]]


def test_one_prediction_over_two_gold_and_two_over_one():
    # One wide prediction covering two gold entities is one boundary error, nothing missed.
    e = error_breakdown([["B-PER", "B-PER"]], [["B-PER", "I-PER"]])
    assert e == {"type": 0, "boundary": 1, "boundary_and_type": 0, "missed": 0, "spurious": 0,
                 "total": 1}
    # Two short predictions inside one gold entity are two boundary errors.
    e = error_breakdown([["B-PER", "I-PER"]], [["B-PER", "B-PER"]])
    assert e["boundary"] == 2 and e["total"] == 2


def test_bioes_and_bilou():
    tags = ["S-PER", "B-LOC", "E-LOC", "O", "B-ORG", "I-ORG", "E-ORG", "I-ORG"]
    assert extract_entities(tags, mode="conlleval") == [
        ("PER", 0, 1), ("LOC", 1, 3), ("ORG", 4, 7), ("ORG", 7, 8)]
    assert extract_entities(tags, mode="strict") == [("PER", 0, 1), ("LOC", 1, 3), ("ORG", 4, 7)]
    bilou = ["U-PER", "B-LOC", "L-LOC", "O"]
    assert extract_entities(bilou, mode="strict") == [("PER", 0, 1), ("LOC", 1, 3)]


def test_errors_are_actionable():
    with pytest.raises(ValueError, match="sentence 1"):
        score_entities([["O"], ["O", "O"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="2 gold sentences"):
        score_entities([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match="X-PER"):
        extract_entities(["X-PER"])
    with pytest.raises(ValueError, match="conlleval, strict"):
        score_entities([["O"]], [["O"]], mode="lenient")


def test_empty_and_entity_free():
    s = score_entities([[], ["O", "O"]], [[], ["O", "O"]])
    assert (s["precision"], s["recall"], s["f1"], s["macro_f1"]) == (0.0, 0.0, 0.0, 0.0)
    assert s["accuracy"] == 1.0 and s["per_type"] == {}


def test_format_table():
    text = format_table(score_entities(GOLD, PRED))
    lines = text.splitlines()
    assert lines[0] == "processed 15 words with 5 phrases; found: 5 phrases; correct: 1."
    assert "precision:  20.00%" in lines[1] and "FB1:  20.00" in lines[1]
    assert any(line.strip().startswith("PER: precision: 100.00%") for line in lines)
    assert "boundary_and_type: 1" in lines[-1]


# ---------------------------------------------------------------- agreement with seqeval

TAGS = ["B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]


def _random_sentence(rng: random.Random) -> list[str]:
    if rng.random() < 0.15:  # sentences with no entities
        return ["O"] * rng.randint(1, 8)
    return [rng.choice(TAGS) if rng.random() < 0.5 else "O" for _ in range(rng.randint(1, 12))]


def _perturb(rng: random.Random, tags: list[str]) -> list[str]:
    return [rng.choice(["O", *TAGS]) if rng.random() < 0.25 else t for t in tags]


def _corpora(n_corpora=10, size=40):
    rng = random.Random(13)
    for _ in range(n_corpora):
        gold = [_random_sentence(rng) for _ in range(size)]
        pred = [_perturb(rng, g) for g in gold]
        yield gold, pred


def _seqeval_scores(gold, pred, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns on types with no predictions
        return {
            "precision": precision_score(gold, pred, **kw),
            "recall": recall_score(gold, pred, **kw),
            "f1": f1_score(gold, pred, **kw),
            "macro_f1": f1_score(gold, pred, average="macro", **kw),
            "report": classification_report(gold, pred, output_dict=True, **kw),
        }


@pytest.mark.parametrize("mode, kw", [("conlleval", {}), ("strict", {"mode": "strict", "scheme": IOB2})])
def test_matches_seqeval_on_random_corpora(mode, kw):
    for gold, pred in _corpora():
        ours = score_entities(gold, pred, mode=mode)
        ref = _seqeval_scores(gold, pred, **kw)
        for key in ("precision", "recall", "f1", "macro_f1"):
            assert ours[key] == pytest.approx(float(ref[key]), abs=1e-9), key
        types = {k for k in ref["report"] if not k.endswith(" avg")}
        assert set(ours["per_type"]) == types
        for type_ in types:
            row, ref_row = ours["per_type"][type_], ref["report"][type_]
            assert row["precision"] == pytest.approx(ref_row["precision"], abs=1e-9)
            assert row["recall"] == pytest.approx(ref_row["recall"], abs=1e-9)
            assert row["f1"] == pytest.approx(ref_row["f1-score"], abs=1e-9)
            assert row["support"] == ref_row["support"]
        # The error kinds partition the wrong predictions.
        e, c = ours["errors"], ours["counts"]
        assert c["correct"] + e["type"] + e["boundary"] + e["boundary_and_type"] + e["spurious"] \
            == c["predicted"]


def test_entity_extraction_matches_seqeval_sentence_by_sentence():
    for gold, pred in _corpora(n_corpora=5):
        for tags in gold + pred:
            expected = [(t, s, e + 1) for t, s, e in get_entities(tags)]
            assert extract_entities(tags, mode="conlleval") == expected, tags
            strict = [(x.tag, x.start, x.end) for x in Tokens(tags, IOB2).entities]
            assert extract_entities(tags, mode="strict") == strict, tags


def _to_bioes(entities, length):
    tags = ["O"] * length
    for t, s, e in entities:
        if e - s == 1:
            tags[s] = f"S-{t}"
        else:
            tags[s], tags[e - 1] = f"B-{t}", f"E-{t}"
            for i in range(s + 1, e - 1):
                tags[i] = f"I-{t}"
    return tags


def test_well_formed_bioes_matches_seqeval_strict_iobes():
    for gold, _ in _corpora(n_corpora=3):
        for tags in gold:
            bioes = _to_bioes(extract_entities(tags, mode="strict"), len(tags))
            expected = [(x.tag, x.start, x.end) for x in Tokens(bioes, IOBES).entities]
            assert extract_entities(bioes, mode="strict") == expected
            assert extract_entities(bioes, mode="conlleval") == expected


@pytest.mark.parametrize("mode", ["conlleval", "strict"])
def test_a_tally_added_in_chunks_scores_the_whole_corpus(mode):
    """`evaluate` keeps entity counts, not sentences: chunks added to an EntityTally give exactly the
    scores of the whole corpus, and a length mismatch names the sentence by its place in the corpus."""
    rng = random.Random(7)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(200)]
    pred = [[t if rng.random() < 0.7 else rng.choice(tags) for t in g] for g in gold]
    tally = EntityTally(mode=mode)
    for start in range(0, len(gold), 17):
        tally.add(gold[start:start + 17], pred[start:start + 17])
    whole = score_entities(gold, pred, mode=mode)
    assert tally.scores() == whole
    assert 0.2 < whole["f1"] < 0.9 and whole["counts"]["words"] == sum(map(len, gold))
    with pytest.raises(ValueError, match="sentence 201: 2 gold tags but 1 predicted"):
        tally.add([["O"], ["O", "O"]], [["O"], ["O"]])
