"""The keep-it-current loop on WNUT-16, as a user would run it (`make demo-lifecycle`).

1. A champion is trained on the first half of the WNUT-16 training tweets and registered.
2. The service runs on ``registry:wnut16@champion`` with a feedback store.
3. The second half of the training tweets arrives as traffic: each is predicted by the service,
   and a person's correction (here: the gold entities) comes back through ``POST /v1/feedback``.
4. ``runassist feedback export`` writes the corrections as CoNLL, 20% held out as a feedback test set.
5. ``runassist retrain ... --promote`` trains from the champion on the corrections with the first
   half replayed, and the gate decides; the running service follows the registry.

Prints both models' test F1 and the gate's decision, and leaves everything in one folder
(``--out``, default ``runs/keep-current``): the runs, the registry, the store, the gate's report.
Every step is a `runassist` command; this script only plays the users and the annotator.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
RUNASSIST = str(Path(sys.executable).with_name("runassist"))


def sh(*args: str, env: dict[str, str]) -> str:
    print("$ runassist " + " ".join(args), file=sys.stderr, flush=True)
    done = subprocess.run([RUNASSIST, *args], cwd=REPO, env=env, text=True, stdout=subprocess.PIPE)
    if done.returncode not in (0, 1):
        raise SystemExit(f"runassist {args[0]} failed ({done.returncode})")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "keep-current")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for training (default: free cores)")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RUNASSIST_REGISTRY": str(out / "registry"), "HF_HUB_OFFLINE": "1"}
    threads = [f"train.threads={args.threads}"] if args.threads else []

    # the two halves of the training tweets (a fixed split)
    sys.path.insert(0, str(REPO))
    from runassist.data.tags import char_entities
    from runassist.tasks import load_config, make_task

    task = make_task(load_config(REPO / "examples" / "ner-wnut16.yaml"))
    train = task.read("wnut16:train")
    half = len(train) // 2
    first, second = train[:half], train[half:]
    _, text = task.dump_examples(first)
    (out / "first-half.conll").write_text(text, encoding="utf-8")

    # 1. the champion
    run = sh("train", "examples/ner-wnut16.yaml", f"data.train={out / 'first-half.conll'}", f"output.dir={out / 'runs'}",
             "output.name=champion", *threads, "--quiet", env=env).strip().splitlines()[-1]
    sh("registry", "add", "wnut16", run, "--alias", "champion", env=env)

    # 2. the service
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([RUNASSIST, "serve", "registry:wnut16@champion", "--port", str(port)], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        # 3. traffic and corrections
        with httpx.Client(base_url=url, timeout=120) as http:
            for start in range(0, len(second), 32):
                chunk = [char_entities(ex.tokens, ex.tags) for ex in second[start:start + 32]]
                preds = http.post("/v1/predict", json={"inputs": [t for t, _ in chunk]}).json()["predictions"]
                fixes = [{"id": p["id"], "output": {"entities": ents}} for p, (_, ents) in zip(preds, chunk)]
                http.post("/v1/feedback", json={"corrections": fixes}).raise_for_status()
        # 4. export
        manifest = json.loads(sh("feedback", "export", "registry:wnut16@champion", "-o", str(out / "feedback"), env=env))
        # 5. retrain and gate
        print(sh("retrain", "registry:wnut16@champion", "--data", manifest["files"]["train"]["path"],
                 "--feedback-test", manifest["files"]["test"]["path"], "--promote", f"output.dir={out / 'runs'}",
                 *threads, env=env))
        time.sleep(3)
        model = httpx.get(url + "/v1/model", timeout=10).json()
    finally:
        server.terminate()
        server.wait(timeout=60)
    history = json.loads(sh("registry", "history", "wnut16", "--json", env=env))
    decision = history[-1]
    champion_test = json.loads((Path(run) / "eval" / "test.json").read_text())["f1"]
    new_run = next(Path(e["run"]) for e in reversed(history) if e["event"] == "add")
    new_test = json.loads((new_run / "eval" / "test.json").read_text())["f1"]
    result = {"champion_run": run, "champion_test_f1": champion_test, "new_run": str(new_run), "new_test_f1": new_test,
              "first_half": len(first), "corrections": manifest["corrections"],
              "feedback_train": manifest["files"]["train"]["examples"],
              "feedback_test": manifest["files"]["test"]["examples"],
              "gate": decision["event"], "gate_passed": (decision.get("details") or {}).get("passed"),
              "gate_reasons": (decision.get("details") or {}).get("reasons"),
              "gate_report": (decision.get("details") or {}).get("report"),
              "service_now_serves": model.get("registry")}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
