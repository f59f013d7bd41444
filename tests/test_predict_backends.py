"""Faster prediction paths beside torch eager and ONNX Runtime (bench/README.md, "torch.compile and
OpenVINO"). ``--backend openvino``: the export checks the fp32 graph in OpenVINO, and the backend
serves only an export whose check passed, with torch's answers through the same Predictor.
``--compile``: the torch model under ``torch.compile``, same answers."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from conftest import ner_overrides

from runassist.errors import RunassistError
from runassist.export import export
from runassist.predict import Predictor
from runassist.tasks import load_config
from runassist.train.run import train

TEXTS = ["john smith went to paris", "mary visited google in new york with apple", "london",
         " ".join(["john went to paris and london"] * 12)]  # last: several windows


@pytest.fixture(scope="module")
def ner_run(tiny_model, tmp_path_factory):
    from conftest import make_ner_sentences, write_conll

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("backends-ner")
    files = {s: write_conll(tmp / f"{s}.conll", make_ner_sentences(n, seed))
             for s, n, seed in (("train", 64, 0), ("dev", 16, 1), ("test", 16, 2))}
    cfg = load_config(None, ner_overrides(files, tiny_model, tmp / "runs", max_steps=24, early_stopping="null"))
    return train(cfg, progress=False).run


@pytest.fixture(scope="module")
def exported(ner_run):
    pytest.importorskip("openvino", reason="the openvino extra is not installed (pip install 'runassist[openvino]')")
    return ner_run, export(ner_run)


def _ov():
    import openvino

    from runassist.openvino_runtime import CHECK, OpenVinoModel

    return openvino, CHECK, OpenVinoModel


def test_export_checks_openvino_and_the_backend_answers_like_torch(exported):
    ov, CHECK, OpenVinoModel = _ov()
    run, result = exported
    check = result["checks"][CHECK]
    parity = json.loads((run / "onnx" / "parity.json").read_text())
    assert parity["checks"][CHECK] == check
    assert check["passed"] is True and check["agreement"] >= 0.98 and check["examples"] == 16
    expected = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()
    assert check["precision"] == expected  # the plugin's own choice: bf16 on CPUs with AMX / avx512_bf16

    reference = Predictor.from_run(run, precision="fp32")
    served = Predictor.from_run(run, backend="openvino", threads=1)
    assert isinstance(served.model, OpenVinoModel) and served.model.path == run / "onnx" / "model.onnx"
    assert served.backend == "openvino" and served.guard is None and served.info()["backend"] == "openvino"

    # the graph's logits at several batch sizes and lengths: f32 matches torch to rounding, bf16 to its precision
    f32 = OpenVinoModel(run / "onnx" / "model.onnx", threads=1, precision="f32")
    assert f32.precision == "f32"
    examples = reference.examples(TEXTS)
    features = reference.task.encode(examples, reference.processor, reference.state)
    for size in (1, 3, len(features)):
        batch = reference.task.collate(features[:size], reference.processor)
        with torch.no_grad():
            want = reference.model(**batch).logits.numpy()
        np.testing.assert_allclose(f32(**batch).logits.numpy(), want, atol=1e-4)
        got = served.model(**batch).logits.numpy()
        assert got.shape == want.shape and np.abs(got - want).max() < (0.1 if check["precision"] == "bf16" else 1e-4)
    f32_pred = Predictor(run=run, task=reference.task, model=f32, processor=reference.processor,
                         state=reference.state, cfg=reference.cfg, backend="openvino")
    assert [r["tags"] for r in f32_pred.predict(TEXTS)] == [r["tags"] for r in reference.predict(TEXTS)]


def test_cli_predicts_with_openvino(exported, tmp_path):
    from typer.testing import CliRunner

    from runassist.cli import app

    run, _ = exported
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS[:3]) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    outcome = CliRunner().invoke(app, ["predict", str(run), str(source), "-o", str(out), "--backend", "openvino", "-q"])
    assert outcome.exit_code == 0, outcome.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    expected = Predictor.from_run(run, backend="openvino", threads=1).predict(TEXTS[:3])
    assert len(rows) == 3 and [r["entities"] for r in rows] == [e["entities"] for e in expected]
    assert [len(r["tags"]) for r in rows] == [len(t.split()) for t in TEXTS[:3]]


def test_refuses_an_export_it_did_not_check(exported, tmp_path, monkeypatch):
    import shutil

    _, CHECK, _ = _ov()
    run, _ = exported
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("checkpoints"))
    parity_path = copy / "onnx" / "parity.json"
    parity = json.loads(parity_path.read_text())

    failed = {**parity, "checks": {**parity["checks"], CHECK: {**parity["checks"][CHECK], "passed": False,
                                                                 "agreement": 0.5}}}
    parity_path.write_text(json.dumps(failed))
    with pytest.raises(RunassistError, match=r"parity.json: OpenVINO's predictions matched torch on 50.0% of 16"):
        Predictor.from_run(copy, backend="openvino")

    unchecked = {**parity, "checks": {k: v for k, v in parity["checks"].items() if k != CHECK}}
    parity_path.write_text(json.dumps(unchecked))
    with pytest.raises(RunassistError, match="did not check OpenVINO .* export again"):
        Predictor.from_run(copy, backend="openvino")

    shutil.rmtree(copy / "onnx")
    with pytest.raises(RunassistError, match="no ONNX export; run `runassist export"):
        Predictor.from_run(copy, backend="openvino")

    monkeypatch.setitem(sys.modules, "openvino", None)  # as where the extra is not installed
    with pytest.raises(RunassistError, match=r"needs the openvino package: pip install 'runassist\[openvino\]'"):
        Predictor.from_run(run, backend="openvino")
    from runassist import openvino_runtime

    assert openvino_runtime.available() is False


def test_compile_is_for_the_torch_backend(ner_run, tmp_path):
    from typer.testing import CliRunner

    from runassist.cli import app

    with pytest.raises(RunassistError, match="--compile compiles the torch model; the onnx backend"):
        Predictor.from_run(ner_run, backend="onnx", compile=True)
    source = tmp_path / "in.txt"
    source.write_text("london\n", encoding="utf-8")
    outcome = CliRunner().invoke(app, ["predict", str(ner_run), str(source), "--compile", "--engine", "ray",
                                       "-o", str(tmp_path / "out")])
    assert isinstance(outcome.exception, RunassistError)  # main() prints it as `error: ...`
    assert "--compile is for the local engine" in str(outcome.exception)


@pytest.mark.slow  # Inductor compiles the tiny model: ~20 s on one thread
def test_compiled_predictor_answers_like_eager(ner_run, tmp_path):
    from typer.testing import CliRunner

    from runassist.cli import app

    eager = Predictor.from_run(ner_run, precision="fp32", threads=1)
    fast = Predictor.from_run(ner_run, precision="fp32", threads=1, compile=True)
    assert fast.compiled and isinstance(fast.model, torch._dynamo.eval_frame.OptimizedModule)
    assert [r["tags"] for r in fast.predict(TEXTS)] == [r["tags"] for r in eager.predict(TEXTS)]

    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    outcome = CliRunner().invoke(app, ["predict", str(ner_run), str(source), "-o", str(out), "--compile",
                                       "--precision", "fp32", "-q"])
    assert outcome.exit_code == 0, outcome.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["entities"] for r in rows] == [r["entities"] for r in eager.predict(TEXTS)]
