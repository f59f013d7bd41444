"""The page at / in headless Chromium: NER highlighting with a legend, class bars, the API key field,
and the chat box of a run whose task streams."""

from __future__ import annotations

from pathlib import Path

import pytest

from runassist.serve import ServeSettings, create_app
from serve_fixtures import StubPredictor, ThreadedServer, chat_runs, tiny_run  # noqa: F401  (fixtures)

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason=f"no {CHROMIUM}: install it with `apt-get install -y chromium`")]


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield browser
        browser.close()


def _open(browser, url: str):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}"))
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready='1']", timeout=15_000)
    return page, errors


def test_ner_entities_are_highlighted_with_a_legend(browser, tiny_run):  # noqa: F811
    from runassist.predict import Predictor

    predictor = Predictor.from_run(tiny_run.run)
    text = tiny_run.tagged[0]
    expected = predictor.predict([text])[0]["entities"]
    with ThreadedServer(create_app(predictor, settings=ServeSettings(max_wait_ms=1))) as server:
        page, errors = _open(browser, server.url)
        assert page.locator("#auth").is_hidden()  # no API key on this server
        assert page.locator("#model-name").inner_text() == tiny_run.run.name
        assert page.locator("#metrics-table tr[data-split='dev']").count() == 1  # the run's metrics
        page.fill("#input", text)
        page.click("#submit")
        page.wait_for_selector("#result mark.entity", timeout=15_000)

        marks = page.locator("#result mark.entity")
        assert marks.count() == len(expected)
        for i, entity in enumerate(expected):
            mark = marks.nth(i)
            assert mark.get_attribute("data-label") == entity["label"]
            assert f"entity-{entity['label']}" in mark.get_attribute("class")
            assert mark.inner_text().startswith(entity["text"])  # the span's own text, then its label
            assert mark.locator(".entity-label").inner_text().upper() == entity["label"]
        # the text around the entities is kept as typed: without the label tags, the result reads as the input
        assert page.locator("#result").evaluate(
            "el => { const c = el.cloneNode(true); c.querySelectorAll('.entity-label').forEach(x => x.remove());"
            " return c.textContent; }") == text
        legend = page.locator("#legend .legend-item")
        assert sorted(legend.all_inner_texts()) == ["LOC", "ORG", "PER"]
        found = {e["label"] for e in expected}
        for label in ("LOC", "ORG", "PER"):
            item = page.locator(f"#legend .legend-item[data-label='{label}']")
            assert ("absent" in item.get_attribute("class")) == (label not in found)
        # one colour per type, the same in the text and the legend
        colour = marks.first.evaluate("el => getComputedStyle(el).backgroundColor")
        first = expected[0]["label"]
        assert page.locator(f"#legend .legend-item[data-label='{first}']").evaluate(
            "el => getComputedStyle(el).backgroundColor") == colour
        assert not errors, errors
        page.close()


def test_classes_as_bars_and_the_api_key_field(browser):
    stub = StubPredictor()
    with ThreadedServer(create_app(stub, settings=ServeSettings(api_key="s3cret", max_wait_ms=1))) as server:
        page, errors = _open(browser, server.url)
        assert page.locator("#auth").is_visible()  # the server wants a key: the page asks for it
        assert page.locator("#chat").is_hidden()  # a classifier does not chat
        assert "API key" in page.locator("#error").inner_text()  # /v1/model was refused without it
        page.fill("#api-key", "s3cret")
        page.dispatch_event("#api-key", "change")
        page.wait_for_selector("#metrics-table tr[data-split='dev']", timeout=15_000)
        text = "a rather long text about a good film"
        page.fill("#input", text)
        page.click("#submit")
        page.wait_for_selector("#result .prob-row", timeout=15_000)
        rows = page.locator("#result .prob-row")
        assert rows.count() == 2
        chosen = page.locator("#result .prob-row.chosen")
        assert chosen.get_attribute("data-label") == "negative"  # the stub: p(positive) = len(text) / 100
        assert page.locator("#result .prob-row[data-label='positive'] .prob-value").inner_text() == "36.0%"
        width = page.locator("#result .prob-row[data-label='negative'] .prob-fill").evaluate("el => el.style.width")
        assert width == "64%"
        assert page.locator("#error").is_hidden()
        assert stub.calls == [[text]]
        assert not [e for e in errors if "401" not in e], errors
        page.close()


def test_object_inputs_get_a_box_per_field_and_other_answers_show_as_json(browser):
    """The page builds its form from the tool's input schema, not from a task name: an object input
    (a question and its context) gets one box per field, and an answer that is neither entities nor
    label probabilities is shown as its JSON."""
    from serve_fixtures import StubTask

    class QuestionTask(StubTask):
        def input_schema(self, max_chars):
            text = {"type": "string", "maxLength": max_chars}
            return {"type": "object", "required": ["question", "context"], "additionalProperties": False,
                    "properties": {"question": {**text, "description": "a question"},
                                   "context": {**text, "description": "the text holding the answer"}}}

        def to_json(self, example, prediction):
            return {"answer": example["context"].split()[-1], "score": prediction}

    class QuestionPredictor(StubPredictor):
        def examples(self, inputs):
            if not all(isinstance(i, dict) and set(i) == {"question", "context"} for i in inputs):
                raise ValueError("each input must be {question, context}")
            return list(inputs)

    stub = QuestionPredictor()
    stub.task = QuestionTask()
    with ThreadedServer(create_app(stub, settings=ServeSettings(max_wait_ms=1))) as server:
        page, errors = _open(browser, server.url)
        assert page.locator("#fields textarea").count() == 2 and page.locator("#input").count() == 0
        page.fill("#field-question", "Where is the cat?")
        page.fill("#field-context", "The cat sat on the mat")
        page.click("#submit")
        page.wait_for_selector("#output:not([hidden])", timeout=15_000)
        assert stub.calls == [[{"question": "Where is the cat?", "context": "The cat sat on the mat"}]]
        assert '"answer": "mat"' in page.locator("#raw").text_content()
        assert page.locator("#result").inner_text() == "" and page.locator("#error").is_hidden()
        assert not errors, errors
        page.close()


