"""Batch prediction at growing input sizes: peak memory stays flat, speed stays that of the in-memory path.

    .venv/bin/python bench/predict_scale.py --tiny                    # the test suite's tiny BERT, 1k/10k/100k lines
    .venv/bin/python bench/predict_scale.py --run runs/<a NER run>    # a trained run (e.g. the demo's MiniLM)
    .venv/bin/python bench/predict_scale.py --minilm --sizes 1000,10000 --train-steps 20

Inputs are generated: 25 words a line, drawn from WNUT-16's vocabulary (seeded). For each size,
`runassist predict RUN lines.txt -o out.jsonl -q` runs in a subprocess under `/usr/bin/time -v`,
which gives its peak RSS; the in-memory path that `predict_file` replaced (read everything, predict
everything, build the whole text, write it) runs the same way for the sizes in --inmemory-sizes.
Throughput: both paths on the same --speed-n lines in this one process, in alternating rounds
(A B A B ...), so a load spike on the shared machine hits both alike. One thread (--threads).
Prints a table, then one JSON line (the last line of stdout).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DEMO, REPO, log  # noqa: I001  (sets the offline environment before torch is imported)

import torch  # noqa: E402

RUNASSIST = str(Path(sys.executable).with_name("runassist"))


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        found = re.search(r"Model name:\s*(.+)", out)
        return found.group(1).strip() if found else platform.processor()
    except (OSError, subprocess.CalledProcessError):
        return platform.processor()


def vocabulary() -> list[str]:
    from runassist.assets import read_alias

    return sorted({w for ex in read_alias("wnut16:train") for w in ex.tokens})


def write_lines(path: Path, n: int, words: list[str], seed: int = 0) -> Path:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(" ".join(rng.choice(words) for _ in range(25)) + "\n" for _ in range(n))
    return path


def tiny_run(out: Path) -> Path:
    """The test suite's tiny BERT (2 layers, hidden 32, built from a config) trained 30 steps on
    generated NER sentences (tests/serve_fixtures.py)."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import build_tiny_model_dir
    from serve_fixtures import train_tiny_run

    with contextlib.redirect_stdout(sys.stderr):
        return train_tiny_run(build_tiny_model_dir(out / "tiny-bert"), out / "tiny-run").run


def minilm_run(out: Path, steps: int, threads: int) -> Path:
    """The packaged demo (MiniLM on WNUT-16), trained only ``steps`` steps: its speed and memory are
    the full model's; its answers are not the trained demo's."""
    from runassist.tasks import load_config
    from runassist.train.run import train

    cfg = load_config(DEMO, [f"output.dir={out / 'runs'}", f"train.max_steps={steps}", f"train.threads={threads}",
                             "data.test=null"])
    with contextlib.redirect_stdout(sys.stderr):
        return train(cfg, progress=False).run


def peak_rss_mb(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of a command, from GNU time's `Maximum resident set size`."""
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *command], env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return int(found.group(1)) / 1024, wall


