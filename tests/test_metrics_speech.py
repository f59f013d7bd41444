"""WER and CER: jiwer's numbers on hand-made pairs, after the documented normalisation."""

from __future__ import annotations

import jiwer
import numpy as np
import pytest

from runassist.metrics.speech import item_counts, normalize, score_transcripts, utterance_rates

PAIRS = [("the cat sat on the mat", "the cat sat on mat"),        # a deletion
         ("seven of hearts", "seven of harts"),                   # a substitution
         ("go left now", "go left right now"),                    # an insertion
         ("four queen of clubs", "for queen clubs please")]      # all three


def test_wer_and_cer_equal_jiwers_on_already_normal_text():
    refs, hyps = [r for r, _ in PAIRS], [h for _, h in PAIRS]
    scores = score_transcripts(refs, hyps)
    assert scores["wer"] == pytest.approx(jiwer.wer(refs, hyps))
    assert scores["cer"] == pytest.approx(jiwer.cer(refs, hyps))
    assert scores["wer"] == pytest.approx(6 / 16)  # 1 + 1 + 1 + 3 errors over 6 + 3 + 3 + 4 reference words
    assert (scores["word_errors"], scores["reference_words"]) == (6, 16)
    assert scores["exact"] == 0.0 and scores["utterances"] == 4
    assert utterance_rates(refs, hyps) == pytest.approx([jiwer.wer(r, h) for r, h in PAIRS])


def test_case_and_punctuation_do_not_count_as_errors():
    refs = ["Seven of Hearts.", "Well-known, isn't it?"]
    hyps = ["seven of hearts", "well known isnt it"]
    scores = score_transcripts(refs, hyps)
    assert scores["wer"] == 0.0 and scores["cer"] == 0.0 and scores["exact"] == 1.0
    assert jiwer.wer(refs, hyps) > 0.5  # unnormalised, the same pair scores as mostly wrong
    assert normalize("  Don’t   STOP—now!! ") == "dont stop now"
    # The rates are jiwer's on the normalised text.
    raw_refs, raw_hyps = ["Hello, World!", "GO   left."], ["hello word", "go right"]
    norm = score_transcripts(raw_refs, raw_hyps)
    assert norm["wer"] == pytest.approx(jiwer.wer([normalize(r) for r in raw_refs], [normalize(h) for h in raw_hyps]))
    assert norm["cer"] == pytest.approx(jiwer.cer([normalize(r) for r in raw_refs], [normalize(h) for h in raw_hyps]))


def test_an_empty_reference_counts_insertions_only():
    counts = item_counts(["", "a b"], ["x y", "a b"])
    np.testing.assert_array_equal(counts, [[2, 0], [0, 2]])
    assert score_transcripts(["...", "a b"], ["x y", "a b"])["wer"] == pytest.approx(1.0)  # 2 errors / 2 words
    assert score_transcripts(["..."], [""])["wer"] == 0.0


def test_asr_compare_bootstraps_wer_over_utterances():
    from runassist.data.audio import AudioExample
    from runassist.tasks import load_config, make_task
    from runassist.tasks.asr import Transcript

    task = make_task(load_config(None, ["task=asr"]))
    refs = ["seven of hearts", "ten of clubs", "five five", "queen of spades", "two of diamonds", "ace of clubs"]
    examples = [AudioExample(path=f"{i}.wav", text=r) for i, r in enumerate(refs)]
    worse = [Transcript(r.replace("of", "off")) for r in refs[:5]] + [Transcript("", skipped=True)]
    better = [Transcript(r) for r in refs]
    notes: list[str] = []
    out = task.compare(examples, worse, better, labels=None, n=200, seed=0, notes=notes)
    wer = out["overall"]["wer"]
    assert out["headline"] == "wer" and wer["a"] == pytest.approx(4 / 14) and wer["b"] == 0.0
    assert out["scores"]["a"]["skipped"] == 1 and "1 utterances one run skipped" in notes[0]
