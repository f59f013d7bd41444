"""torch.compile against eager for runassist's training steps and its predictor, on the demo's
model (the packaged MiniLM with a token-classification head) and WNUT-16.

    .venv/bin/python bench/compile.py train --precisions bf16,fp32 --modes compile,dynamic
    .venv/bin/python bench/compile.py predict --run runs/<a NER run> --precisions bf16,fp32

``train``: what runassist really runs per step (``runassist.train.loop.train_steps``): random
batches of 16 packed into rows (``train.packing.pack``: a 4-D bool mask, position ids), the
engine's autocast and attention kernel (``Engine.training_attention``: the math SDPA kernel for
bf16 rows up to 192), the loss, backward, grad clipping and a fused AdamW step. Each contestant
is its own model, from the same weights, fed the same batches; contestants take turns in rounds
(eager, compiled, eager, compiled ...) so a load spike on the machine hits all of them.
Reported: real tokens/s after warm-up, the warm-up (compile) seconds, recompiles, and whether
compiled loss and gradients match eager on the same weights and batches (dropout off there,
since eager and Inductor draw different dropout masks).

``predict``: ``Predictor.from_run(RUN)`` as ``runassist predict`` uses it (length-sorted batches
of 64), eager against the same model compiled (``dynamic=True``: every batch has another
length), texts/s after warm-up and identical entities.

Prints a table, then one JSON line (the last line of stdout). Threads: 1 unless --threads.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import DEMO, log  # sets the offline environment (before transformers is imported)

MODES = ("eager", "compile", "dynamic")  # compile: torch.compile(model); dynamic: ... dynamic=True


def compiled(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    if mode == "eager":
        return model
    return torch.compile(model, dynamic=True if mode == "dynamic" else None)


def recompiles() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"].get("unique_graphs", 0))


# -- training -------------------------------------------------------------------------------------

def training_setup(threads: int):
    from runassist.assets import resolve_model
    from runassist.tasks import load_config, make_task
    from runassist.tasks.base import TaskState
    from runassist.train import packing
    from runassist.train.run import read_splits

    cfg = load_config(DEMO, [f"train.threads={threads}", "data.test=null"])
    task = make_task(cfg)
    source = resolve_model(cfg.model.source)
    splits = read_splits(task, cfg)
    processor = task.load_processor(source)
    state = TaskState(labels=task.label_set(splits.train), extras=task.initial_extras(splits.train))
    features = task.encode(splits.train, processor, state)
    torch.manual_seed(0)
    model = task.build_model(source, state)
    _, why, settings = packing.choose("auto", packs=task.capabilities.packs, model=model, features=features,
                                      collate=lambda fs: task.collate(fs, processor), forward=task.forward,
                                      pad_id=processor.pad_token_id)
    if not settings:
        raise SystemExit(f"the model does not pack ({why}): not what runassist trains with")
    return cfg, task, processor, features, model.state_dict(), settings, source, state


def train_contestant(*, cfg, task, processor, features, weights, settings, source, state, precision: str,
                     mode: str, dropout: float | None = None):
    """A generator of StepInfo from runassist's own loop, for a fresh model with ``weights``."""
    from runassist.train import packing
    from runassist.train.engine import Engine
    from runassist.train.loop import train_steps
    from runassist.train.setup import build_optimizer, build_scheduler

    model = task.build_model(source, state, dropout=dropout)
    model.load_state_dict(weights)
    engine = Engine(precision=precision, bf16_fast_cpu=True)
    optimizer = build_optimizer(model, cfg.train, engine.device)
    scheduler = build_scheduler(optimizer, cfg.train, 10_000)
    model = compiled(model, mode)
    pad_id = processor.pad_token_id
    return train_steps(model=model, optimizer=optimizer, scheduler=scheduler, engine=engine, features=features,
                       collate=lambda fs, rng: packing.pack(fs, pad_id, **settings), forward=task.forward,
                       loss_fn=lambda outputs, batch: task.loss(outputs, batch, None),
                       batch_size=cfg.train.batch_size, grad_accum=1, grad_clip=cfg.train.grad_clip,
                       seed=cfg.train.seed, batching="packed", total_steps=10_000)