def in_memory(run: str, source: str, output: str, threads: int) -> None:
    """What `predict_file` did before it streamed, for plain text to JSONL: every line, example,
    prediction and output line held at once."""
    from runassist.atomic import atomic_write
    from runassist.data.io import split_lines
    from runassist.predict import Predictor

    predictor = Predictor.from_run(run, threads=threads)
    lines = [line for line in split_lines(Path(source).read_text(encoding="utf-8-sig")) if line.strip()]
    examples = predictor.examples(lines)
    predictions = predictor.predict_examples(examples)
    atomic_write(Path(output), "".join(json.dumps(predictor.task.to_json(e, p), ensure_ascii=False) + "\n"
                                       for e, p in zip(examples, predictions)))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--run", type=Path, help="a trained NER run")
    which.add_argument("--tiny", action="store_true", help="the tests' tiny BERT, trained 30 steps (the default)")
    which.add_argument("--minilm", action="store_true", help="the packaged MiniLM, trained --train-steps steps")
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--sizes", default="1000,10000,100000", help="lines per input, comma-separated")
    parser.add_argument("--inmemory-sizes", default="1000,10000", help="sizes the in-memory path is measured at")
    parser.add_argument("--speed-n", type=int, default=10000, help="lines of the throughput comparison")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the throughput comparison")
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the CPU is shared)")
    parser.add_argument("--out", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--_in-memory", nargs=3, dest="in_memory", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.in_memory:
        in_memory(*args.in_memory, threads=args.threads)
        return {}
    out = args.out or Path(tempfile.mkdtemp(prefix="predict-scale-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.run:
        run, model = args.run, f"run {args.run}"
    elif args.minilm:
        log(f"training MiniLM for {args.train_steps} steps under {out} ...")
        run, model = minilm_run(out, args.train_steps, args.threads), f"MiniLM-L6 (packaged), {args.train_steps} steps"
    else:
        log(f"training the tiny BERT under {out} ...")
        run, model = tiny_run(out), "tiny BERT (2 layers, hidden 32; the tests' model), 30 steps"
    cpu = cpu_model()
    log(f"cpu: {cpu}; threads: {args.threads}; model: {model}")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    words = vocabulary()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    memory: dict[str, dict[str, float]] = {}
    for n in sizes:
        source = write_lines(out / f"lines-{n}.txt", n, words)
        rss, wall = peak_rss_mb([RUNASSIST, "predict", str(run), str(source), "-o", str(out / f"stream-{n}.jsonl"),
                                 "-q", "--chunk-size", str(args.chunk_size)], env)
        memory[str(n)] = {"streaming_mb": round(rss, 1), "streaming_s": round(wall, 1)}
        log(f"{n:>7,} lines streaming: peak RSS {rss:,.0f} MB, {wall:.0f} s")
        if str(n) in args.inmemory_sizes.split(","):
            rss, wall = peak_rss_mb([sys.executable, __file__, "--_in-memory", str(run), str(source),
                                     str(out / f"memory-{n}.jsonl"), "--threads", str(args.threads)], env)
            memory[str(n)].update({"in_memory_mb": round(rss, 1), "in_memory_s": round(wall, 1)})
            same = (out / f"memory-{n}.jsonl").read_bytes() == (out / f"stream-{n}.jsonl").read_bytes()
            memory[str(n)]["identical_output"] = same
            log(f"{n:>7,} lines in memory: peak RSS {rss:,.0f} MB, {wall:.0f} s; same bytes: {same}")
    growth = None
    if "10000" in memory and "100000" in memory:
        growth = round(memory["100000"]["streaming_mb"] - memory["10000"]["streaming_mb"], 1)

    # Throughput, in this process: the model is loaded once and both paths share it.
    from runassist.data.io import split_lines
    from runassist.predict import Predictor, predict_file

    predictor = Predictor.from_run(run, threads=args.threads)
    source = write_lines(out / f"speed-{args.speed_n}.txt", args.speed_n, words, seed=1)
    seconds = {"streaming": 0.0, "in_memory": 0.0}
    predictor.predict(["warm up the model"] * 8)
    for r in range(args.rounds):
        for name in (("streaming", "in_memory") if r % 2 == 0 else ("in_memory", "streaming")):
            start = time.perf_counter()
            if name == "streaming":
                predict_file(predictor, str(source), str(out / "speed-stream.jsonl"), chunk_size=args.chunk_size)
            else:
                lines = [x for x in split_lines(source.read_text(encoding="utf-8-sig")) if x.strip()]
                examples = predictor.examples(lines)
                predictions = predictor.predict_examples(examples)
                (out / "speed-memory.jsonl").write_text("".join(
                    json.dumps(predictor.task.to_json(e, p), ensure_ascii=False) + "\n"
                    for e, p in zip(examples, predictions)), encoding="utf-8")
            seconds[name] += time.perf_counter() - start
            log(f"round {r + 1} {name}: {seconds[name]:.1f} s so far")
    rate = {k: round(args.speed_n * args.rounds / v, 1) for k, v in seconds.items()}
    ratio = round(rate["streaming"] / rate["in_memory"], 3)

    print(f"cpu: {cpu}; {args.threads} thread(s); model: {model}; chunk size {args.chunk_size}")
    print(f"{'lines':>8} {'streaming MB':>13} {'in-memory MB':>13}")
    for n, row in memory.items():
        print(f"{int(n):>8,} {row['streaming_mb']:>13,.0f} {row.get('in_memory_mb', float('nan')):>13,.0f}")
    if growth is not None:
        print(f"growth 10k -> 100k lines (streaming): {growth:+.1f} MB (target < 50)")
    print(f"items/s on {args.speed_n:,} lines: streaming {rate['streaming']:,.1f}, in memory {rate['in_memory']:,.1f} "
          f"(ratio {ratio}; target >= 0.9)")
    result = {"cpu": cpu, "threads": args.threads, "model": model, "chunk_size": args.chunk_size, "memory": memory,
              "growth_10k_100k_mb": growth, "items_per_s": rate, "speed_ratio": ratio}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
