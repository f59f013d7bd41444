"""Throughput and latency of `runassist serve` under 1, 8 and 32 concurrent clients.

    .venv/bin/python bench/serve.py                 # trains a tiny NER run into a temp folder first
    .venv/bin/python bench/serve.py --run runs/X    # or serves a run you have

Starts the real server as a subprocess on a free loopback port, sends a fixed number of
one-input requests at each concurrency, and prints one JSON line, then a table. The
micro-batcher should make 32 clients at least 3x faster than 1 (exit 1 if not).

The clients are a minimal HTTP/1.1 keep-alive client on asyncio, in one process: a
heavier client (threads with httpx) would compete with the server for the same cores
and measure itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["john smith visited london", "mary went to paris with john", "apple works in new york",
         "google said mary smith lives in london", "the movie was great and john loved it",
         "paris is a city on the river", "mary smith works at google and lives in new york city",
         "john went to new york"]


def tiny_run(folder: Path) -> Path:
    """A quick NER run on a 2-layer model with random weights (the tests' helpers)."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import build_tiny_model_dir, make_ner_sentences, ner_overrides, write_conll

    from runassist.tasks import load_config
    from runassist.train.run import train

    folder.mkdir(parents=True, exist_ok=True)
    files = {split: write_conll(folder / f"{split}.conll", make_ner_sentences(n, seed))
             for split, n, seed in (("train", 64, 0), ("dev", 16, 1), ("test", 16, 2))}
    model = build_tiny_model_dir(folder / "model")
    cfg = load_config(None, ner_overrides(files, model, folder / "runs", max_steps=30, lr="1e-2", warmup_ratio=0))
    return train(cfg, progress=False).run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- a small keep-alive HTTP client ------------------------------------------------------

class Connection:
    def __init__(self, port: int):
        self.port = port

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def drive(port: int, concurrency: int, total: int) -> tuple[float, list[float]]:
    """``total`` requests from ``concurrency`` clients, each with its own connection; returns
    (wall seconds, latencies in seconds)."""
    connections = [Connection(port) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in connections))
    bodies = [json.dumps({"inputs": [t]}).encode() for t in TEXTS]
    latencies: list[float] = []
    issued = 0

    async def client(conn: Connection, index: int) -> None:
        nonlocal issued
        while issued < total:
            issued += 1
            body = bodies[(issued + index) % len(bodies)]
            started = time.perf_counter()
            status, payload = await conn.post("/v1/predict", body)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {payload[:200]!r}")

    started = time.perf_counter()
    await asyncio.gather(*(client(c, i) for i, c in enumerate(connections)))
    wall = time.perf_counter() - started
    for c in connections:
        c.close()
    return wall, latencies


def batch_stats(url: str) -> tuple[float, float]:
    text = urllib.request.urlopen(f"{url}/metrics").read().decode()
    value = lambda name: float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))  # noqa: E731
    return value("runassist_batch_size_sum"), value("runassist_batch_size_count")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="run folder to serve (default: train a tiny one)")
    parser.add_argument("--requests", type=int, default=600, help="requests per concurrency level")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="the server's batching window")
    parser.add_argument("--backend", default="torch")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    os.environ.update({k: env[k] for k in ("OMP_NUM_THREADS", "TOKENIZERS_PARALLELISM", "HF_HUB_OFFLINE")})
    with tempfile.TemporaryDirectory(prefix="runassist-bench-") as tmp:
        run = args.run
        if run is None:
            import torch

            torch.set_num_threads(1)
            print("training a tiny NER run ...", file=sys.stderr)
            run = tiny_run(Path(tmp) / "tiny")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        runassist = str(Path(sys.executable).with_name("runassist"))
        log = open(Path(tmp) / "serve.log", "w")
        server = subprocess.Popen([runassist, "serve", str(run), "--port", str(port), "--backend", args.backend,
                                   "--max-wait-ms", str(args.max_wait_ms)], stdout=log, stderr=subprocess.STDOUT,
                                  env=env)
        try:
            deadline = time.monotonic() + 120
            while True:
                if server.poll() is not None or time.monotonic() > deadline:
                    print((Path(tmp) / "serve.log").read_text()[-3000:], file=sys.stderr)
                    return 2
                try:
                    urllib.request.urlopen(f"{url}/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            results = []
            for concurrency in levels:
                asyncio.run(drive(port, concurrency, 4 * concurrency))  # warm-up: connections, batch shapes
                before = batch_stats(url)
                wall, latencies = asyncio.run(drive(port, concurrency, args.requests))
                after = batch_stats(url)
                batches = after[1] - before[1]
                results.append({"concurrency": concurrency, "requests": len(latencies),
                                "requests_per_s": round(len(latencies) / wall, 1),
                                "p50_ms": round(percentile(latencies, 50) * 1000, 2),
                                "p99_ms": round(percentile(latencies, 99) * 1000, 2),
                                "mean_batch": round((after[0] - before[0]) / batches, 2) if batches else None})
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
            log.close()

    by_level = {r["concurrency"]: r for r in results}
    speedup = None
    if 1 in by_level and 32 in by_level:
        speedup = round(by_level[32]["requests_per_s"] / by_level[1]["requests_per_s"], 2)
    print(json.dumps({"bench": "serve", "run": str(run), "backend": args.backend, "max_wait_ms": args.max_wait_ms,
                      "cpus": os.cpu_count(), "results": results, "speedup_32_vs_1": speedup}))
    print(f"\n{'clients':>8} {'requests/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'mean batch':>11}")
    for r in results:
        print(f"{r['concurrency']:>8} {r['requests_per_s']:>11} {r['p50_ms']:>8} {r['p99_ms']:>8} "
              f"{r['mean_batch'] if r['mean_batch'] is not None else '-':>11}")
    if speedup is not None:
        verdict = "ok" if speedup >= 3 else "BELOW the 3x target"
        print(f"\nthroughput at 32 clients / at 1 client: {speedup}x ({verdict})")
        return 0 if speedup >= 3 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
