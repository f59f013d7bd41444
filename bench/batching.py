"""Which training batches to use: each ``train.batching`` trained on the same seeds, one config.

    .venv/bin/python bench/batching.py examples/classify-rotten-tomatoes.yaml --batchings random,grouped \\
        --seeds 1,2,3,4,5,6,7,8 --set data.train_fraction=0.25

Every variant trains on every seed in this one process (variants alternate inside a seed, so a
load spike hits both); prints per-seed test headline scores, their mean and the mean paired
difference against the first variant with its standard error, tokens/s and padding, and the CPU,
then one JSON line (the last line of stdout). bench/train_speed.py does the same for the NER demo
against the Hugging Face Trainer.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

from common import env_cpu, log  # (common sets the offline environment first)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--batchings", default="random,grouped")
    parser.add_argument("--seeds", default="1,2,3,4,5,6,7,8")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], help="a config override, key=value (repeatable)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import torch

    from runassist import env
    from runassist.tasks import load_config
    from runassist.train.run import train

    torch.set_num_threads(args.threads)
    facts = env.collect(check_hub=False)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-batching-"))
    batchings, seeds = args.batchings.split(","), [int(s) for s in args.seeds.split(",")]
    results: dict[str, list[dict]] = {b: [] for b in batchings}
    headline = None
    for seed in seeds:
        for b in batchings:
            cfg = load_config(args.config, [*args.set, f"train.batching={b}", f"train.seed={seed}",
                                            f"train.threads={args.threads}", f"output.dir={out / 'runs'}"])
            start = time.perf_counter()
            s = train(cfg, progress=False).summary
            headline = s["best"]["metric"]
            score = s["test"][headline]
            results[b].append({"seed": seed, "test": score, "tokens": s["tokens"], "train_seconds": s["train_seconds"],
                               "padding_fraction": s["padding_fraction"], "mode": s["choices"]["batching"]["mode"],
                               "wall_seconds": round(time.perf_counter() - start, 1)})
            log(f"seed {seed} {b} ({s['choices']['batching']['mode']}): test {headline} {score:.4f}, "
                f"{s['tokens_per_second']} tokens/s, padding {s['padding_fraction']}")
    base = results[batchings[0]]
    rows = {}
    for b, rs in results.items():
        diffs = [r["test"] - r0["test"] for r, r0 in zip(rs, base)]
        rows[b] = {"mode": rs[0]["mode"], "test_mean": round(statistics.fmean(r["test"] for r in rs), 4),
                   "test_per_seed": [round(r["test"], 4) for r in rs],
                   "diff_vs_first": round(statistics.fmean(diffs), 4),
                   "diff_sem": round(statistics.stdev(diffs) / math.sqrt(len(diffs)), 4) if len(diffs) > 1 else None,
                   "tokens_per_second": round(sum(r["tokens"] for r in rs) / sum(r["train_seconds"] for r in rs), 1),
                   "padding_fraction": rs[-1]["padding_fraction"]}
    result = {"bench": "batching", "config": str(args.config), "overrides": args.set, "seeds": seeds,
              "threads": args.threads, "headline": headline, "variants": rows,
              "cpu": env_cpu(facts)}
    print(f"{args.config} {' '.join(args.set)}; seeds {seeds}; {args.threads} thread(s); {result['cpu']}")
    for b, r in rows.items():
        print(f"{b:>8} ({r['mode']}): test {headline} {r['test_mean']} {r['test_per_seed']}, vs {batchings[0]} "
              f"{r['diff_vs_first']:+.4f} +/- {r['diff_sem']}; {r['tokens_per_second']} tokens/s, "
              f"padding {r['padding_fraction']}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
