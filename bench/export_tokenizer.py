"""The tokenizer-inclusive ONNX file (`runassist export RUN --with-tokenizer`) run from Node.js
against `runassist predict` on the same raw texts.

    .venv/bin/python bench/export_tokenizer.py --run runs/<a NER run>   # 2,000 WNUT-16 texts
    .venv/bin/python bench/export_tokenizer.py                          # trains a short MiniLM run first

Agreement, not accuracy, is measured, so a short run is enough (300 steps by default: it finds
entities in most tweets). The texts are bench/predict_speed.py's: WNUT-16 sentences, words joined
by spaces. Both sides are the command-line tools a user runs: `runassist predict RUN texts.txt -o
out.jsonl` (at the run's own precision, and with --precision fp32) and `node
runassist/js/ner_with_tokenizer.js` (onnxruntime-node, one thread). "Identical" compares each
text's entities as (label, start, end). Prints a summary, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, log  # noqa: E402  (sets the offline environment first)

import torch  # noqa: E402


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return "unknown"


def predict_cli(run: Path, source: Path, out: Path, precision: str, threads: int) -> tuple[list, float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "runassist", "predict", str(run), str(source), "-o", str(out),
                           "--precision", precision, "--quiet"],
                          capture_output=True, text=True, cwd=REPO, check=False)
    if done.returncode != 0:
        raise SystemExit(f"runassist predict failed: {done.stderr[-2000:]}")
    rows = [[(e["label"], e["start"], e["end"]) for e in json.loads(line)["entities"]]
            for line in out.read_text(encoding="utf-8").splitlines()]
    return rows, time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a NER run (default: train a short MiniLM run)")
    parser.add_argument("--n", type=int, default=2000, help="number of texts")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(REPO / "bench"))
    from predict_speed import short_run, texts_for

    from runassist.export_text import export_with_tokenizer
    from runassist.node_js import node_entities

    work = Path(tempfile.mkdtemp(prefix="export-tokenizer-"))
    run = args.run or short_run(work, max_steps=args.train_steps, threads=args.threads)
    log(f"run {run}; exporting with the tokenizer ...")
    info = export_with_tokenizer(run)
    log(f"export: {info['seconds']} s, {info['bytes'] / 1e6:.1f} MB, dev parity {info['parity']['agreement']:.2%}")
    texts, _ = texts_for(args.n)
    source = work / "texts.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    model = run / "onnx" / "model.with_tokenizer.onnx"
    log(f"{len(texts)} texts: node ...")
    node_rows, timing = node_entities(model, texts, threads=args.threads)
    node = [[(e["label"], e["start"], e["end"]) for e in row] for row in node_rows]
    result = {"bench": "export_tokenizer", "run": str(run), "texts": len(texts), "threads": args.threads,
              "cpu": cpu_name(), "export_seconds": info["seconds"], "model_mb": round(info["bytes"] / 1e6, 1),
              "dev_parity": info["parity"]["agreement"], "node": {k: round(v, 2) for k, v in timing.items()},
              "entities_node": sum(map(len, node)), "vs_predict": {}}
    from runassist.predict import Predictor

    trained = Predictor.from_run(run).precision
    for precision in dict.fromkeys(["auto", "fp32"]):
        log(f"runassist predict --precision {precision} ...")
        rows, seconds = predict_cli(run, source, work / f"predict-{precision}.jsonl", precision, args.threads)
        same = [a == b for a, b in zip(node, rows)]
        differ = [i for i, s in enumerate(same) if not s]
        result["vs_predict"][precision if precision != "auto" else f"auto ({trained})"] = {
            "identical": sum(same), "share": round(sum(same) / len(texts), 4), "entities": sum(map(len, rows)),
            "predict_seconds_incl_start": round(seconds, 1),
            "examples": [{"text": texts[i], "node": node[i], "predict": rows[i]} for i in differ[:3]]}
    # Texts longer than the model's max_length sub-tokens: predict reads them in windows, the graph in one pass.
    from runassist.data.words import tokenize_with_offsets

    reference = Predictor.from_run(run)
    room = reference.cfg.model.max_length - 2
    result["texts_over_max_length"] = sum(
        len(reference.processor(tokenize_with_offsets(t)[0], is_split_into_words=True,
                                add_special_tokens=False)["input_ids"]) > room for t in texts)
    print(json.dumps(result, ensure_ascii=False, indent=1))
    print(json.dumps(result, ensure_ascii=False))
    return result


if __name__ == "__main__":
    main()
