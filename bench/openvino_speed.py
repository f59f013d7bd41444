"""OpenVINO against ONNX Runtime for runassist's int8 prediction path, on one exported NER run.

    .venv/bin/python bench/openvino_speed.py --run runs/<a NER run exported with --quantize int8>

Needs ``openvino`` (and ``nncf`` for its own int8); neither is a runassist dependency. The
question (issue 18): is OpenVINO at least 1.3x the texts/s of ONNX Runtime int8 *as served*
(``--backend onnx``: the int8 file with its fp32 guard) at the same parity (entities identical
to torch fp32 on at least as many texts)? Contestants, all through runassist's Predictor (same
words, batches of 64, same decoding), in rounds over chunks of the texts (A B C ..., A B C ...):

- ``ort_int8``: ``Predictor.from_run(RUN, backend="onnx")``, guarded; ``ort_int8_unguarded``;
- ``ov_fp32_f32`` / ``ov_fp32_bf16``: OpenVINO's CPU plugin on ``onnx/model.onnx`` with
  ``INFERENCE_PRECISION_HINT`` f32 / bf16 (bf16 is its default on a CPU with AMX or avx512_bf16);
- ``ov_int8_ort``: OpenVINO reading ONNX Runtime's int8 file (dynamic QDQ MatMuls);
- ``ov_int8_nncf``: NNCF post-training quantization of the fp32 graph (static int8,
  ``ModelType.TRANSFORMER``, calibrated on training sentences), unguarded and
  ``ov_int8_nncf_guarded``: with a guard made the way the exporter makes one (its own threshold,
  ``export._calibrate``; re-runs in OpenVINO fp32).

"Identical" compares each text's entities as (label, start, end) character spans with torch fp32
(``Predictor`` eager, untimed). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import log  # sets the offline environment (before transformers is imported)


def nncf_int8(fp32_path: Path, reference, n: int):
    """NNCF post-training int8 of the fp32 graph, calibrated on n training sentences (one at a time)."""
    import nncf
    import openvino as ov

    task, processor, state = reference.task, reference.processor, reference.state
    examples = task.read(reference.cfg.data.train) if _readable(reference.cfg.data.train) else task.read(
        reference.cfg.data.dev)
    step = max(1, len(examples) // n)
    features = task.encode(examples[::step][:n], processor, state)
    names = [i.get_any_name() for i in ov.Core().read_model(str(fp32_path)).inputs]

    def feed(feature):
        batch = task.collate([feature], processor)
        ids = batch["input_ids"]
        return {k: (batch[k] if k in batch else torch.zeros_like(ids)).numpy().astype(np.int64) for k in names}

    model = ov.Core().read_model(str(fp32_path))
    return nncf.quantize(model, nncf.Dataset(features, feed), model_type=nncf.ModelType.TRANSFORMER,
                         subset_size=len(features))


def _readable(spec) -> bool:
    if not spec:
        return False
    return ":" in str(spec) or Path(spec).exists()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a NER run exported with --quantize int8")
    parser.add_argument("--n", type=int, default=2000, help="texts (WNUT-16 sentences, as predict_speed.py)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calibration", type=int, default=300, help="sentences NNCF calibrates on")
    parser.add_argument("--skip", default="", help="comma-separated contestants to leave out")
    args = parser.parse_args(argv)

    import openvino as ov
    from predict_speed import texts_for

    from runassist.export import _calibrate
    from runassist.onnx_runtime import FP32, INT8, Guard, OnnxModel
    from runassist.openvino_runtime import OpenVinoModel
    from runassist.predict import Predictor

    def ov_model(path, *, precision):
        return OpenVinoModel(path, threads=args.threads, precision=precision)

    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    run, folder = args.run, args.run / "onnx"
    if not (folder / INT8).is_file():
        raise SystemExit(f"{folder / INT8}: missing; run `runassist export {run} --quantize int8` first")
    texts, _ = texts_for(args.n)
    skip = set(args.skip.split(","))
    with contextlib.redirect_stdout(sys.stderr):
        reference = Predictor.from_run(run, precision="fp32", threads=args.threads)
        served = Predictor.from_run(run, backend="onnx", threads=args.threads)

        def predictor(model, guard=None) -> Predictor:
            return Predictor(run=run, task=served.task, model=model, processor=served.processor, state=served.state,
                             cfg=served.cfg, batch_size=64, backend="onnx", guard=guard)

        fp32_graph, int8_graph = folder / FP32, folder / INT8
        ov_fp32 = ov_model(fp32_graph, precision="f32")
        contestants = {"ort_int8": served,
                       "ort_int8_unguarded": predictor(OnnxModel(folder / INT8, threads=args.threads)),
                       "ov_fp32_f32": predictor(ov_fp32),
                       "ov_fp32_bf16": predictor(ov_model(fp32_graph, precision="bf16")),
                       "ov_int8_ort": predictor(ov_model(int8_graph, precision="f32"))}
        nncf_info = None
        if "ov_int8_nncf" not in skip and _version("nncf") is None:
            log("nncf is not installed (pip install nncf==3.4.0): skipping the NNCF int8 contestants")
            skip.add("ov_int8_nncf")
        if "ov_int8_nncf" not in skip:
            t = time.perf_counter()
            quantized = Path(tempfile.mkdtemp(prefix="ov-nncf-")) / "model.int8.xml"
            ov.save_model(nncf_int8(folder / FP32, reference, args.calibration), str(quantized))
            nncf_s = time.perf_counter() - t
            ov_nncf = ov_model(quantized, precision="f32")
            calibration = _calibrate(reference, ov_fp32, ov_nncf)
            nncf_info = {"quantize_seconds": round(nncf_s, 1), "calibration_sentences": args.calibration,
                         "guard": calibration}
            contestants["ov_int8_nncf"] = predictor(ov_nncf)
            contestants["ov_int8_nncf_guarded"] = predictor(ov_nncf, Guard(ov_fp32, calibration["threshold"]))
            contestants["ov_int8_nncf_bf16"] = predictor(ov_model(quantized, precision="bf16"))
        for name in skip & set(contestants):
            del contestants[name]
        log(f"{len(texts)} texts, {args.rounds} rounds, {args.threads} thread(s); torch fp32 reference ...")
        truth = [_spans(o) for o in reference.predict(texts)]
        for p in contestants.values():
            p.predict(texts[:64])  # warm-up
            if p.guard is not None:
                p.guard.seen = p.guard.rechecked = 0
        seconds = {k: 0.0 for k in contestants}
        outputs: dict[str, list] = {k: [] for k in contestants}
        size = -(-len(texts) // args.rounds)
        for r in range(args.rounds):
            chunk = texts[r * size:(r + 1) * size]
            for name, p in contestants.items():
                t = time.perf_counter()
                got = p.predict(chunk)
                seconds[name] += time.perf_counter() - t
                outputs[name] += [_spans(o) for o in got]
            log(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{k} {len(outputs[k]) / seconds[k]:.1f}/s" for k in contestants))

    base = len(texts) / seconds["ort_int8"]
    rows = {}
    for name, p in contestants.items():
        speed = len(texts) / seconds[name]
        row = {"texts_per_second": round(speed, 1), "vs_ort_int8": round(speed / base, 3),
               "identical_to_torch_fp32": round(sum(a == b for a, b in zip(outputs[name], truth)) / len(texts), 4)}
        if isinstance(p.model, OpenVinoModel):
            row["inference_precision_hint"] = p.model.precision
        if p.guard is not None:
            row["guard"] = p.guard.describe()
        rows[name] = row
    served_identity = rows["ort_int8"]["identical_to_torch_fp32"]
    winners = [k for k, r in rows.items() if k.startswith("ov_") and r["vs_ort_int8"] >= 1.3
               and r["identical_to_torch_fp32"] >= served_identity]
    result = {"bench": "openvino_speed", "texts": len(texts), "rounds": args.rounds, "threads": args.threads,
              "run": str(run), "versions": {"openvino": ov.__version__, "onnxruntime": _version("onnxruntime"),
                                            "nncf": _version("nncf"), "torch": torch.__version__},
              "load_avg": {"before": round(load, 2), "after": round(os.getloadavg()[0], 2)},
              "nncf": nncf_info, "contestants": rows,
              "adopt": {"rule": ">= 1.3x ort_int8 texts/s and identical_to_torch_fp32 >= ort_int8's",
                        "winners": winners}}
    print_table(result)
    print(json.dumps(result))
    return result


def _spans(o: dict) -> list:
    return sorted((e["label"], e["start"], e["end"]) for e in o["entities"])


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def print_table(r: dict) -> None:
    print(f"openvino vs onnxruntime: {r['texts']} WNUT-16 texts, {r['threads']} thread(s), "
          f"load avg {r['load_avg']['before']} -> {r['load_avg']['after']}; {r['versions']}")
    print(f"{'':24}{'texts/s':>9}{'vs ort int8':>13}{'same as torch fp32':>20}  hint / guard")
    for name, row in r["contestants"].items():
        guard = row.get("guard")
        note = row.get("inference_precision_hint", "")
        if guard:
            note += f" guard re-ran {guard['rechecked']}/{guard['seen']} (margin < {guard['threshold']})"
        print(f"{name:24}{row['texts_per_second']:>9}{row['vs_ort_int8']:>12}x"
              f"{row['identical_to_torch_fp32']:>20.2%}  {note}")
    print(f"adopt ({r['adopt']['rule']}): {r['adopt']['winners'] or 'none'}")


if __name__ == "__main__":
    main()