def grad_parity(*, task, processor, features, weights, settings, source, state, precision: str, mode: str,
                batches: int = 3) -> dict:
    """Loss and gradients of eager and compiled on the same weights and the same packed batches
    (dropout off), each batch from a fresh zero_grad: the largest relative differences."""
    from runassist.train import packing
    from runassist.train.engine import Engine

    engine = Engine(precision=precision, bf16_fast_cpu=True)
    eager = task.build_model(source, state, dropout=0.0)
    eager.load_state_dict(weights)
    twin = copy.deepcopy(eager)
    fast = compiled(twin, mode)
    eager.train(), twin.train()
    gen = torch.Generator().manual_seed(1)
    worst_loss = worst_grad = 0.0
    cosines = []
    for b in range(batches):
        idx = torch.randperm(len(features), generator=gen)[:16].tolist()
        batch = packing.pack([features[i] for i in idx], processor.pad_token_id, **settings)
        losses, grads = [], []
        for model, run in ((eager, eager), (twin, fast)):
            model.zero_grad(set_to_none=True)
            with engine.autocast()(), engine.training_attention(batch["input_ids"].shape[-1]):
                outputs = task.forward(run, batch)
            loss = task.loss(outputs, batch, None)
            loss.backward()
            losses.append(float(loss.detach()))
            grads.append(torch.cat([p.grad.flatten().double() for p in model.parameters() if p.grad is not None]))
        worst_loss = max(worst_loss, abs(losses[0] - losses[1]) / abs(losses[0]))
        worst_grad = max(worst_grad, float((grads[0] - grads[1]).norm() / grads[0].norm()))
        cosines.append(float(torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)))
    return {"loss_rel_diff_max": float(f"{worst_loss:.3g}"), "grad_rel_diff_max": float(f"{worst_grad:.3g}"),
            "grad_cosine_min": round(min(cosines), 6)}


def bench_train(args) -> dict:
    setup = training_setup(args.threads)
    cfg, task, processor, features, weights, settings, source, state = setup
    common = {"cfg": cfg, "task": task, "processor": processor, "features": features, "weights": weights,
              "settings": settings, "source": source, "state": state}
    rows = {}
    for precision in args.precisions:
        names = [f"{precision}/{m}" for m in ("eager", *args.modes)]
        log(f"training, {precision}: {', '.join(names)}; warm-up {args.warmup} steps, "
            f"{args.rounds} rounds of {args.steps} steps")
        gens = {n: train_contestant(**common, precision=precision, mode=n.split("/")[1]) for n in names}
        stats = {n: {"warmup_s": 0.0, "seconds": 0.0, "tokens": 0, "steps": 0, "losses": []} for n in names}
        for n, gen in gens.items():  # warm-up: the first steps compile (and recompile as shapes change)
            before = recompiles()
            t = time.perf_counter()
            first = None
            for i in range(args.warmup):
                info = next(gen)
                stats[n]["losses"].append(float(info.loss))
                if i == 0:
                    first = time.perf_counter() - t
            stats[n]["warmup_s"] = time.perf_counter() - t
            stats[n]["first_step_s"] = first
            stats[n]["graphs"] = recompiles() - before
            log(f"  {n}: warm-up {stats[n]['warmup_s']:.1f}s (first step {first:.1f}s), "
                f"{stats[n]['graphs']} graph(s)")
        for r in range(args.rounds):
            for n, gen in gens.items():
                t = time.perf_counter()
                for _ in range(args.steps):
                    info = next(gen)
                    stats[n]["tokens"] += info.tokens
                    stats[n]["losses"].append(float(info.loss))
                stats[n]["seconds"] += time.perf_counter() - t
                stats[n]["steps"] += args.steps
            log(f"  round {r + 1}/{args.rounds}: " + ", ".join(
                f"{n} {stats[n]['tokens'] / stats[n]['seconds']:.0f} tok/s" for n in names))
        eager = stats[names[0]]
        for n in names:
            s = stats[n]
            step = s["seconds"] / s["steps"]
            row = {"tokens_per_second": round(s["tokens"] / s["seconds"], 1), "step_ms": round(1000 * step, 1),
                   "warmup_s": round(s["warmup_s"], 1), "first_step_s": round(s["first_step_s"], 2),
                   "graphs_compiled": s["graphs"], "final_loss": round(s["losses"][-1], 4)}
            if n != names[0]:
                e_step = eager["seconds"] / eager["steps"]
                row["speedup"] = round(e_step / step, 3)
                # The warm-up's cost beyond what eager spends on the same steps, and the steps of
                # the demo (~1,000) it takes to earn it back, if ever.
                extra = s["warmup_s"] - eager["warmup_s"]
                row["compile_overhead_s"] = round(extra, 1)
                saved = e_step - step
                row["break_even_steps"] = round(extra / saved) if saved > 0 else None
                row["demo_1000_steps_ratio"] = round(1000 * e_step / (1000 * step + max(extra, 0.0)), 3)
                # With dropout on, losses differ by the masks drawn; the trajectories should not.
                row["loss_mean_diff_vs_eager"] = round(
                    sum(a - b for a, b in zip(s["losses"], eager["losses"])) / len(s["losses"]), 4)
                if n.split("/")[1] in args.parity_modes.split(","):
                    log(f"  {n}: gradient parity on 3 batches (dropout off) ...")
                    row["parity"] = grad_parity(task=task, processor=processor, features=features, weights=weights,
                                                settings=settings, source=source, state=state,
                                                precision=precision, mode=n.split("/")[1])
            rows[n] = row
        del gens
    return {"part": "train", "batch_size": cfg.train.batch_size, "rows": rows}


