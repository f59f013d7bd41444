"""Prediction throughput: runassist's Predictor (torch and ONNX int8 backends) against
``transformers.pipeline("token-classification", aggregation_strategy="first")`` on the same texts.

    .venv/bin/python bench/predict_speed.py --run runs/<a NER run>     # 2,000 texts
    .venv/bin/python bench/predict_speed.py --quick                    # trains a short run first; 500 texts

The texts are WNUT-16 sentences, words joined by spaces: test, dev, then train, repeated to
--n; entity F1 against gold is given on the held-out (test + dev) ones. Contestants run in
rounds over chunks of the texts (A B C D, A B C D, ...) in this one process, so a load spike on
the machine hits all of them alike; each is warmed up first. "Identical" compares the
(label, start, end) character spans of each text's entities.
Prints a table, then one JSON line (the last line of stdout).
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

from common import DEMO, log  # noqa: E402  (sets the offline environment first)

import torch  # noqa: E402


def short_run(out: Path, *, max_steps: int, threads: int) -> Path:
    from runassist.tasks import load_config
    from runassist.train.run import train

    cfg = load_config(DEMO, [f"output.dir={out / 'runs'}", f"train.max_steps={max_steps}", f"train.threads={threads}",
                             "data.test=null"])
    with contextlib.redirect_stdout(sys.stderr):
        return train(cfg, progress=False).run


def texts_for(n: int) -> tuple[list[str], list[set]]:
    """n texts (held-out sentences first) and, for the held-out ones, their gold entity spans."""
    from runassist.assets import read_alias
    from runassist.data.tags import spans_from_iob2

    held_out = [ex for split in ("test", "dev") for ex in read_alias(f"wnut16:{split}")]
    sentences = held_out + read_alias("wnut16:train")
    texts, gold = [], []
    for i in range(n):
        ex = sentences[i % len(sentences)]
        texts.append(" ".join(ex.tokens))
        if i < len(held_out):
            starts = [sum(len(t) + 1 for t in ex.tokens[:k]) for k in range(len(ex.tokens))]
            gold.append({(label, starts[a], starts[b - 1] + len(ex.tokens[b - 1]))
                         for a, b, label in spans_from_iob2(ex.tags)})
    return texts, gold


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a trained NER run (default: train a short one first)")
    parser.add_argument("--quick", action="store_true", help="500 texts and 2 rounds instead of 2,000 and 4")
    parser.add_argument("--n", type=int, help="number of texts (default 2000, 500 with --quick)")
    parser.add_argument("--rounds", type=int, help="chunks the texts are cut into, each run by every contestant")
    parser.add_argument("--threads", type=int, help="default: the free cores (runassist.env)")
    parser.add_argument("--batch-size", type=int, default=64, help="runassist's batch size (its default)")
    parser.add_argument("--no-unguarded", action="store_true", help="skip the int8 contestant without its guard")
    parser.add_argument("--train-steps", type=int, default=150, help="steps of the short run made without --run")
    parser.add_argument("--reexport", action="store_true", help="export again even if RUN/onnx has an int8 file")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    from runassist import env
    from runassist.export import export
    from runassist.onnx_runtime import OnnxModel
    from runassist.predict import Predictor

    hf_logging.set_verbosity_error()
    facts = env.collect(check_hub=False)
    threads = args.threads or env.choose_threads(facts)
    torch.set_num_threads(threads)
    n = args.n or (500 if args.quick else 2000)
    rounds = args.rounds or (2 if args.quick else 4)
    load_before = os.getloadavg()[0]
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-predict-"))

    run = args.run
    if run is None:
        log(f"no --run: training a short one ({args.train_steps} steps) under {out} ...")
        run = short_run(out, max_steps=args.train_steps, threads=threads)
    exported = None
    int8 = run / "onnx" / "model.int8.onnx"
    rejected = sorted((run / "onnx" / "rejected").glob("model.int8.*.onnx"))  # as export names them
    if args.reexport or not (int8.exists() or rejected):
        log("exporting to ONNX (int8) with the parity check ...")
        exported = export(run, quantize="int8")
        log(f"export: passed={exported['passed']} agreement={exported['agreement']} "
            f"({exported['seconds']}s)")
        rejected = sorted((run / "onnx" / "rejected").glob("model.int8.*.onnx"))
    accepted = int8.exists()
    if not accepted:
        if not rejected:
            raise SystemExit(f"{run}: the export made no int8 file (see {run / 'onnx' / 'parity.json'})")
        # Measured anyway (unguarded), so the figures exist; the JSON says `--backend onnx` would not use it.
        int8 = rejected[0]
        log(f"note: {int8.name} failed its parity check (see {run / 'onnx' / 'parity.json'}); measuring it anyway")

    texts, gold = texts_for(n)
    log(f"{n} texts, {rounds} rounds, threads={threads}, load={load_before:.2f}; loading contestants ...")
    pipe = pipeline("token-classification", model=str(run / "model"), aggregation_strategy="first", device=-1)
    torch_pred = Predictor.from_run(run, batch_size=args.batch_size, threads=threads, precision="fp32")
    bf16_pred = Predictor.from_run(run, batch_size=args.batch_size, threads=threads, precision="bf16")
    def onnx_predictor(path: Path, guard=None) -> Predictor:
        return Predictor(run=run, task=torch_pred.task, model=OnnxModel(path, threads=threads), guard=guard,
                         processor=torch_pred.processor, state=torch_pred.state, cfg=torch_pred.cfg,
                         batch_size=args.batch_size, backend="onnx")

    fp32_pred = onnx_predictor(run / "onnx" / "model.onnx")
    if accepted:  # what `--backend onnx` serves: the int8 file with its guard
        onnx_pred = Predictor.from_run(run, backend="onnx", batch_size=args.batch_size, threads=threads)
        assert onnx_pred.model.path == int8
        if onnx_pred.guard is None:
            log("note: this export predates the int8 guard; pass --reexport to measure int8 as served now")
    else:
        onnx_pred = onnx_predictor(int8)
    bare_pred = onnx_predictor(int8)  # the same int8 file, no guard

    def spans_pipeline(outputs):
        return [sorted((e["entity_group"], int(e["start"]), int(e["end"])) for e in o) for o in outputs]

    def spans_runassist(outputs):
        return [sorted((e["label"], e["start"], e["end"]) for e in o["entities"]) for o in outputs]

    contestants = {
        "pipeline": lambda xs: spans_pipeline(pipe(xs)),  # the pipeline's default: batch_size 1
        "pipeline_b64": lambda xs: spans_pipeline(pipe(xs, batch_size=64)),
        "runassist_torch": lambda xs: spans_runassist(torch_pred.predict(xs)),
        # Not a target contestant: bf16 autocast, for CPUs with native bf16 (avx512_bf16 / AMX).
        "runassist_torch_bf16": lambda xs: spans_runassist(bf16_pred.predict(xs)),
        "runassist_onnx_fp32": lambda xs: spans_runassist(fp32_pred.predict(xs)),
        "runassist_onnx_int8": lambda xs: spans_runassist(onnx_pred.predict(xs)),
        "runassist_onnx_int8_unguarded": lambda xs: spans_runassist(bare_pred.predict(xs)),
    }
    if args.no_unguarded:
        del contestants["runassist_onnx_int8_unguarded"]
    seconds = {k: 0.0 for k in contestants}
    outputs: dict[str, list] = {k: [] for k in contestants}
    for name, fn in contestants.items():  # warm-up: first calls allocate, pick kernels, build caches
        fn(texts[:32])
    if onnx_pred.guard is not None:
        onnx_pred.guard.seen = onnx_pred.guard.rechecked = 0
    size = -(-n // rounds)
    for r in range(rounds):
        chunk = texts[r * size:(r + 1) * size]
        for name, fn in contestants.items():
            t = time.perf_counter()
            got = fn(chunk)
            seconds[name] += time.perf_counter() - t
            outputs[name] += got
        log(f"round {r + 1}/{rounds}: " + ", ".join(f"{k} {len(outputs[k]) / seconds[k]:.1f}/s" for k in seconds))

    guard_stats = onnx_pred.guard.describe() if onnx_pred.guard is not None else None

    # Untimed: runassist given the pipeline's own words (the tokenizer's pre-tokenizer split),
    # so identity with the pipeline covers every text and measures model + precision alone.
    pre = pipe.tokenizer.backend_tokenizer.pre_tokenizer
    split = [pre.pre_tokenize_str(t) for t in texts]
    given_words = {}
    for name, predictor in (("runassist_torch", torch_pred), ("runassist_onnx_int8", onnx_pred)):
        got = predictor.predict([[w for w, _ in words] for words in split])
        given_words[name] = [sorted((e["label"], words[e["word_start"]][1][0], words[e["word_end"] - 1][1][1])
                                    for e in o["entities"]) for o, words in zip(got, split)]

    def same(a: str, b: str, subset: list[int] | None = None) -> float:
        idx = range(n) if subset is None else subset
        return round(sum(outputs[a][i] == outputs[b][i] for i in idx) / max(len(idx), 1), 4)

    # runassist splits raw text into corpus-style words ("@user", "kayden_kross"); the pipeline
    # into the tokenizer's words ("@", "user"; "kayden", "_", "kross"). Where the two disagree an
    # entity's span can differ with identical logits, so identity with the pipeline is also
    # given on the texts where both see the same words: that part measures the model.
    same_words = [i for i, t in enumerate(texts) if _words_agree(t, pipe.tokenizer)]

    rows = {k: {"seconds": round(seconds[k], 2), "texts_per_second": round(n / seconds[k], 1)} for k in contestants}
    best_pipe = max(("pipeline", "pipeline_b64"), key=lambda k: rows[k]["texts_per_second"])
    for k in rows:
        rows[k]["vs_pipeline"] = round(rows[k]["texts_per_second"] / rows["pipeline"]["texts_per_second"], 2)
        rows[k]["vs_best_pipeline"] = round(rows[k]["texts_per_second"] / rows[best_pipe]["texts_per_second"], 2)
        rows[k]["identical_to_pipeline"] = same(k, "pipeline")
        rows[k]["identical_to_pipeline_same_words"] = same(k, "pipeline", same_words)
        if k.startswith("runassist_") and k != "runassist_torch":
            rows[k]["identical_to_torch"] = same(k, "runassist_torch")
        rows[k]["heldout_f1"] = _f1(outputs[k][:len(gold)], gold)
    for k, spans in given_words.items():
        rows[k]["identical_to_pipeline_given_its_words"] = round(
            sum(a == b for a, b in zip(spans, outputs["pipeline"])) / n, 4)
    if guard_stats:
        rows["runassist_onnx_int8"]["guard"] = guard_stats
    words_share = round(len(same_words) / n, 4)
    onnx, torch_row = rows["runassist_onnx_int8"], rows["runassist_torch"]
    result = {
        "bench": "predict_speed", "quick": args.quick, "texts": n, "rounds": rounds, "threads": threads,
        "batch_size": args.batch_size, "run": str(run), "texts_same_words": words_share, "heldout_texts": len(gold),
        "entities": sum(len(o) for o in outputs["pipeline"]),
        "load_avg": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "int8_accepted": accepted, "int8_file": str(int8),
        "parity": _parity(run),
        "export": None if exported is None else {k: exported[k] for k in
                                                  ("agreement", "metric_torch", "metric_onnx", "passed", "seconds",
                                                   "sizes")},
        "contestants": rows, "best_pipeline": best_pipe,
        "target": {
            "onnx_speedup_min": 3.0, "onnx_identical_min": 0.98,
            # int8 as served, against the pipeline's speed (its default batch size, and its best);
            # identical to the pipeline when given the pipeline's words, and to the same model
            # in fp32 on runassist's own words.
            "met": onnx["vs_pipeline"] >= 3.0 and onnx["identical_to_pipeline_given_its_words"] >= 0.98
                   and onnx["identical_to_torch"] >= 0.98 and torch_row["vs_pipeline"] >= 1.0,
            "met_vs_best_pipeline": onnx["vs_best_pipeline"] >= 3.0
                                    and onnx["identical_to_pipeline_given_its_words"] >= 0.98
                                    and onnx["identical_to_torch"] >= 0.98 and torch_row["vs_best_pipeline"] >= 1.0,
        },
    }
    print_table(result)
    print(json.dumps(result))
    return result


def _f1(predicted: list, gold: list[set]) -> float | None:
    """Entity F1 (exact label and character span) of predicted span lists against gold sets."""
    if not gold:
        return None
    tp = fp = fn = 0
    for pred, truth in zip(predicted, gold):
        pred = set(map(tuple, pred))
        tp, fp, fn = tp + len(pred & truth), fp + len(pred - truth), fn + len(truth - pred)
    return round(2 * tp / max(2 * tp + fp + fn, 1), 4)


def _words_agree(text: str, tokenizer) -> bool:
    from runassist.data.words import tokenize_with_offsets

    ours = tokenize_with_offsets(text)[1]
    theirs = [span for _, span in tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)]
    return [tuple(o) for o in ours] == [tuple(t) for t in theirs]


def _parity(run: Path) -> dict | None:
    path = run / "onnx" / "parity.json"
    if not path.exists():
        return None
    checks = json.loads(path.read_text())["checks"]
    return {name: {k: c.get(k) for k in ("agreement", "token_agreement", "metric_onnx")} for name, c in checks.items()}


def print_table(r: dict) -> None:
    lines = [f"predict speed: {r['texts']} WNUT-16 texts, {r['threads']} thread(s), runassist batch {r['batch_size']}; "
             f"load avg {r['load_avg']['before']} -> {r['load_avg']['after']}; {r['entities']} entities (pipeline)",
             f"{'':30}{'texts/s':>9}{'vs pipe':>9}{'vs best':>9}{'same as pipe':>14}{'(same words)':>14}"
             f"{'same as torch':>15}{'held-out F1':>13}"]
    for name, row in r["contestants"].items():
        to_torch = row.get("identical_to_torch")
        lines.append(f"{name:30}{row['texts_per_second']:>9}{row['vs_pipeline']:>8}x{row['vs_best_pipeline']:>8}x"
                     f"{row['identical_to_pipeline']:>14.2%}{row['identical_to_pipeline_same_words']:>14.2%}"
                     f"{'' if to_torch is None else f'{to_torch:.2%}':>15}{row['heldout_f1']!s:>13}")
    guard = r["contestants"]["runassist_onnx_int8"].get("guard")
    if guard:
        lines.append(f"int8 guard: {guard['rechecked']} of {guard['seen']} windows ({guard['rechecked_share']:.1%}) "
                     f"re-run in fp32 (margin below {guard['threshold']})")
    lines.append(f"(same words: the {r['texts_same_words']:.1%} of texts where runassist's word split equals "
                 f"the tokenizer's pre-tokenizer split)")
    if r["parity"]:
        lines.append("export parity on dev (sentences / words identical to torch): " + ", ".join(
            f"{k} {v['agreement']:.1%} / {v['token_agreement']:.2%}" for k, v in r["parity"].items())
            + ("" if r["int8_accepted"] else "  -> int8 REJECTED by the parity check (measured anyway)"))
    lines.append(f"held-out F1: entity F1 against gold on the first {r['heldout_texts']} texts (WNUT-16 test + dev); "
                 f"best pipeline setting: {r['best_pipeline']}")
    c = r["contestants"]
    lines.append("identical to the pipeline when given its words (all texts): runassist torch "
                 f"{c['runassist_torch']['identical_to_pipeline_given_its_words']:.2%}, onnx int8 "
                 f"{c['runassist_onnx_int8']['identical_to_pipeline_given_its_words']:.2%}")
    t = r["target"]
    lines.append(f"target (onnx int8 as served >= 3x the pipeline; >= 98% identical to the pipeline given its words "
                 f"and to torch fp32; torch >= 1x): {'MET' if t['met'] else 'NOT MET'}, against the pipeline's best "
                 f"batch size {'MET' if t['met_vs_best_pipeline'] else 'NOT MET'}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
