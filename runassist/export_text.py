"""``runassist export RUN --with-tokenizer``: one ONNX file from raw text to answers.

Writes, in ``RUN/onnx/``:

- ``model.with_tokenizer.onnx``: input ``codepoints`` (int32 [L], the text's Unicode code points),
  the task's answer outputs (for NER: words, tags, entities with code-point offsets; see
  ``tasks.ner_graph``). Standard ONNX operators only (opset 17), so onnxruntime-node, -web,
  Java, C# and Rust sessions load it without a custom-operator library;
- ``model.with_tokenizer.json``: how to call it, the names the index outputs refer to, and the
  parity figures.

Parity: the run's dev sentences (test when there is no dev), given as text, go through the graph
(onnxruntime) and through ``Predictor`` (torch, fp32: what ``runassist predict --precision fp32``
answers); the share of texts with identical answers must reach ``min_agreement``. A file below
it is kept in ``onnx/rejected/``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runassist import runs
from runassist.atomic import write_json
from runassist.errors import RunassistError

FILE = "model.with_tokenizer.onnx"
INFO = "model.with_tokenizer.json"
OPSET = 17
# Tracing probe: every rule of the word split and of WordPiece takes a branch on it.
PROBE = "@user (Paris), U.S.. don't Obama's :) &amp; lol😂😂 #tag http://t.co/x 北京 Café!!"


def export_with_tokenizer(run: str | Path, *, min_agreement: float = 0.99, limit: int | None = None) -> dict[str, Any]:
    """Build, trace and check the graph; returns the figures also written to the JSON."""
    from runassist.data import char_tables
    from runassist.predict import Predictor
    from runassist.tasks.text_graph import TextToSubwords, WordPieceSpec

    started = time.perf_counter()
    if not 0.0 <= min_agreement <= 1.0:
        raise RunassistError(f"--min-agreement {min_agreement}: must be between 0 and 1")
    run = runs.require(Path(run), "config.yaml", "model/task.json")
    reference = Predictor.from_run(run, precision="fp32")
    task = reference.task
    if not task.capabilities.text_graph:
        raise RunassistError(f"export --with-tokenizer: a {task.name} model has no raw-text graph (its task does "
                             "not declare one); export without --with-tokenizer and tokenize in the caller")
    if hasattr(reference.model, "peft_config"):
        raise RunassistError("export: the model still has LoRA adapters; train with train.lora.merge=true")
    spec = WordPieceSpec(reference.processor)
    if spec.reason:
        raise RunassistError(f"export --with-tokenizer: {run} cannot be exported with its tokenizer: {spec.reason}. "
                             "Export without --with-tokenizer and tokenize in the caller")
    table = char_tables.build(spec.normalizer)
    graph = task.text_graph(reference.model, reference.processor, reference.state, TextToSubwords(spec, table)).eval()

    folder = run / "onnx"
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".{FILE}.staging"
    try:
        # A probe of several windows, so that nothing of the batch's size is traced as a constant.
        _trace(graph, staging, " ".join([PROBE] * max(2, reference.cfg.model.max_length // 16)))
        spec_name, texts, expected = _parity_set(reference, limit)
        session = session_for(staging)
        same, first_diff = 0, None
        for text, want in zip(texts, expected):
            got = task.text_graph_answers(run_text(session, text), graph.names, text)
            got_keys = [{k: e[k] for k in ("label", "start", "end")} for e in got]
            if got_keys == want:
                same += 1
            elif first_diff is None:
                first_diff = {"text": text, "graph": got_keys, "predict": want}
        agreement = same / len(texts) if texts else 1.0
        passed = agreement >= min_agreement
        target = folder / FILE if passed else folder / "rejected" / FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.replace(target)  # one rename: a reader never sees half a file
    finally:
        staging.unlink(missing_ok=True)
    if passed:
        (folder / "rejected" / FILE).unlink(missing_ok=True)
    else:
        (folder / FILE).unlink(missing_ok=True)
    info = {
        "file": str(target),
        "passed": passed,
        "input": {"name": "codepoints", "type": "int32", "shape": ["L"],
                  "how": "the text's Unicode code points, one text per call (JS: Int32Array.from(text, c => "
                         "c.codePointAt(0)) over Array.from(text); Python: [ord(c) for c in text]; Java: "
                         "text.codePoints().toArray(); C#: StringInfo/Rune; Rust: text.chars().map(|c| c as i32))"},
        "outputs": list(graph.output_names),
        "names": graph.names,
        "offsets": "code points, [start, end), as runassist predict reports them",
        "window": {"subwords": graph.room, "step": graph.step,
                   "how": "texts longer than one window are read in overlapping windows, as runassist predict does"},
        "parity": {"split": spec_name, "texts": len(texts), "identical": same, "agreement": round(agreement, 6),
                   "min_agreement": min_agreement, "reference": "Predictor, torch fp32", "first_difference": first_diff},
        "bytes": target.stat().st_size,
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_json(folder / INFO, info)
    if not passed:
        info["message"] = (f"below --min-agreement {min_agreement:.0%}: {agreement:.2%} of {len(texts)} {spec_name} "
                           f"texts identical; kept in {target.parent}, not exported")
    return info


def _trace(graph: torch.nn.Module, path: Path, text: str) -> None:
    import warnings

    probe = torch.tensor([ord(c) for c in text], dtype=torch.int32)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer warns at every shape it records as a constant
        torch.onnx.export(graph, (probe,), str(path), input_names=["codepoints"], output_names=list(graph.output_names),
                          dynamic_axes={"codepoints": {0: "L"}, **{n: {0: "entities" if n.startswith("entity") else "words"} for n in graph.output_names}},
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)


def session_for(path: str | Path, threads: int = 1) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def run_text(session: Any, text: str) -> list[np.ndarray]:
    return session.run(None, {"codepoints": np.array([ord(c) for c in text], dtype=np.int32)})


def _parity_set(reference: Any, limit: int | None) -> tuple[str, list[str], list[list[dict[str, Any]]]]:
    data = reference.cfg.data
    spec = data.dev or data.test
    if not spec:
        raise RunassistError("export: the run's config has neither data.dev nor data.test to check parity on")
    task = reference.task
    examples = task.read(spec)
    texts = [task.gold_json(ex)["input"] for ex in examples][:limit]
    texts = [t for t in texts if isinstance(t, str)]
    outputs = reference.predict(texts)
    return spec, texts, [task.text_graph_expected(o) for o in outputs]


def answers(path: str | Path, texts: Sequence[str], names: dict[str, Any], task: Any) -> list[list[dict[str, Any]]]:
    session = session_for(path)
    return [task.text_graph_answers(run_text(session, t), names, t) for t in texts]
