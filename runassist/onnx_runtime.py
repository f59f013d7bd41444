"""Running an exported model: the ONNX Runtime session that stands in for the torch model, and
the int8 guard that re-runs close calls at full precision. ``export.py`` makes the files;
this module only reads them, so the predictor can use it without the exporter.

Layout in the run folder::

    onnx/model.onnx        fp32 graph, dynamic (batch, sequence) axes
    onnx/model.int8.onnx   with --quantize int8: the int8 file that passed parity
    onnx/parity.json       what was checked on which split, which file is active, the guard threshold
    onnx/rejected/         files that failed the parity check: kept for inspection, never loaded
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import torch

from runassist.atomic import read_json
from runassist.errors import RunassistError

FP32 = "model.onnx"
INT8 = "model.int8.onnx"
# ONNX Runtime's input type names -> the numpy dtype a feed must have.
_NUMPY_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
                "tensor(float16)": np.float16, "tensor(double)": np.float64, "tensor(bool)": np.bool_}


class OnnxModel:
    """An onnxruntime session that answers like a Hugging Face model to a task's ``forward``:
    ``model(**batch)`` has each graph output (``.logits``, ``.start_logits`` ...) as a torch tensor;
    ``eval()`` is a no-op; it lives on the CPU."""

    device = torch.device("cpu")
    training = False

    def __init__(self, path: str | Path, *, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        self.threads = max(1, threads or torch.get_num_threads())
        options = ort.SessionOptions()
        # The same thread count torch would use, so both backends are compared on equal terms
        # (and neither oversubscribes the cores other processes are busy on).
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.path), sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.input_types = {i.name: _NUMPY_TYPES.get(i.type, np.float32) for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    @classmethod
    def load(cls, run: str | Path, *, threads: int | None = None) -> "OnnxModel":
        """The run's active export: the int8 file when present (only accepted files stay in
        ``onnx/``), else the fp32 one."""
        folder = Path(run) / "onnx"
        for name in (INT8, FP32):
            if (folder / name).is_file():
                return cls(folder / name, threads=threads)
        failed = (folder / "rejected").is_dir()
        hint = " (the last export failed its parity check: see onnx/parity.json)" if failed else ""
        raise RunassistError(f"{run}: no ONNX export{hint}; run `runassist export {run}` first")

    def eval(self) -> "OnnxModel":
        return self

    def train(self, mode: bool = True) -> "OnnxModel":
        if mode:
            raise RunassistError("an ONNX model cannot be trained; use the torch backend")
        return self

    def __call__(self, **batch: torch.Tensor) -> SimpleNamespace:
        feed = graph_feed(self.path, self.input_names, self.input_types, batch)
        outputs = self.session.run(self.output_names, feed)
        return SimpleNamespace(**{name: torch.from_numpy(x) for name, x in zip(self.output_names, outputs)})


class Guard:
    """The fp32 twin of an int8 model and the margin below which its answers are re-run there
    (``runassist.export`` explains how the threshold is measured). Counts the features it saw and re-ran."""

    def __init__(self, fallback: OnnxModel, threshold: float):
        threshold = float(threshold)
        if not (math.isfinite(threshold) and threshold >= 0):
            raise RunassistError(f"int8 guard threshold {threshold}: expected a finite number >= 0; export again")
        self.fallback, self.threshold = fallback, threshold
        self.seen = self.rechecked = 0

    @classmethod
    def load(cls, run: str | Path, model: OnnxModel) -> "Guard | None":
        """The guard recorded by the export that made ``model`` active; None for an fp32 model."""
        if model.path.name != INT8:
            return None
        parity_path = Path(run) / "onnx" / "parity.json"
        guard = read_json(parity_path).get("guard") if parity_path.exists() else None
        if not guard or guard.get("threshold") is None:
            return None  # exported before guards existed: int8 answers as they are
        fp32 = model.path.with_name(FP32)
        if not fp32.is_file():
            raise RunassistError(f"{fp32}: missing; the int8 model's guard re-runs close calls with it. "
                                 f"Export again: runassist export {run} --quantize int8")
        return cls(OnnxModel(fp32, threads=model.threads), guard["threshold"])

    def count(self, seen: int, rechecked: int) -> None:
        self.seen += seen
        self.rechecked += rechecked

    def describe(self) -> dict[str, Any]:
        share = self.rechecked / self.seen if self.seen else None
        return {"threshold": self.threshold, "seen": self.seen, "rechecked": self.rechecked,
                "rechecked_share": None if share is None else round(share, 4)}


def graph_feed(path: Path, names: Sequence[str], types: dict[str, Any], batch: dict[str, torch.Tensor]) -> dict:
    """A batch as the numpy inputs an exported graph takes (ONNX Runtime's or OpenVINO's), in the
    graph's dtypes; a graph input the batch lacks is an error, except token_type_ids (zeros, as
    the torch model assumes)."""
    feed = {}
    for name in names:
        value = batch.get(name)
        if value is None:
            if name != "token_type_ids":
                raise RunassistError(f"{path.name}: the graph needs input '{name}'")
            value = torch.zeros_like(batch["input_ids"])
        feed[name] = value.detach().cpu().numpy().astype(types[name], copy=False)
    return feed