# -- prediction -----------------------------------------------------------------------------------

def bench_predict(args) -> dict:
    from predict_speed import texts_for

    from runassist.predict import Predictor

    texts, _ = texts_for(args.n)
    reference = None
    rows = {}
    for precision in args.precisions:
        eager = Predictor.from_run(args.run, precision=precision, batch_size=64, threads=args.threads)
        preds = {f"{precision}/eager": eager}
        for mode in args.modes:
            twin = Predictor.from_run(args.run, precision=precision, batch_size=64, threads=args.threads)
            twin.model = compiled(twin.model, mode)
            preds[f"{precision}/{mode}"] = twin
        seconds = {n: 0.0 for n in preds}
        outputs = {n: [] for n in preds}
        warm = {}
        for n, p in preds.items():  # warm-up over a spread of lengths: compiles for each new shape
            before = recompiles()
            t = time.perf_counter()
            p.predict(texts[:args.warmup_texts])
            warm[n] = (time.perf_counter() - t, recompiles() - before)
            log(f"  {n}: warm-up {warm[n][0]:.1f}s on {args.warmup_texts} texts, {warm[n][1]} graph(s)")
        size = -(-len(texts) // args.rounds)
        for r in range(args.rounds):
            chunk = texts[r * size:(r + 1) * size]
            for n, p in preds.items():
                t = time.perf_counter()
                got = p.predict(chunk)
                seconds[n] += time.perf_counter() - t
                outputs[n] += [sorted((e["label"], e["start"], e["end"]) for e in o["entities"]) for o in got]
            log(f"  round {r + 1}/{args.rounds}: " + ", ".join(
                f"{n} {len(outputs[n]) / seconds[n]:.1f}/s" for n in preds))
        if reference is None and precision == "fp32":
            reference = outputs["fp32/eager"]
        base = f"{precision}/eager"
        for n in preds:
            row = {"texts_per_second": round(len(texts) / seconds[n], 1), "warmup_s": round(warm[n][0], 1),
                   "graphs_compiled": warm[n][1],
                   "identical_to_eager": round(sum(a == b for a, b in zip(outputs[n], outputs[base])) / len(texts), 4)}
            if n != base:
                row["speedup"] = round(seconds[base] / seconds[n], 3)
            row["_outputs"] = outputs[n]
            rows[n] = row
        del preds
    for n, row in rows.items():
        outs = row.pop("_outputs")
        if reference is not None:
            row["identical_to_fp32_eager"] = round(sum(a == b for a, b in zip(outs, reference)) / len(texts), 4)
    return {"part": "predict", "texts": len(texts), "run": str(args.run), "rows": rows}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=("train", "predict"))
    parser.add_argument("--precisions", default="bf16,fp32", help="comma-separated: bf16, fp32")
    parser.add_argument("--modes", default="compile,dynamic", help="besides eager: compile, dynamic")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10, help="train: steps per contestant per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=20, help="train: steps before timing (compiles happen here)")
    parser.add_argument("--parity-modes", default="dynamic",
                        help="train: the modes whose loss and gradients are checked against eager (each compiles "
                             "once more, dropout off); empty to skip")
    parser.add_argument("--run", type=Path, help="predict: a trained NER run")
    parser.add_argument("--n", type=int, default=1000, help="predict: texts")
    parser.add_argument("--warmup-texts", type=int, default=256, help="predict: texts before timing")
    parser.add_argument("--fresh-cache", action="store_true",
                        help="compile into an empty Inductor cache, so compile times are those of a first run")
    args = parser.parse_args(argv)
    args.precisions = [p for p in args.precisions.split(",") if p]
    args.modes = [m for m in args.modes.split(",") if m and m != "eager"]
    if bad := [m for m in args.modes if m not in MODES]:
        parser.error(f"--modes {bad}: choose from {', '.join(MODES[1:])}")
    if args.part == "predict" and args.run is None:
        parser.error("predict needs --run")
    if args.fresh_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    with contextlib.redirect_stdout(sys.stderr):
        result = bench_train(args) if args.part == "train" else bench_predict(args)
    result.update(threads=args.threads, torch=torch.__version__, fresh_cache=args.fresh_cache,
                  load_avg={"before": round(load, 2), "after": round(os.getloadavg()[0], 2)})
    print_table(result)
    print(json.dumps(result))
    return result


def print_table(r: dict) -> None:
    unit = "tokens/s" if r["part"] == "train" else "texts/s"
    print(f"{r['part']}: {r['threads']} thread(s), torch {r['torch']}, load avg {r['load_avg']['before']} -> "
          f"{r['load_avg']['after']}")
    for name, row in r["rows"].items():
        speed = row.get("tokens_per_second", row.get("texts_per_second"))
        extra = {k: v for k, v in row.items() if k not in ("tokens_per_second", "texts_per_second")}
        print(f"  {name:16} {speed:>9} {unit}  {json.dumps(extra)}")


if __name__ == "__main__":
    main()
