"""Text-classification readers (CSV, TSV, JSONL, lines, folders) and load.py for classify."""

from __future__ import annotations

import json

import pytest

from conftest import write_jsonl as _jsonl
from conftest import write_text as _write
from runassist.config import DataConfig
from conftest import read_examples
from runassist.data.tabular import read_folder, read_lines, read_texts
from runassist.errors import ConfigError, DataError


def test_csv_with_quotes_and_multiline_records(tmp_path):
    path = _write(tmp_path, "a.csv", 'text,label\n"Good, really",pos\n"two\nlines",neg\n\nplain,pos\n')
    examples = read_texts(path)
    assert [(ex.text, ex.labels) for ex in examples] == [
        ("Good, really", ("pos",)), ("two\nlines", ("neg",)), ("plain", ("pos",))]
    # sources name the line each record starts on
    assert [ex.source for ex in examples] == [f"{path}:2", f"{path}:3", f"{path}:6"]


def test_missing_column_lists_the_existing_ones(tmp_path):
    path = _write(tmp_path, "a.csv", "sentence,category\nhello,x\n")
    with pytest.raises(DataError) as info:
        read_texts(path)
    assert str(info.value) == f"{path}:1: no column 'text'; columns here: sentence, category"
    with pytest.raises(DataError, match="no column 'label'; columns here: sentence, category"):
        read_texts(path, text_column="sentence")
    assert read_texts(path, text_column="sentence", label_column="category")[0].labels == ("x",)


def test_unlabelled_only_when_labels_are_not_required(tmp_path):
    path = _write(tmp_path, "a.csv", "text\nhello\n")
    assert read_texts(path, require_labels=False)[0].labels == ()


def test_empty_text_names_the_line(tmp_path):
    path = _write(tmp_path, "a.csv", "text,label\nfine,a\n  ,b\n")
    with pytest.raises(DataError, match=rf"^{path}:3: empty text in 'text'$"):
        read_texts(path)


def test_ragged_row_and_missing_single_label(tmp_path):
    path = _write(tmp_path, "a.csv", "text,label\nfine,a,extra\n")
    with pytest.raises(DataError, match=rf"^{path}:2: expected 2 fields like the header, found 3"):
        read_texts(path)
    path = _write(tmp_path, "b.csv", "text,label\nfine,\n")
    with pytest.raises(DataError, match=rf"^{path}:2: expected one label, found no label"):
        read_texts(path)


def test_tsv_keeps_quote_marks_and_reads_pairs(tmp_path):
    path = _write(tmp_path, "a.tsv", 'premise\thypothesis\tlabel\n"Quoted" start\tOK\tentail\n')
    (example,) = read_texts(path, text_column="premise", text_pair_column="hypothesis")
    assert (example.text, example.text_pair, example.labels) == ('"Quoted" start', "OK", ("entail",))


def test_multi_label_csv_needs_a_separator(tmp_path):
    path = _write(tmp_path, "a.csv", "text,label\nboth,sport|politics\nnone,\n")
    examples = read_texts(path, multi_label=True, label_separator="|")
    assert [ex.labels for ex in examples] == [("sport", "politics"), ()]
    with pytest.raises(ConfigError, match="data.label_separator is not set"):
        read_texts(path, multi_label=True)


def test_jsonl_labels_as_strings_lists_and_numbers(tmp_path):
    path = _jsonl(tmp_path, [
        {"text": "a", "label": ["x", "y", "x"]},
        {"text": "b", "label": "y"},
        {"text": "c", "label": []},
        {"text": "d", "label": 3},
    ])
    assert [ex.labels for ex in read_texts(path, multi_label=True)] == [("x", "y"), ("y",), (), ("3",)]
    with pytest.raises(DataError, match=rf"^{path}:1: expected one label, found 2 labels \(x, y\); .*multi_label"):
        read_texts(path)