def test_the_chat_box_streams_replies_and_keeps_the_conversation(browser, chat_runs):  # noqa: F811
    from runassist.predict import Predictor

    predictor = Predictor.from_run(chat_runs.trained)
    with ThreadedServer(create_app(predictor, settings=ServeSettings(api_key="s3cret"))) as server:
        page, errors = _open(browser, server.url)
        page.fill("#api-key", "s3cret")
        page.dispatch_event("#api-key", "change")
        page.wait_for_selector("#chat:not([hidden])", timeout=15_000)
        assert page.locator("#try").is_hidden()  # a conversation instead of the one-shot form
        # the reply as it grows: each text node put in a bubble (every textContent assignment makes a new one)
        page.evaluate("""() => { window.seen = []; new MutationObserver((records) => {
            for (const r of records) for (const n of r.addedNodes) if (n.nodeType === 3) window.seen.push(n.data);
          }).observe(document.getElementById('chat-log'), {subtree: true, childList: true}); }""")
        for turn, (text, expected) in enumerate((("hello", "hi how are you"), ("bye", "see you later"))):
            page.fill("#chat-input", text)
            page.press("#chat-input", "Enter")
            page.wait_for_selector(f".msg-assistant:nth-child({2 * turn + 2})[data-done='1']", timeout=15_000)
        roles = page.locator("#chat-log .msg").evaluate_all("ns => ns.map(n => n.dataset.role)")
        assert roles == ["user", "assistant", "user", "assistant"]
        texts = page.locator("#chat-log .msg-text").all_inner_texts()
        assert texts == ["hello", "hi how are you", "bye", "see you later"]
        first = page.locator(".msg-assistant").first
        assert int(first.get_attribute("data-pieces")) > 1  # streamed in pieces, not at once
        seen = [t for t in page.evaluate("window.seen") if t]
        assert seen[:4] == ["hi", "hi how", "hi how are", "hi how are you"], seen  # shown token by token
        # the user's text is text, never markup
        page.fill("#chat-input", "<b>hello</b>")
        page.click("#chat-send")
        page.wait_for_selector(".msg-assistant:nth-child(6)[data-done='1']", timeout=15_000)
        user = page.locator(".msg-user").last
        assert user.inner_text() == "<b>hello</b>" and user.locator("b").count() == 0
        assert page.locator("#error").is_hidden()
        # a refused message: the service's error is shown, and the message is put back to be edited
        long = " ".join(["hello"] * 50)
        page.fill("#chat-input", long)
        page.click("#chat-send")
        page.wait_for_selector("#error:not([hidden])", timeout=15_000)
        assert "model.max_length=48" in page.locator("#error").inner_text()
        assert page.locator("#chat-log .msg").count() == 6 and page.input_value("#chat-input") == long
        page.click("#chat-new")
        assert page.locator("#chat-log .msg").count() == 0
        assert not [e for e in errors if "401" not in e], errors
        page.close()


def test_an_image_model_gets_a_drop_zone_showing_the_image_and_its_classes(browser, tmp_path):
    """A model whose task takes images (GET /v1/model: media "image"): a file picker instead of text
    boxes; the chosen file is shown and uploaded as multipart/form-data, and its classes drawn as bars."""
    import torch

    from image_helpers import build_tiny_vit_dir, colour_image, write_image_folder
    from runassist.predict import Predictor
    from runassist.tasks import load_config
    from runassist.train.run import train

    torch.set_num_threads(1)
    for split, n, seed in (("train", 24, 0), ("dev", 8, 1)):
        write_image_folder(tmp_path / split, n, seed)
    model = build_tiny_vit_dir(tmp_path / "vit")
    run = train(load_config(None, ["task=image", f"model.source={model}", f"data.train={tmp_path / 'train'}",
                                   f"data.dev={tmp_path / 'dev'}", f"output.dir={tmp_path / 'runs'}",
                                   "train.threads=1", "train.precision=fp32", "train.batch_size=8",
                                   "train.epochs=4", "train.lr=3e-3"]), progress=False).run
    picture = tmp_path / "dark-shirt.png"
    picture.write_bytes(colour_image("dark", 77, size=(40, 30)))
    with ThreadedServer(create_app(Predictor.from_run(run), settings=ServeSettings(max_wait_ms=1))) as server:
        page, errors = _open(browser, server.url)
        assert page.locator("#drop").is_visible() and page.locator("#input").count() == 0
        page.set_input_files("#file-input", str(picture))
        page.wait_for_selector("#result .prob-row", timeout=15_000)
        assert page.locator("#result .prob-row.chosen").get_attribute("data-label") == "dark"
        assert page.locator("#result .prob-row").count() == 2
        assert page.locator("#preview-image").evaluate("img => img.complete && img.naturalWidth") == 40
        assert '"file": "dark-shirt.png"' in page.locator("#raw").text_content()
        assert page.locator("#error").is_hidden() and not errors, errors
        page.close()
