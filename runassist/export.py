"""ONNX export, int8 quantization and the parity check that decides whether an export is used.

The files (layout in ``onnx_runtime``) are read back by ``onnx_runtime.OnnxModel`` and ``Guard``;
this module makes them. What a task's graph takes and returns comes from the task: the batch its
``collate`` makes, and its ``onnx_outputs``; a task whose ``capabilities`` say it cannot be traced,
or cannot be int8-guarded, is refused at once with the reason.

A file is active only if its predictions on the run's dev split (test when there is no dev)
agree with the torch model's for at least ``min_agreement`` of the examples. Parity is judged
on predictions and the task metric, decoded by the same Predictor code path for both backends,
not on raw logits: int8 logits differ from fp32 by ~0.1 and that is fine when the argmax holds.

int8 is tried two ways, fastest first:

- ``dynamic``: ``quantize_dynamic`` on the MatMuls, QInt8 per-channel weights; activations are
  quantized per tensor at run time. The embedding lookup (Gather) stays fp32: quantizing its
  table with one scale changed ~3% more dev sentences for no speed. ~2.4x fp32 on MiniLM.
- ``blockwise``: MatMulNBits with 8-bit weights in blocks of 32 and ``accuracy_level=4``
  (activations quantized per block of 32 at run time): closer to fp32 but only ~1.2x faster.

Per-tensor activation scales move int8 logits by up to ~2.5 (p99 0.2), which changed the tags
of 4% of WNUT-16 dev sentences. So an int8 file is served with a **guard** (``Guard``): every
input whose decision margin (``Task.margin``: the gap between the top two logits at the
positions decoding reads) is below a threshold is run again through the fp32 graph. The
threshold is twice the 99.9th percentile of |int8 - fp32| differences of the logits decoding
reads, on a sample of the training split (dev if it is gone), measured at export; parity is then checked on dev
with the guard on, and the unguarded figures are kept beside it in parity.json.

With ``openvino`` installed, the fp32 file is also checked as OpenVINO runs it (``checks.openvino``,
with the precision its CPU plugin chose): ``--backend openvino`` serves only an export whose check passed.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from runassist.atomic import write_json
from runassist import openvino_runtime, runs
from runassist.errors import RunassistError
from runassist.onnx_runtime import FP32, INT8, Guard, OnnxModel

FORMATS = ("onnx",)
QUANTIZE = ("int8",)
INT8_METHODS = ("dynamic", "blockwise")  # tried in this order; the first that passes parity is kept
OPSET = 17


class _Traceable(torch.nn.Module):
    """Positional inputs in, a tuple of the task's outputs out: the shape ``torch.onnx.export``
    traces best."""

    def __init__(self, task: Any, model: torch.nn.Module, names: Sequence[str], outputs: Sequence[str]):
        super().__init__()
        self.task, self.model, self.names, self.outputs = task, model, list(names), list(outputs)

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.task.forward(self.model, dict(zip(self.names, args)))
        return tuple(getattr(out, name) for name in self.outputs)


def export(run: str | Path, *, fmt: str = "onnx", quantize: str | None = None,
           min_agreement: float = 0.98) -> dict[str, Any]:
    """Export RUN/model to ONNX (and int8), check parity against torch, activate what passes.

    Returns ``files`` (active), ``sizes`` (bytes), ``metric_torch``, ``metric_onnx``,
    ``agreement`` (of the file that would be active: int8 when asked for), ``passed``,
    ``seconds``, and ``checks`` with the figures of every file checked.
    """
    from runassist.predict import Predictor

    started = time.perf_counter()
    if fmt not in FORMATS:
        raise RunassistError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if quantize not in (None, *QUANTIZE):
        raise RunassistError(f"--quantize {quantize!r}: choose one of {', '.join(QUANTIZE)} (or leave it out)")
    if not 0.0 <= min_agreement <= 1.0:
        raise RunassistError(f"--min-agreement {min_agreement}: must be between 0 and 1")
    run = runs.require(Path(run), "config.yaml", "model/task.json")
    reference = Predictor.from_run(run, precision="fp32")  # torch, fp32: the model as trained is the reference
    task = reference.task
    if not task.capabilities.onnx:
        raise RunassistError(f"export: a {task.name} model cannot be exported to ONNX (its task says its forward "
                             "is not a function of the batch alone); serve it with the torch backend")
    if quantize == "int8" and not task.capabilities.int8_guard:
        raise RunassistError(f"export: --quantize int8 needs decision margins to guard int8 answers, which a "
                             f"{task.name} task does not give; export without --quantize")
    if hasattr(reference.model, "peft_config"):
        raise RunassistError("export: the model still has LoRA adapters; train with train.lora.merge=true")
    spec, examples = _parity_split(reference)

    folder = run / "onnx"
    staging = folder / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    metric = reference.task.headline
    torch_preds = reference.predict_examples(examples)
    metric_torch = _metric(reference, examples, torch_preds, metric)

    def check(model: OnnxModel, guard: Guard | None = None, calibration: dict[str, Any] | None = None) -> dict[str, Any]:
        predictor = Predictor(run=run, task=task, model=model, processor=reference.processor,
                              state=reference.state, cfg=reference.cfg, batch_size=reference.batch_size,
                              backend="onnx", guard=guard)
        preds = predictor.predict_examples(examples)
        out = {"metric_onnx": _metric(reference, examples, preds, metric), **task.agreement(torch_preds, preds)}
        out["passed"] = out["agreement"] >= min_agreement
        if guard is not None:
            out["guard"] = {**guard.describe(), **(calibration or {})}
            predictor.guard = None  # the same file without the guard, for the record
            unguarded = task.agreement(torch_preds, predictor.predict_examples(examples))
            out["unguarded"] = {k: v for k, v in unguarded.items() if k != "examples"}
        return out

    # name in onnx/ -> (file in staging, name in onnx/rejected/)
    files: dict[str, tuple[Path, str]] = {}
    checks: dict[str, dict[str, Any]] = {}
    try:
        names = _export_onnx(reference, staging / FP32)
        files[FP32] = (staging / FP32, FP32)
        fp32 = OnnxModel(staging / FP32)  # one session: checked, then the int8 files' calibration and guard
        checks[FP32] = check(fp32)
        if openvino_runtime.available():  # what `--backend openvino` runs: the same file, in OpenVINO
            ov_model = openvino_runtime.OpenVinoModel(staging / FP32)
            checks[openvino_runtime.CHECK] = {"precision": ov_model.precision, **check(ov_model)}
            del ov_model
        if quantize == "int8":
            for method in INT8_METHODS:
                path = staging / f"model.int8.{method}.onnx"
                try:
                    _quantize_int8(staging / FP32, path, method)
                except Exception as exc:  # an onnxruntime without this operator: try the next method
                    checks[f"int8:{method}"] = {"error": f"{type(exc).__name__}: {exc}"[:300], "passed": False}
                    continue
                int8 = OnnxModel(path)
                calibration = _calibrate(reference, fp32, int8)
                checks[f"int8:{method}"] = {"method": method,
                                            **check(int8, Guard(fp32, calibration["threshold"]), calibration)}
                files[f"int8:{method}"] = (path, path.name)
                if checks[f"int8:{method}"]["passed"]:
                    break

        # Replace the previous export as a whole: a stale int8 file must never outlive a new fp32 one.
        for old in (FP32, INT8):
            _remove_model(folder / old)
        shutil.rmtree(folder / "rejected", ignore_errors=True)
        active: list[str] = []
        rejected: list[str] = []
        for key, (path, rejected_name) in files.items():
            target = FP32 if key == FP32 else INT8
            # int8 is only served when the fp32 graph it was made from passed parity too.
            ok = checks[key]["passed"] and (key == FP32 or checks[FP32]["passed"])
            if ok and target not in active:
                _move_model(path, folder / target)
                active.append(target)
            else:
                _move_model(path, folder / "rejected" / rejected_name)
                rejected.append(rejected_name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    int8_keys = [k for k in checks if k.startswith("int8:")]
    if quantize == "int8":
        measured = [k for k in int8_keys if "agreement" in checks[k]]
        passing = [k for k in measured if checks[k]["passed"]]
        # The figures of the int8 file in use, else of the best try.
        wanted = passing[0] if passing else (max(measured, key=lambda k: checks[k]["agreement"]) if measured else None)
        passed = bool(passing) and checks[FP32]["passed"]
    else:
        wanted = FP32
        passed = checks[FP32]["passed"]
    chosen = checks.get(wanted, {}) if wanted else {}
    sizes = {n: _model_bytes(folder / n) for n in active}
    sizes.update({f"rejected/{n}": _model_bytes(folder / "rejected" / n) for n in rejected})
    sizes["torch"] = sum(p.stat().st_size for p in (run / "model").glob("*.safetensors"))
    parity = {
        "split": spec,
        "examples": len(examples),
        "metric": metric,
        "metric_torch": metric_torch,
        "min_agreement": min_agreement,
        "inputs": names,
        "opset": OPSET,
        "active": INT8 if INT8 in active else (FP32 if FP32 in active else None),
        "int8_method": chosen.get("method") if INT8 in active else None,
        # What Predictor(backend="onnx") re-checks the active int8 file with (Guard.load).
        "guard": ({"threshold": chosen["guard"]["threshold"]} if INT8 in active and chosen.get("guard") else None),
        "rejected": rejected,
        "checks": checks,
    }
    write_json(folder / "parity.json", parity)
    result = {
        "files": [str(folder / n) for n in active],
        "sizes": sizes,
        "metric": metric,
        "metric_torch": metric_torch,
        "metric_onnx": chosen.get("metric_onnx"),
        "agreement": chosen.get("agreement"),
        "guard": chosen.get("guard"),
        "passed": passed,
        "seconds": round(time.perf_counter() - started, 2),
        "split": spec,
        "active": parity["active"],
        "int8_method": parity["int8_method"],
        "checks": checks,
    }
    failed = [k for k in checks if not checks[k]["passed"]]
    if failed:
        shares = ", ".join(f"{k} {checks[k]['agreement']:.1%}" if "agreement" in checks[k] else f"{k} failed"
                           for k in failed)
        result["message"] = (f"below --min-agreement {min_agreement:.0%} of identical predictions on {spec}: "
                             f"{shares}; kept in {folder / 'rejected'}, never used by --backend onnx")
    return result


def _quantize_int8(src: Path, dst: Path, method: str) -> None:
    with _quiet():
        if method == "dynamic":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # Per-channel weight scales: per-tensor ones changed 2-3x more dev sentences. MatMuls only:
            # the default also quantizes the embedding table (Gather) with one scale.
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"])
        elif method == "blockwise":
            import onnx
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

            quantizer = MatMulNBitsQuantizer(onnx.load(str(src)), bits=8, block_size=32, is_symmetric=True,
                                             accuracy_level=4)
            quantizer.process()
            quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)
        else:
            raise ValueError(f"unknown int8 method {method!r}")


# -- pieces ---------------------------------------------------------------------------------------

CALIBRATION_EXAMPLES = 512
CALIBRATION_QUANTILE = 0.999


def _calibrate(reference: Any, fp32: OnnxModel, int8: OnnxModel) -> dict[str, Any]:
    """The guard's threshold: twice the 99.9th percentile of |int8 - fp32| over the logits that
    decoding reads (``Task.decision_rows``) on a sample of the training split: a margin between
    two logits shrinks by at most twice the larger of their errors."""
    from runassist.inference import outputs_for

    data = reference.cfg.data
    for spec in dict.fromkeys(s for s in (data.train, data.dev, data.test) if s):
        try:
            examples = reference.task.read(spec)
            break
        except RunassistError:  # the training file may be gone by export time: calibrate on dev
            continue
    else:
        raise RunassistError("export: no split of the run's config can be read to calibrate the int8 guard")
    step = max(1, len(examples) // CALIBRATION_EXAMPLES)
    sample = examples[::step][:CALIBRATION_EXAMPLES]
    task, processor, state = reference.task, reference.processor, reference.state
    features = task.encode(sample, processor, state)
    full = outputs_for(task, fp32, features, processor, state, batch_size=reference.batch_size)
    low = outputs_for(task, int8, features, processor, state, batch_size=reference.batch_size)
    rows = task.decision_rows
    errors = np.concatenate([np.abs(rows(f, a) - rows(f, b)).ravel() for f, a, b in zip(features, full, low)]
                            + [np.zeros(1)])
    error = float(np.quantile(errors, CALIBRATION_QUANTILE))
    return {"threshold": round(2 * error, 4), "calibration_split": spec, "calibration_examples": len(sample),
            "logit_error_p999": round(error, 4), "logit_error_max": round(float(errors.max()), 4)}


def _parity_split(predictor: Any) -> tuple[str, list[Any]]:
    data = predictor.cfg.data
    spec = data.dev or data.test
    if not spec:
        raise RunassistError("export: the run's config has neither data.dev nor data.test to check parity on")
    try:
        examples = predictor.task.read(spec)
    except RunassistError as exc:
        raise RunassistError(f"export: cannot read the parity split {spec}: {exc}") from None
    return spec, examples


def _export_onnx(predictor: Any, path: Path) -> list[str]:
    """Trace the torch model with the task's two probe examples of different sizes; returns the
    input names.

    Two sizes, so the traced batch holds padding: transformers skips the attention mask
    when it is all ones, and a graph traced that way would ignore padding for good.
    """
    model, task = predictor.model, predictor.task
    features = task.encode(task.export_probe(), predictor.processor, predictor.state)
    batch = task.collate([_unlabelled(f) for f in features], predictor.processor)
    mask = batch.get("attention_mask")
    if mask is not None and bool(mask.all()):
        raise RunassistError("export: the tracing batch has no padding; cannot export a padding-aware graph")
    accepted = set(inspect.signature(model.forward).parameters)
    names = [n for n in batch if n in accepted and n not in task.target_keys]
    args = tuple(batch[n] for n in names)
    outputs = dict(task.onnx_outputs)
    # Every input's axis 0 is the batch; its other axes are dynamic where they vary with the input
    # (sequence length), which for token ids and masks is axis 1.
    axes: dict[str, dict[int, str]] = {n: {0: "batch", **({1: "sequence"} if batch[n].ndim == 2 else {})}
                                       for n in names}
    for name, dims in outputs.items():
        axes[name] = {i: d for i, d in enumerate(dims) if d}
    wrapper = _Traceable(task, model, names, list(outputs)).eval()
    # The tracer warns about every Python branch on a shape (transformers' mask helpers); the
    # parity check below is what tells whether the graph is right, so the noise is dropped.
    with torch.no_grad(), _quiet():
        torch.onnx.export(wrapper, args, str(path), input_names=names, output_names=list(outputs),
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False, do_constant_folding=True)
    # torch.onnx.export (dynamo=False) can leave the wrapped module in train mode (dropout on):
    # the parity check must compare against the eval-mode model.
    model.eval()
    return names


@contextlib.contextmanager
def _quiet():
    class _Drop(logging.Filter):  # onnxruntime.quantization logs advice on the root logger
        def filter(self, record: logging.LogRecord) -> bool:
            return False

    root, drop = logging.getLogger(), _Drop()
    root.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeFilter(drop)


def _metric(predictor: Any, examples: Sequence[Any], predictions: Sequence[Any], metric: str) -> float | None:
    scores = predictor.task.score(examples, predictions, predictor.state)
    value = scores.get(metric)
    return round(float(value), 6) if isinstance(value, (int, float)) else None


def _unlabelled(feature: Any) -> Any:
    from dataclasses import replace

    return replace(feature, target=None)


def _model_files(path: Path) -> list[Path]:
    """The graph and any external-data files torch/onnx wrote beside it (models over 2 GB)."""
    return [path, *sorted(path.parent.glob(path.name + ".data")), *sorted(path.parent.glob(path.name + "_data"))]


def _move_model(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    for f in _model_files(src):
        if f.exists():
            f.replace(dst.parent / f.name.replace(src.name, dst.name, 1))


def _remove_model(path: Path) -> None:
    for f in _model_files(path):
        f.unlink(missing_ok=True)


def _model_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in _model_files(path) if f.exists())

