"""Prediction under ``accelerate launch``: several GPUs (or processes) of one box, one output file.

    accelerate launch --num_processes 4 -m runassist predict RUN corpus.txt -o out.jsonl

Every process reads the input a chunk at a time (``predict_input.read_chunks``) and predicts the
chunks whose index is its rank modulo the number of processes, on its own device, into
``OUT.part-RANK`` (with ``OUT.part-RANK.json``: each chunk's byte count). After a barrier the main
process joins the parts chunk by chunk in input order into ``OUT`` (atomically) and removes them:
the same bytes as one process writes. ``predict`` takes this path by itself when it runs in a
launched group (``WORLD_SIZE`` > 1), so no two processes ever write ``OUT`` at once.

The process group and the devices come from ``train.engine`` (the one module that touches
Accelerate). Not resumable (``--resume`` is the local engine's); every process parses the whole
input, which costs little beside the model on a GPU. For several machines, use ``--engine ray``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from runassist.atomic import atomic_open, read_json, write_json
from runassist.errors import RunassistError
from runassist.predict_input import DEFAULT_CHUNK_SIZE, input_kind, read_chunks
from runassist.predict_output import chunk_text, empty_text, output_format


def launched() -> bool:
    """True inside a group started by ``accelerate launch`` or ``torchrun`` with more than one process."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def predict_launched(predictor: Any, source: str, output: str | None, *, fmt: str = "auto",
                     chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """This process's share of ``source`` predicted into a part file; the main process joins the parts
    into ``output``. Returns the number of items in ``output`` (on every process)."""
    from runassist.train.engine import Engine

    if output in (None, "-"):
        raise RunassistError("under accelerate launch, give an output file with -o: the processes' parts are "
                             "joined into it")
    if source == "-":
        raise RunassistError("under accelerate launch, give an input file: every process reads it")
    # Only its process group and device: the predictor keeps its own precision (autocast).
    engine = Engine(precision="fp32", bf16_fast_cpu=False)
    if engine.device.type != "cpu" and hasattr(predictor.model, "to"):
        predictor.model.to(engine.device)
    task = predictor.task
    kind = input_kind(source, task)
    fmt = output_format(task, kind, fmt)
    out = Path(output)
    part = _part(out, engine.rank)
    sizes, items = [], 0
    with open(part, "wb") as handle:
        for chunk in read_chunks(task, source, chunk_size=chunk_size, kind=kind):
            if chunk.index % engine.world != engine.rank:
                continue
            data = chunk_text(task, fmt, chunk, predictor.predict_examples(chunk.examples)).encode("utf-8")
            handle.write(data)
            sizes.append(len(data))
            items += len(chunk.examples)
    write_json(_sizes_path(part), {"sizes": sizes, "items": items})
    engine.wait()
    total = sum(read_json(_sizes_path(_part(out, rank)))["items"] for rank in range(engine.world))
    engine.wait()  # every process has read the totals before the main one removes the parts
    if engine.is_main:
        _join(out, engine.world, empty_text(task, fmt))
    engine.wait()  # the others return once the file is whole
    return int(total)


def _part(out: Path, rank: int) -> Path:
    return out.with_name(f"{out.name}.part-{rank}")


def _sizes_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _join(out: Path, world: int, empty: str) -> None:
    parts = [_part(out, rank) for rank in range(world)]
    sizes = [read_json(_sizes_path(p))["sizes"] for p in parts]
    with contextlib.ExitStack() as stack:
        handles = [stack.enter_context(open(p, "rb")) for p in parts]
        with atomic_open(out, "wb") as target:
            if not any(sizes):
                target.write(empty.encode("utf-8"))
            for index in range(sum(len(s) for s in sizes)):  # chunk i is in part i % world, its (i // world)-th
                rank = index % world
                remaining = sizes[rank][index // world]
                while remaining:  # copied in pieces: a chunk's text is never held whole here
                    piece = handles[rank].read(min(remaining, 1 << 20))
                    if not piece:
                        raise RunassistError(f"{parts[rank]}: shorter than its sizes say")
                    target.write(piece)
                    remaining -= len(piece)
    for p in parts:
        p.unlink(missing_ok=True)
        _sizes_path(p).unlink(missing_ok=True)
