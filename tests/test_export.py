"""ONNX export on tiny trained runs: both backends answer the same through the Predictor,
parity is checked on dev, and an export that fails parity is kept apart and never loaded."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from conftest import WORDS, ner_overrides
from runassist.tasks import load_config
from runassist.errors import RunassistError
from runassist.export import export
from runassist.onnx_runtime import OnnxModel
from runassist.predict import Predictor
from runassist.train.run import train

TEXTS = ["john smith went to paris", "mary visited google in new york with apple",
         "the movie was great", "london", " ".join(["john went to paris and london"] * 12)]  # last: several windows


@pytest.fixture(scope="module")
def ner_run(tiny_model, tmp_path_factory):
    from conftest import make_ner_sentences, write_conll

    tmp = tmp_path_factory.mktemp("export-ner")
    files = {s: write_conll(tmp / f"{s}.conll", make_ner_sentences(n, seed))
             for s, n, seed in (("train", 64, 0), ("dev", 16, 1), ("test", 16, 2))}
    cfg = load_config(None, ner_overrides(files, tiny_model, tmp / "runs", max_steps=24, early_stopping="null"))
    return train(cfg, progress=False).run


@pytest.fixture(scope="module")
def classify_run(tiny_model, tmp_path_factory):
    import random

    tmp = tmp_path_factory.mktemp("export-classify")
    rng = random.Random(0)

    def write(name, n):
        rows = []
        for _ in range(n):
            label = rng.choice(["pos", "neg"])
            cue = rng.choice(["great", "good", "fun", "loved"] if label == "pos" else ["bad", "boring", "hated"])
            rows.append({"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9))) + f" {cue}",
                         "label": label})
        path = tmp / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return path

    overrides = ["task=classify", f"model.source={tiny_model}", "model.max_length=32", "model.stride=8",
                 f"data.train={write('train', 48)}", f"data.dev={write('dev', 16)}", f"output.dir={tmp / 'runs'}",
                 "train.batch_size=8", "train.max_steps=12", "train.lr=5e-3", "train.threads=1",
                 "train.precision=fp32", "train.early_stopping=null"]
    return train(load_config(None, overrides), progress=False).run


def test_ner_export_int8_parity_and_backends_agree(ner_run):
    result = export(ner_run, quantize="int8")
    folder = ner_run / "onnx"
    assert result["passed"] is True
    assert result["files"] == [str(folder / "model.onnx"), str(folder / "model.int8.onnx")]
    assert result["sizes"]["model.int8.onnx"] < result["sizes"]["model.onnx"]
    assert {"files", "sizes", "metric_torch", "metric_onnx", "agreement", "passed", "seconds"} <= set(result)
    assert result["checks"]["model.onnx"]["agreement"] == 1.0  # fp32: the same numbers up to rounding
    assert result["metric_torch"] == result["checks"]["model.onnx"]["metric_onnx"]
    # the fastest int8 method that passes is kept; slower ones are not tried after it
    assert result["int8_method"] == "dynamic" and "int8:blockwise" not in result["checks"]
    assert 0.98 <= result["checks"]["int8:dynamic"]["agreement"] == result["agreement"]
    assert 0.0 <= result["checks"]["int8:dynamic"]["token_agreement"] <= 1.0
    # the guard: threshold twice the calibrated error, measured on the train split, served as exported
    guard = result["checks"]["int8:dynamic"]["guard"]
    assert guard["calibration_split"].endswith("train.conll") and guard["calibration_examples"] == 64
    assert guard["threshold"] == pytest.approx(2 * guard["logit_error_p999"], abs=1e-3)
    assert guard["seen"] > 0 and 0 <= guard["rechecked"] <= guard["seen"]
    assert set(result["checks"]["int8:dynamic"]["unguarded"]) == {"agreement", "identical", "token_agreement"}
    parity = json.loads((folder / "parity.json").read_text())
    assert parity["guard"] == {"threshold": guard["threshold"]}
    assert parity["active"] == "model.int8.onnx" and parity["split"].endswith("dev.conll")
    assert parity["inputs"] == ["input_ids", "token_type_ids", "attention_mask"]  # as the task's collate makes them

    torch_pred = Predictor.from_run(ner_run)
    onnx_pred = Predictor.from_run(ner_run, backend="onnx")
    assert isinstance(onnx_pred.model, OnnxModel) and onnx_pred.model.path.name == "model.int8.onnx"
    assert onnx_pred.model.session.get_session_options().intra_op_num_threads == torch.get_num_threads()

    # fp32 graph: the dynamic axes take any batch size and length, logits match torch closely
    fp32 = Predictor(run=ner_run, task=torch_pred.task, model=OnnxModel(folder / "model.onnx"),
                     processor=torch_pred.processor, state=torch_pred.state, cfg=torch_pred.cfg, backend="onnx")
    examples = torch_pred.examples(TEXTS)
    features = torch_pred.task.encode(examples, torch_pred.processor, torch_pred.state)
    assert len(features) > len(TEXTS)  # the long text was windowed
    for size in (1, 3, 64):
        batch = torch_pred.task.collate(features[:size], torch_pred.processor)
        with torch.no_grad():
            expected = torch_pred.model(**batch).logits.numpy()
        got = fp32.model(**batch).logits.numpy()
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-4)
    reference = torch_pred.predict(TEXTS)
    assert [r["tags"] for r in fp32.predict(TEXTS)] == [r["tags"] for r in reference]
    # int8 with its guard: the close calls were re-run in fp32, so every text gets torch's tags
    assert [r["tags"] for r in onnx_pred.predict(TEXTS)] == [r["tags"] for r in reference]

    assert onnx_pred.guard is not None and onnx_pred.guard.threshold == guard["threshold"]
    assert onnx_pred.guard.fallback.path == folder / "model.onnx"

    # exporting again without --quantize replaces the whole export: no stale int8 file stays active
    again = export(ner_run)
    assert again["passed"] and not (folder / "model.int8.onnx").exists()
    assert OnnxModel.load(ner_run).path.name == "model.onnx"
    assert Predictor.from_run(ner_run, backend="onnx").guard is None and json.loads(
        (folder / "parity.json").read_text())["guard"] is None


def test_guard_reruns_exactly_the_close_calls_in_fp32(ner_run):
    from runassist.onnx_runtime import Guard

    export(ner_run, quantize="int8")
    folder = ner_run / "onnx"
    torch_pred = Predictor.from_run(ner_run)
    guarded = Predictor.from_run(ner_run, backend="onnx")
    plain = Predictor(run=ner_run, task=torch_pred.task, model=OnnxModel(folder / "model.int8.onnx"),
                      processor=torch_pred.processor, state=torch_pred.state, cfg=torch_pred.cfg, backend="onnx")
    fp32 = Predictor(run=ner_run, task=torch_pred.task, model=OnnxModel(folder / "model.onnx"),
                     processor=torch_pred.processor, state=torch_pred.state, cfg=torch_pred.cfg, backend="onnx")
    task, state = torch_pred.task, torch_pred.state
    examples = torch_pred.examples(TEXTS)
    features = task.encode(examples, torch_pred.processor, state)
    from runassist.inference import outputs_for

    low = outputs_for(task, plain.model, features, torch_pred.processor, state)
    margins = sorted(task.margins(features, low, state))
    cut = (margins[len(margins) // 2 - 1] + margins[len(margins) // 2]) / 2  # half the windows below

    def scores(predictor):
        return [(p.tags, p.scores) for p in predictor.predict_examples(examples)]

    guarded.guard = Guard(fp32.model, 1e9)  # every window re-run: the fp32 answers, to the digit
    assert scores(guarded) == scores(fp32) and guarded.guard.rechecked == guarded.guard.seen == len(features)
    guarded.guard = Guard(fp32.model, 0.0)  # none (margins are >= 0): the int8 answers
    assert scores(guarded) == scores(plain) and guarded.guard.rechecked == 0
    guarded.guard = Guard(fp32.model, cut)
    guarded.predict_examples(examples)
    assert guarded.guard.rechecked == len(features) // 2 and guarded.guard.describe()["rechecked_share"] == round(
        (len(features) // 2) / len(features), 4)


def test_guard_calibrates_on_dev_when_train_is_gone_and_needs_its_fp32_twin(ner_run, monkeypatch):
    from runassist.errors import DataError
    from runassist.tasks.ner import NerTask

    real = NerTask.read

    def read(self, spec, **kw):
        if spec.endswith("train.conll"):
            raise DataError(spec, None, "file not found")
        return real(self, spec, **kw)

    monkeypatch.setattr(NerTask, "read", read)
    result = export(ner_run, quantize="int8")
    assert result["passed"] and result["guard"]["calibration_split"].endswith("dev.conll")
    monkeypatch.setattr(NerTask, "read", real)
    (ner_run / "onnx" / "model.onnx").unlink()
    with pytest.raises(RunassistError, match="model.onnx: missing.*export"):
        Predictor.from_run(ner_run, backend="onnx")
    export(ner_run, quantize="int8")


def test_task_margins_are_distances_to_a_flip():
    from runassist.config import DataConfig, ModelConfig
    from runassist.tasks.base import Feature, TaskState
    from runassist.tasks.classify import ClassifySection, ClassifyTask
    from runassist.tasks.ner import NerSection, NerTask

    ner = NerTask(NerSection(), DataConfig(), ModelConfig(source="x"))
    feature = Feature(example=0, inputs={"input_ids": [0] * 4}, meta=[(0, 1, 0), (1, 3, 0)])
    empty = Feature(example=1, inputs={"input_ids": [0]}, meta=[])
    logits = np.array([[0.0, 9.0, 0.0], [2.0, 1.0, 0.0], [5.0, 5.0, 0.0], [0.5, 3.0, 2.0]])
    state = TaskState(labels=["O", "B-X", "I-X"])
    assert ner.margins([feature, empty], [logits, logits[:1]], state) == pytest.approx([1.0, float("inf")])  # row 3

    single = ClassifyTask(ClassifySection(), DataConfig(), ModelConfig(source="x"))
    one = Feature(example=0, inputs={"input_ids": [0]})
    assert single.margins([one], [np.array([0.2, 1.5, -3.0])], TaskState(labels=["a", "b", "c"])) == \
        pytest.approx([1.3])
    # a text in two windows is decided on their average: each window is far from a flip, the text is not
    windows = [Feature(example=0, inputs={"input_ids": [0]}), Feature(example=0, inputs={"input_ids": [0]})]
    assert single.margins(windows, [np.array([5.0, 0.0]), np.array([-4.98, 0.0])], TaskState(labels=["a", "b"])) \
        == pytest.approx([0.01, 0.01])
    multi = ClassifyTask(ClassifySection(multi_label=True), DataConfig(), ModelConfig(source="x"))
    state = TaskState(labels=["a", "b"], extras={"thresholds": [0.5, 0.880797]})  # logits 0 and 2
    assert multi.margins([one], [np.array([-3.0, 2.25])], state) == pytest.approx([0.5], abs=1e-5)


def test_service_reports_the_guard(ner_run):
    from fastapi.testclient import TestClient

    from runassist.serve import ServeSettings, create_app

    export(ner_run, quantize="int8")
    predictor = Predictor.from_run(ner_run, backend="onnx")
    with TestClient(create_app(predictor, settings=ServeSettings(max_wait_ms=1))) as client:
        assert client.post("/v1/predict", json={"inputs": TEXTS}).status_code == 200
        text = client.get("/metrics").text
    seen = float(re.search(r"^runassist_int8_windows_total (\S+)$", text, re.M).group(1))
    rechecked = float(re.search(r"^runassist_int8_rechecked_total (\S+)$", text, re.M).group(1))
    assert "# TYPE runassist_int8_rechecked_total counter" in text
    assert seen == predictor.guard.seen > len(TEXTS) and rechecked == predictor.guard.rechecked <= seen


def test_guard_reruns_nan_and_refuses_bad_thresholds(tmp_path):
    from runassist.inference import outputs_for
    from runassist.onnx_runtime import Guard
    from runassist.tasks.base import Feature

    class Fixed:  # logits [value, 0] for every input; NaN for input 0 if asked
        device, training = torch.device("cpu"), False

        def __init__(self, value, nan=False):
            self.value, self.nan = value, nan

        def eval(self):
            return self

        def __call__(self, input_ids, **_):
            out = torch.zeros((input_ids.shape[0], 2))
            out[:, 0] = self.value
            if self.nan:
                out[input_ids[:, 0] == 0] = float("nan")
            return type("Out", (), {"logits": out})()

    class Task:  # the contract's parts outputs_for uses
        def collate(self, fs, processor):
            return {"input_ids": torch.tensor([f.inputs["input_ids"] for f in fs])}

        def infer(self, model, batch, fs, processor=None):
            return list(model(**batch).logits.numpy())

        def margins(self, fs, xs, state):
            return [float(x[0] - x[1]) if np.isfinite(x).all() else float("nan") for x in xs]

    features = [Feature(example=i, inputs={"input_ids": [i]}) for i in range(3)]
    guard = Guard.__new__(Guard)
    guard.fallback, guard.threshold, guard.seen, guard.rechecked = Fixed(7.0), 0.5, 0, 0
    out = outputs_for(Task(), Fixed(1.0, nan=True), features, None, None, guard=guard)
    # the NaN answer is re-run (a NaN margin compares False with any threshold); the others kept
    assert guard.rechecked == 1 and out[0].tolist() == [7.0, 0.0] and out[1].tolist() == [1.0, 0.0]
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(RunassistError, match="guard threshold"):
            Guard(None, bad)

def test_failed_parity_is_kept_apart(ner_run, monkeypatch):
    from runassist.tasks.ner import NerTask

    real = NerTask.agreement

    def poor(self, reference, other):  # as if the graph answered differently on most dev sentences
        out = real(self, reference, other)
        return {**out, "agreement": 0.5}

    monkeypatch.setattr(NerTask, "agreement", poor)
    result = export(ner_run, quantize="int8", min_agreement=0.98)
    folder = ner_run / "onnx"
    assert result["passed"] is False and result["files"] == []
    assert "below --min-agreement" in result["message"] and "int8:blockwise 50.0%" in result["message"]
    assert sorted(p.name for p in (folder / "rejected").iterdir()) == [
        "model.int8.blockwise.onnx", "model.int8.dynamic.onnx", "model.onnx"]
    assert not (folder / "model.onnx").exists() and not (folder / "model.int8.onnx").exists()
    assert json.loads((folder / "parity.json").read_text())["active"] is None
    with pytest.raises(RunassistError, match="parity"):
        OnnxModel.load(ner_run)

    from typer.testing import CliRunner

    from runassist.cli import app

    outcome = CliRunner().invoke(app, ["export", str(ner_run), "--json"])
    assert outcome.exit_code == 1, outcome.output
    monkeypatch.setattr(NerTask, "agreement", real)
    assert export(ner_run)["passed"] is True  # a passing export clears the rejected files
    assert not (folder / "rejected").exists()


def test_int8_falls_back_to_blockwise(ner_run, monkeypatch):
    import runassist.export as export_module

    real = export_module._quantize_int8

    def no_dynamic(src, dst, method):  # as on an onnxruntime without the dynamic int8 kernels
        if method == "dynamic":
            raise RuntimeError("not supported here")
        real(src, dst, method)

    monkeypatch.setattr(export_module, "_quantize_int8", no_dynamic)
    result = export(ner_run, quantize="int8")
    assert result["passed"] and result["int8_method"] == "blockwise"
    assert "not supported here" in result["checks"]["int8:dynamic"]["error"]
    assert result["checks"]["int8:blockwise"]["agreement"] >= 0.98
    model = OnnxModel.load(ner_run)
    assert model.path.name == "model.int8.onnx"
    assert any(n.op_type == "MatMulNBits" for n in __import__("onnx").load(str(model.path)).graph.node)
    torch_tags = [r["tags"] for r in Predictor.from_run(ner_run).predict(TEXTS)]
    onnx_tags = [r["tags"] for r in Predictor.from_run(ner_run, backend="onnx").predict(TEXTS)]
    assert onnx_tags == torch_tags  # blockwise int8, guarded as dynamic is


def test_classify_export_matches_torch(classify_run):
    result = export(classify_run)
    assert result["passed"] and result["agreement"] == 1.0
    assert result["metric"] == "accuracy" and result["metric_onnx"] == result["metric_torch"]
    texts = ["great fun movie", "boring", "the plot of the film was bad and the acting terrible", "good"]
    torch_out = Predictor.from_run(classify_run).predict(texts)
    onnx_out = Predictor.from_run(classify_run, backend="onnx").predict(texts)
    assert [r["labels"] for r in onnx_out] == [r["labels"] for r in torch_out]
    for a, b in zip(torch_out, onnx_out):
        assert a["probs"] == pytest.approx(b["probs"], abs=2e-4)


def test_bad_arguments(ner_run, tmp_path):
    with pytest.raises(RunassistError, match="choose one of onnx"):
        export(ner_run, fmt="tflite")
    with pytest.raises(RunassistError, match="int8"):
        export(ner_run, quantize="int4")
    with pytest.raises(RunassistError, match="no such run"):
        export(tmp_path / "nope")