def test_jsonl_missing_key_and_bad_json(tmp_path):
    path = _jsonl(tmp_path, [{"text": "a", "label": "x"}, {"sentence": "b", "label": "y"}])
    with pytest.raises(DataError, match=rf"^{path}:2: no key 'text'; keys here: sentence, label$"):
        read_texts(path)
    path = _write(tmp_path, "bad.jsonl", '{"text": "a", "label": "x"}\n\n{"text": \n')
    with pytest.raises(DataError, match=rf"^{path}:3: not valid JSON"):
        read_texts(path)


def test_json_array_records(tmp_path):
    path = _write(tmp_path, "a.json", json.dumps([{"text": "a", "label": "x"}, {"text": "", "label": "y"}]))
    with pytest.raises(DataError, match=r"record 1 \(from 0\): empty text"):
        read_texts(path)


def test_read_lines_skips_blank_lines(tmp_path):
    path = _write(tmp_path, "docs.txt", "first doc\n\n  \nsecond doc\n")
    examples = read_lines(path)
    assert [(ex.text, ex.labels, ex.source) for ex in examples] == [
        ("first doc", (), f"{path}:1"), ("second doc", (), f"{path}:4")]


def test_label_folders(tmp_path):
    for label, name, text in (("pos", "1.txt", "great"), ("neg", "2.txt", "bad"), ("neg", "1.txt", "awful")):
        (tmp_path / "reviews" / label).mkdir(parents=True, exist_ok=True)
        _write(tmp_path / "reviews" / label, name, text + "\n")
    examples = read_folder(tmp_path / "reviews")
    assert [(ex.text, ex.labels) for ex in examples] == [("awful", ("neg",)), ("bad", ("neg",)), ("great", ("pos",))]
    assert read_texts(tmp_path / "reviews") == examples


# --------------------------------------------------------------------------- load.py, classify side


def test_read_examples_by_extension_and_columns(tmp_path):
    data = DataConfig(text_column="review", label_column="stars")
    csv_path = _write(tmp_path, "a.csv", "review,stars\nnice,5\n")
    tsv_path = _write(tmp_path, "a.tsv", "review\tstars\nnice\t5\n")
    jsonl_path = _jsonl(tmp_path, [{"review": "nice", "stars": 5}])
    for path in (csv_path, tsv_path, jsonl_path):
        (example,) = read_examples(str(path), task="classify", data=data)
        assert (example.text, example.labels) == ("nice", ("5",))
    # an explicit format wins over the extension
    odd = _write(tmp_path, "a.data", "review\tstars\nnice\t5\n")
    assert read_examples(str(odd), task="classify", data=DataConfig(format="tsv", text_column="review",
                                                                     label_column="stars"))[0].labels == ("5",)
    with pytest.raises(DataError, match="cannot tell the format from '.data'; set data.format"):
        read_examples(str(odd), task="classify", data=data)


def test_read_examples_classify_errors(tmp_path):
    with pytest.raises(DataError, match=r"^missing\.csv: file not found$"):
        read_examples("missing.csv", task="classify", data=DataConfig())
    header_only = _write(tmp_path, "h.csv", "text,label\n")
    with pytest.raises(DataError, match=rf"^{header_only}: no examples$"):
        read_examples(str(header_only), task="classify", data=DataConfig())
    docs = _write(tmp_path, "docs.txt", "one\n")
    with pytest.raises(DataError, match="a plain text file has no labels"):
        read_examples(str(docs), task="classify", data=DataConfig())
    assert read_examples(str(docs), task="classify", data=DataConfig(), require_labels=False)[0].text == "one"
    with pytest.raises(DataError, match="wnut16:dev: is ner data but the task is classify"):
        read_examples("wnut16:dev", task="classify", data=DataConfig())


def test_read_examples_alias():
    from runassist.config import ModelConfig
    from runassist.tasks.classify import ClassifySection, ClassifyTask

    split = ClassifyTask(ClassifySection(), DataConfig(), ModelConfig()).scan("rotten-tomatoes:dev")
    assert len(split.examples) == 1280 and split.problems == []
