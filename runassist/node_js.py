"""Running ``runassist/js/ner_with_tokenizer.js`` from Python: for the test and the benchmark that
check the tokenizer-inclusive ONNX file from Node.js, as a JavaScript service would run it.

onnxruntime-node comes from npm into a cache folder (``~/.cache/runassist/node`` or
``$RUNASSIST_NODE_DIR``), once; its CUDA download is skipped (the CPU binaries ship inside it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runassist.errors import RunassistError

ONNXRUNTIME_NODE = "onnxruntime-node@1.30.0"
SCRIPT = Path(__file__).parent / "js" / "ner_with_tokenizer.js"


def node_dir() -> Path:
    return Path(os.environ.get("RUNASSIST_NODE_DIR") or Path.home() / ".cache" / "runassist" / "node")


def ensure_onnxruntime_node() -> Path:
    """The node_modules folder holding onnxruntime-node; RunassistError says why it cannot be had."""
    if not shutil.which("node") or not shutil.which("npm"):
        raise RunassistError("node and npm are needed (apt-get install nodejs npm)")
    folder = node_dir()
    modules = folder / "node_modules"
    if (modules / "onnxruntime-node" / "package.json").is_file():
        return modules
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ONNXRUNTIME_NODE_INSTALL_CUDA": "skip", "ONNXRUNTIME_NODE_INSTALL": "skip"}
    done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(folder), ONNXRUNTIME_NODE],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    if done.returncode != 0 or not (modules / "onnxruntime-node").is_dir():
        raise RunassistError(f"npm install {ONNXRUNTIME_NODE} failed: {(done.stderr or done.stdout)[-500:]}")
    return modules


def node_entities(model: str | Path, texts: Sequence[str], *, threads: int = 1,
                  timeout: float = 3600) -> tuple[list[list[dict[str, Any]]], dict[str, Any]]:
    """Each text's entities from Node.js, and the script's timing line (texts, seconds, texts/s)."""
    modules = ensure_onnxruntime_node()
    feed = "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in texts)
    done = subprocess.run(["node", str(SCRIPT), str(model), "--threads", str(threads)], input=feed,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "NODE_PATH": str(modules)}, check=False)
    if done.returncode != 0:
        raise RunassistError(f"node {SCRIPT.name} failed: {done.stderr[-1000:]}")
    rows = [json.loads(line)["entities"] for line in done.stdout.splitlines() if line.strip()]
    timing = json.loads(done.stderr.strip().splitlines()[-1])
    if len(rows) != len(texts):
        raise RunassistError(f"node {SCRIPT.name}: {len(rows)} answers for {len(texts)} texts")
    return rows, timing
