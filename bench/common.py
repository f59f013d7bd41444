"""What every benchmark script shares: offline settings, the demo config, logging to stderr.

Scripts run as `python bench/NAME.py`, so this folder is on sys.path and `from common import ...` works.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "ner-wnut16.yaml"


def log(msg: str) -> None:
    """Progress goes to stderr; stdout carries the table and the final JSON line."""
    print(msg, file=sys.stderr, flush=True)


def env_cpu(facts: dict) -> str:
    """The CPU the figures came from (``runassist.env.collect()``): its model, usable cores, and
    whether it has fast bf16."""
    cpu = facts.get("cpu", {})
    flags = [name for name, present in cpu.get("flags_bf16", {}).items() if present]
    return f"{cpu.get('model', '?')}, {cpu.get('cores_usable', '?')} usable cores, bf16 fast: " \
           f"{cpu.get('bf16_fast')} ({', '.join(flags) or 'no bf16 flags'})"
