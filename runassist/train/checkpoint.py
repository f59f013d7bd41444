"""Checkpoints that resume exactly, written so that a kill at any moment leaves the last good one.

``checkpoints/last/`` holds: ``model.safetensors`` (every parameter and buffer of the training
model, adapters included), ``optimizer.pt`` and ``scheduler.pt`` (tensors and numbers only,
read back with ``weights_only=True``), ``rng.pt`` (torch CPU/CUDA generator states) and
``state.json`` (position in the data, best value so far, patience, task extras).
A new checkpoint is written into ``.last.tmp`` and swapped in with renames.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from runassist.atomic import find_folder, swap_folder
from runassist.train.loop import Position


def rng_state() -> dict[str, Any]:
    """Every generator training draws from (dropout, shuffles), as of now."""
    rng: dict[str, Any] = {"torch": torch.get_rng_state(), "python": _jsonable(random.getstate()),
                           "numpy": _numpy_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def save(folder: Path, *, model: torch.nn.Module, optimizer, scheduler, position: Position,
         state: dict[str, Any], rng: dict[str, Any] | None = None,
         best: dict[str, torch.Tensor] | None = None) -> None:
    """``rng``: the generators as of ``position`` (taken at the step boundary; an interrupt may
    arrive mid-step, after dropout has drawn). ``best``: the best weights so far, in the training
    model's own layout (adapters included), so a resume keeps the right model/."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    if best is not None:
        save_file(best, str(tmp / "best.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    rng = rng or rng_state()
    torch.save({k: rng[k] for k in ("torch", "cuda") if k in rng}, tmp / "rng.pt")
    payload = {"position": asdict(position), **state, "python_rng": rng["python"], "numpy_rng": rng["numpy"]}
    (tmp / "state.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    # A crash between the renames leaves either the old or the new checkpoint complete
    # under one of the names; find() checks both.
    swap_folder(tmp, folder)


def find(folder: Path) -> Path | None:
    return find_folder(folder, "state.json")


def load(folder: Path, *, model: torch.nn.Module, optimizer, scheduler) -> tuple[Position, dict[str, Any]]:
    load_model(model, str(folder / "model.safetensors"))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    rng = torch.load(folder / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    random.setstate(_tuples(state.pop("python_rng")))
    np.random.set_state(_numpy_restore(state.pop("numpy_rng")))
    best = folder / "best.safetensors"
    state["best_state"] = load_file(best) if best.exists() else None
    return Position(**state.pop("position")), state


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _numpy_state() -> list:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _numpy_restore(state: list) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached
