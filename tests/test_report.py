"""The HTML run report: trained tiny runs (NER and classification) in, one self-contained page
and readable PNGs out; runs that lack pieces still get a report that says so."""

from __future__ import annotations

import base64
import csv
import html
import json
import random
import re
import shutil
from html.parser import HTMLParser

import pytest
from PIL import Image

from conftest import make_ner_sentences, ner_overrides, write_conll
from runassist.tasks import load_config
from runassist.errors import RunassistError
from runassist.report import write_report
from runassist.tasks.ner_report import read_conll_predictions
from runassist.train.run import train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
URL_ATTRS = {"src", "href", "srcset", "action", "formaction", "poster", "data", "background", "xlink:href"}


class _References(HTMLParser):
    """Every URL the page could load: URL attributes of any tag, and url(...) in styles."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.refs: list[str] = []
        self.tags: set[str] = set()
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self._in_style = tag == "style"
        for name, value in attrs:
            if name in URL_ATTRS:
                self.refs.append(value or "")
            if name == "style":
                self.refs += re.findall(r"url\(\s*['\"]?([^'\")]*)", value or "")

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.refs += re.findall(r"url\(\s*['\"]?([^'\")]*)", data)
            assert "@import" not in data


def _check_self_contained(page: str) -> None:
    parser = _References()
    parser.feed(page)
    assert parser.refs, "expected the embedded images among the references"
    for ref in parser.refs:
        assert ref.startswith(("data:image/png;base64,", "#")), f"external reference {ref[:80]!r}"
    assert not parser.tags & {"script", "link", "iframe", "object", "embed"}, parser.tags
    # and, whatever the markup, no absolute or protocol-relative URL in any src/href/url(
    assert not re.search(r"""(?:\b(?:src|href)\s*=\s*["']?|url\(\s*["']?)\s*(?:https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page


@pytest.fixture(scope="module")
def ner_run(tiny_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("report-ner")
    files = {split: write_conll(base / f"{split}.conll", make_ner_sentences(n, seed))
             for split, n, seed in (("train", 64, 0), ("dev", 16, 1), ("test", 16, 2))}
    cfg = load_config(None, ner_overrides(files, tiny_model, base / "runs", max_steps=40, lr="1e-2", log_every=2,
                                          eval_every=5, early_stopping="null"))
    return train(cfg, progress=False).run


def _check_pngs(folder, names):
    for name in names:
        data = (folder / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        with Image.open(folder / name) as image:
            image.load()
            assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100, (name, image.size)


def _section(page: str, heading: str) -> str:
    start = page.index(f"<h2>{heading}")
    end = page.find("</section>", start)
    return page[start:end]


def test_ner_report_is_one_self_contained_page(ner_run):
    path = write_report(ner_run)
    assert path == ner_run / "report.html"
    page = path.read_text(encoding="utf-8")
    _check_self_contained(page)

    # curves and the per-label chart are embedded, and are the very PNGs in RUN/plots/
    names = ("loss.png", "dev_metric.png", "lr.png", "per_label_f1.png")
    _check_pngs(ner_run / "plots", names)
    assert not (ner_run / "plots" / "confusion.png").exists()
    assert page.count("data:image/png;base64,") >= 4
    for name in names:
        assert base64.b64encode((ner_run / "plots" / name).read_bytes()).decode() in page, name

    # the test scores, with the numbers of eval/test.json
    scores = json.loads((ner_run / "eval" / "test.json").read_text())
    test = _section(page, "Test scores")
    assert f"{scores['f1']:.4f}" in test and f"{scores['precision']:.4f}" in test
    table = re.search(r'<table class="per-label">(.*?)</table>', test, re.S).group(1)
    for type_, row in scores["per_type"].items():
        assert f"<b>{type_}</b>" in table
        assert f"{row['f1']:.3f}" in table
    assert set(scores["per_type"]) == {"LOC", "ORG", "PER"}

    # the error breakdown, each kind with its count
    errors = _section(page, "Errors")
    for kind in ("type", "boundary", "boundary_and_type", "missed", "spurious"):
        assert re.search(rf"<b>{kind}</b></td><td>[^<]*</td><td>{scores['errors'][kind]}</td>", errors), kind

    # worst sentences: gold beside predicted, as many as there are sentences with errors (at most 6)
    from runassist.metrics.entities import worst_sentences

    words, gold, pred = read_conll_predictions(ner_run / "eval" / "test.conll")
    assert len(words) == 16
    worst = worst_sentences(gold, pred, k=6)
    assert errors.count('<div class="sent">') == len(worst) > 0
    assert errors.count('<span class="side">gold</span>') == len(worst)
    first = worst[0]["index"]
    assert f"sentence {first + 1} · {worst[0]['errors']} error" in errors

    # environment and resolved config
    assert "Recommended settings" in _section(page, "Environment")
    assert "max_steps: 40" in _section(page, "Config")


def test_report_escapes_user_text_and_honours_output(ner_run, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(ner_run, run, ignore=shutil.ignore_patterns("model", "checkpoints", "plots", "report.html"))
    conll = run / "eval" / "test.conll"
    text = conll.read_text(encoding="utf-8")
    hostile = "<img/src=x/onerror=alert(1)>&amp"
    conll.write_text(re.sub(r"^\S+ ", lambda m: hostile + " ", text, flags=re.M), encoding="utf-8")
    assert hostile in conll.read_text()
    out = write_report(run, output=tmp_path / "elsewhere" / "r.html")
    assert out == tmp_path / "elsewhere" / "r.html" and not (run / "report.html").exists()
    page = out.read_text(encoding="utf-8")
    assert hostile not in page and "<img/src" not in page
    assert "&lt;img/src=x/onerror=alert(1)&gt;&amp;amp" in page
    _check_self_contained(page)


def test_report_on_runs_missing_pieces(ner_run, tmp_path):
    # no dev evaluations, no eval/ folder: the headline test scores come from summary.json
    run = tmp_path / "no-dev"
    shutil.copytree(ner_run, run, ignore=shutil.ignore_patterns("model", "checkpoints", "eval", "report.html"))
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r["kind"] == "train"))
    assert (run / "plots" / "dev_metric.png").exists()  # copied from the full run
    page = write_report(run).read_text(encoding="utf-8")
    assert "no dev curve" in page and "eval/test.json is missing" in page
    assert not (run / "plots" / "dev_metric.png").exists()  # a stale chart is not left behind
    assert not (run / "plots" / "per_label_f1.png").exists()
    _check_pngs(run / "plots", ("loss.png", "lr.png"))
    summary = json.loads((run / "summary.json").read_text())
    assert f"{summary['test']['f1']:.4f}" in _section(page, "Test scores")
    _check_self_contained(page)

    # a folder holding only its config: every section says what is missing, nothing crashes
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(ner_run / "config.yaml", bare / "config.yaml")
    page = write_report(bare).read_text(encoding="utf-8")
    for note in ("summary.json is missing", "env.json is missing", "metrics.jsonl is missing",
                 "no test scores", "No training loss logged"):
        assert note in page, note
    assert "data:image/png" not in page
    assert not any((bare / "plots").glob("*.png"))

    with pytest.raises(RunassistError, match="no such run folder"):
        write_report(tmp_path / "nope")


def test_report_command(ner_run, tmp_path):
    from typer.testing import CliRunner

    from runassist.cli import app

    result = CliRunner().invoke(app, ["report", str(ner_run), "-o", str(tmp_path / "cli.html")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


POS, NEG = "great good fun loved".split(), "bad terrible boring hated".split()
FILLERS = "the a movie film plot acting story was is and with".split()
MEH = "so-so <i>$5 & up$</i>"  # a label with HTML and matplotlib mathtext in it


def _write_csv(path, n, seed):
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["text", "label"])
        writer.writeheader()
        for _ in range(n):
            label = rng.choice(["pos", "neg", MEH])
            words = [rng.choice(FILLERS) for _ in range(rng.randint(3, 7))]
            if label != MEH:
                words.insert(rng.randrange(len(words) + 1), rng.choice(POS if label == "pos" else NEG))
            writer.writerow({"text": " ".join(words), "label": label})
    return path


def test_classification_report(tiny_model, tmp_path):
    files = {split: _write_csv(tmp_path / f"{split}.csv", n, seed)
             for split, n, seed in (("train", 48, 0), ("dev", 12, 1), ("test", 24, 2))}
    cfg = load_config(None, ["task=classify", f"model.source={tiny_model}", "model.max_length=32", "model.stride=4",
                             f"data.train={files['train']}", f"data.dev={files['dev']}",
                             f"data.test={files['test']}", f"output.dir={tmp_path / 'runs'}", "train.batch_size=8",
                             "train.max_steps=12", "train.lr=3e-3", "train.threads=1", "train.precision=fp32",
                             "train.log_every=2", "train.eval_every=4", "train.early_stopping=null"])
    run = train(cfg, progress=False).run
    page = write_report(run).read_text(encoding="utf-8")
    _check_self_contained(page)
    names = ("loss.png", "dev_metric.png", "lr.png", "per_label_f1.png", "confusion.png")
    _check_pngs(run / "plots", names)
    assert page.count("data:image/png;base64,") == len(names)
    scores = json.loads((run / "eval" / "test.json").read_text())
    table = re.search(r'<table class="per-label">(.*?)</table>', page, re.S).group(1)
    assert set(scores["per_class"]) == {"neg", "pos", MEH}
    for label, row in scores["per_class"].items():
        assert f"<b>{html.escape(label)}</b>" in table and f"{row['f1']:.3f}" in table
    assert MEH not in page
    assert f"{scores['accuracy']:.4f}" in _section(page, "Test scores")
    # the most confident mistakes, from eval/test.jsonl
    rows = [json.loads(x) for x in (run / "eval" / "test.jsonl").read_text().splitlines()]
    wrong = [r for r in rows if r["labels"] != r["gold"]]
    errors = _section(page, "Errors")
    if wrong:
        assert f"{len(wrong)} of {len(rows)} test examples are wrong" in errors
        top = max(r["probs"][r["labels"][0]] for r in wrong)
        mistakes = re.search(r'<table class="mistakes">.*?<tbody><tr><td>(.*?)</td>', errors, re.S).group(1)
        # the first row is a most confident mistake (a tiny model often ties several at one probability)
        assert mistakes in {r["text"] for r in wrong if r["probs"][r["labels"][0]] >= top - 1e-6}, mistakes
    else:
        assert f"All {len(rows)} test examples are right" in errors
